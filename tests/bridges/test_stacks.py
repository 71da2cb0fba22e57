"""bridges/stacks.py: real stacks of real threads (sys._current_frames) -> the entity and kind."""
from __future__ import annotations

import importlib.util
import socket
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from gyroscope.bridges.events import EntityKind, EventKind, WaitKind
from gyroscope.bridges.stacks import Frame, classify, wait_kind_from_text

FIXTURE = textwrap.dedent('''\
    import queue
    import selectors
    import threading
    import time

    lock = threading.Lock()
    rlock = threading.RLock()
    cond = threading.Condition()
    event = threading.Event()
    q = queue.Queue()
    flag = [True]


    def take_lock():
        with lock:
            return 1


    def acquire_explicitly():
        lock.acquire()
        lock.release()


    def nap():
        time.sleep(30)


    class Spinner:
        def spin(self):
            n = 0
            while flag[0]:
                n += 1
            return n

        def straight(self):
            n = 0
            n += 1
            return n


    def cond_wait():
        with cond:
            cond.wait(30)


    def event_wait():
        event.wait(30)


    def queue_get():
        return q.get(timeout=30)


    def join_other(t):
        t.join()


    def recv(sock):
        return sock.recv(10)


    def select_wait(sel):
        return sel.select(30)


    def outer():
        def inner():
            with rlock:
                pass
        inner()
    ''')


@pytest.fixture()
def fx(tmp_path: Path):
    path = tmp_path / "stacks_fixture.py"
    path.write_text(FIXTURE)
    spec = importlib.util.spec_from_file_location("stacks_fixture", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.PATH = str(path)
    mod.is_own = lambda f: f == str(path)
    yield mod
    mod.flag[0] = False
    mod.event.set()
    mod.q.put(None)
    with mod.cond:
        mod.cond.notify_all()


def line_of(mod, text: str) -> int:
    return next(i for i, ln in enumerate(Path(mod.PATH).read_text().splitlines(), 1) if text in ln)


def start(target, *args) -> threading.Thread:
    t = threading.Thread(target=target, args=args, daemon=True)
    t.start()
    return t


def frames_of(frame, limit: int = 256) -> list[Frame]:
    """A live frame chain (from sys._current_frames()) as Frames, innermost-first."""
    out: list[Frame] = []
    while frame is not None and len(out) < limit:
        code = frame.f_code
        out.append(Frame(code.co_filename, code.co_qualname, frame.f_lineno or code.co_firstlineno,
                         code.co_firstlineno))
        frame = frame.f_back
    return out


def stack_when(t: threading.Thread, ready, timeout: float = 10.0) -> list[Frame]:
    """The thread's stack (innermost-first) once `ready(frames)` holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        frame = sys._current_frames().get(t.ident)
        if frame is not None:
            frames = frames_of(frame)
            if ready(frames):
                return frames
        time.sleep(0.005)
    raise AssertionError(f"thread never reached the expected state: {frames_of(sys._current_frames().get(t.ident))}")


def leaf_at(mod, line: int):
    return lambda frames: frames[0].file == mod.PATH and frames[0].line == line


def own_at(mod, line: int, *leaf_functions: str):
    return lambda frames: (frames[0].function in leaf_functions
                           and any(f.file == mod.PATH and f.line == line for f in frames))


def test_thread_blocked_on_a_held_lock(fx):
    line = line_of(fx, "with lock:")
    with fx.lock:
        t = start(fx.take_lock)
        frames = stack_when(t, leaf_at(fx, line))
        ent, kind = classify(frames, idle=True, gil=False, is_own_code=fx.is_own)
    t.join()
    assert kind == EventKind.SAMPLE_WAIT
    assert (ent.kind, ent.function, ent.line, ent.detail) == (EntityKind.LOCK, "take_lock", line, WaitKind.LOCK)
    assert ent.file == fx.PATH


def test_explicit_acquire_and_nested_rlock(fx):
    line = line_of(fx, "lock.acquire()")
    with fx.lock:
        t = start(fx.acquire_explicitly)
        frames = stack_when(t, leaf_at(fx, line))
        ent, _ = classify(frames, idle=True, gil=False, is_own_code=fx.is_own)
    t.join()
    assert (ent.kind, ent.function, ent.line, ent.detail) == (EntityKind.LOCK, "acquire_explicitly", line, "lock")
    line = line_of(fx, "with rlock:")
    with fx.rlock:
        t = start(fx.outer)
        frames = stack_when(t, leaf_at(fx, line))
        ent, _ = classify(frames, idle=True, gil=False, is_own_code=fx.is_own)
    t.join()
    assert (ent.kind, ent.function, ent.line) == (EntityKind.LOCK, "outer.<locals>.inner", line)


def test_thread_in_time_sleep(fx):
    line = line_of(fx, "time.sleep(30)")
    t = start(fx.nap)
    frames = stack_when(t, leaf_at(fx, line))
    ent, kind = classify(frames, idle=True, gil=False, is_own_code=fx.is_own)
    assert kind == EventKind.SAMPLE_WAIT
    assert (ent.kind, ent.function, ent.line, ent.detail) == (EntityKind.WAIT, "nap", line, WaitKind.SLEEP)


def test_spinning_thread_is_a_loop_with_its_method_qualname(fx):
    header = line_of(fx, "while flag[0]:")
    t = start(fx.Spinner().spin)
    frames = stack_when(t, lambda fr: fr[0].file == fx.PATH and fr[0].function == "Spinner.spin"
                        and fr[0].line in (header, header + 1))
    ent, kind = classify(frames, idle=False, gil=True, is_own_code=fx.is_own)
    assert kind == EventKind.SAMPLE_RUN
    assert (ent.kind, ent.function, ent.line, ent.detail) == (EntityKind.LOOP, "Spinner.spin", header, "")
    # runnable without the GIL: same region, SAMPLE_GIL; unknown GIL state counts as running
    assert classify(frames, idle=False, gil=False, is_own_code=fx.is_own) == (ent, EventKind.SAMPLE_GIL)
    assert classify(frames, idle=False, gil=None, is_own_code=fx.is_own) == (ent, EventKind.SAMPLE_RUN)
    # a sampler that only knows co_name gets the qualname from the code map
    bare = [Frame(f.file, f.function.rsplit(".", 1)[-1], f.line) for f in frames]
    assert classify(bare, idle=False, gil=True, is_own_code=fx.is_own) == (ent, EventKind.SAMPLE_RUN)
    fx.flag[0] = False
    t.join()


def test_running_outside_a_loop_is_the_function(fx):
    def_line = line_of(fx, "def straight(self):")
    frames = [Frame(fx.PATH, "Spinner.straight", def_line + 2, def_line)]
    ent, kind = classify(frames, idle=False, gil=True, is_own_code=fx.is_own)
    assert (ent.kind, ent.function, ent.line, kind) == (EntityKind.FUNCTION, "Spinner.straight", def_line,
                                                       EventKind.SAMPLE_RUN)


def test_condition_wait(fx):
    line = line_of(fx, "cond.wait(30)")
    t = start(fx.cond_wait)
    frames = stack_when(t, own_at(fx, line, "Condition.wait"))
    ent, _ = classify(frames, idle=True, gil=False, is_own_code=fx.is_own)
    assert (ent.kind, ent.function, ent.line, ent.detail) == (EntityKind.LOCK, "cond_wait", line, "condition")


def test_event_queue_join_waits(fx):
    line = line_of(fx, "event.wait(30)")
    waiter = start(fx.event_wait)
    frames = stack_when(waiter, own_at(fx, line, "Condition.wait"))
    ent, _ = classify(frames, idle=True, gil=False, is_own_code=fx.is_own)
    # Event.wait calls Condition.wait: the outermost known library frame decides
    assert (ent.kind, ent.function, ent.line, ent.detail) == (EntityKind.WAIT, "event_wait", line, "event")

    line = line_of(fx, "q.get(timeout=30)")
    t = start(fx.queue_get)
    frames = stack_when(t, own_at(fx, line, "Condition.wait"))
    ent, _ = classify(frames, idle=True, gil=False, is_own_code=fx.is_own)
    assert (ent.kind, ent.function, ent.line, ent.detail) == (EntityKind.WAIT, "queue_get", line, "queue")

    line = line_of(fx, "t.join()")
    j = start(fx.join_other, waiter)
    # 3.12 blocks in Thread._wait_for_tstate_lock; 3.13 in a C call made by Thread.join
    frames = stack_when(j, own_at(fx, line, "Thread._wait_for_tstate_lock", "Thread.join"))
    ent, _ = classify(frames, idle=True, gil=False, is_own_code=fx.is_own)
    assert (ent.kind, ent.function, ent.line, ent.detail) == (EntityKind.WAIT, "join_other", line, "join")


def test_socket_and_select_waits(fx):
    import selectors
    a, b = socket.socketpair()
    sel = selectors.DefaultSelector()
    try:
        line = line_of(fx, "sock.recv(10)")
        t = start(fx.recv, a)
        frames = stack_when(t, leaf_at(fx, line))
        ent, _ = classify(frames, idle=True, gil=False, is_own_code=fx.is_own)
        assert (ent.kind, ent.function, ent.line, ent.detail) == (EntityKind.WAIT, "recv", line, "socket")

        c, d = socket.socketpair()
        sel.register(c, selectors.EVENT_READ)
        line = line_of(fx, "sel.select(30)")
        t2 = start(fx.select_wait, sel)
        frames = stack_when(t2, own_at(fx, line, "EpollSelector.select"))
        ent, _ = classify(frames, idle=True, gil=False, is_own_code=fx.is_own)
        assert (ent.kind, ent.function, ent.line, ent.detail) == (EntityKind.WAIT, "select_wait", line, "select")
        b.send(b"x")
        d.send(b"x")
        t.join(5)
        t2.join(5)
        c.close()
        d.close()
    finally:
        a.close()
        b.close()
        sel.close()


def test_no_frame_of_the_program_is_none(fx):
    t = start(time.sleep, 0.5)
    frames = stack_when(t, lambda fr: fr[0].function == "Thread.run")
    assert classify(frames, idle=True, gil=False, is_own_code=fx.is_own) is None
    assert classify([], idle=False, gil=True, is_own_code=fx.is_own) is None


def test_innermost_own_frame_is_charged(fx):
    """Library frames below (callers) and above (callees) are skipped: the program's innermost frame wins."""
    line = line_of(fx, "cond.wait(30)")
    lib = "/usr/lib/python3.12/threading.py"
    frames = [Frame(lib, "Condition.wait", 355), Frame(fx.PATH, "cond_wait", line), Frame(lib, "Thread.run", 1010)]
    ent, _ = classify(frames, idle=True, gil=False, is_own_code=fx.is_own)
    assert (ent.function, ent.line, ent.detail) == ("cond_wait", line, "condition")


@pytest.mark.parametrize("text, kind", [
    ("with counter_lock:", "lock"),
    ("async with sem:", "lock"),
    ("lock.acquire()", "lock"),
    ("if not self._sem.acquire(timeout=1):", "semaphore"),
    ("my_rlock.acquire()", "rlock"),
    ("time.sleep(0.01)", "sleep"),
    ("await asyncio.sleep(1)", "sleep"),
    ("while data := conn.recv(64):", "socket"),
    ("conn, _ = sock.accept()", "socket"),
    ("with socket.create_connection((host, port)) as c:", "socket"),
    ("c.sendall(data)", "socket"),
    ("ready = select.select(r, w, x, 1)", "select"),
    ("worker.join()", "join"),
    ("', '.join(names)", "other"),
    ("self.cond.wait()", "condition"),
    ("cv.wait_for(pred)", "condition"),
    ("done.wait(5)", "event"),
    ("item = jobs.get()", "queue"),
    ("x = compute()", "other"),
])
def test_wait_kind_from_text(text, kind):
    assert wait_kind_from_text(text) == kind


def test_event_loop_bookkeeping_is_not_the_programs_work(fx):
    """A running stack that went through asyncio's event loop with no program frame above it."""
    import asyncio.base_events
    import asyncio.events
    import asyncio.runners
    be, ev, rn = asyncio.base_events.__file__, asyncio.events.__file__, asyncio.runners.__file__
    main = Frame(fx.PATH, "<module>", 3)
    loop_only = [Frame(be, "BaseEventLoop._run_once", 1900), Frame(be, "BaseEventLoop.run_forever", 600),
                 Frame(be, "BaseEventLoop.run_until_complete", 650), Frame(rn, "Runner.run", 118), main]
    assert classify(loop_only, idle=False, gil=True, is_own_code=fx.is_own) is None
    # bare co_names (an old sampler) are resolved through the code map
    bare = [Frame(f.file, f.function.rsplit(".", 1)[-1], f.line) for f in loop_only[:-1]] + [main]
    run_once = asyncio.base_events.BaseEventLoop._run_once.__code__
    bare[0] = Frame(be, "_run_once", run_once.co_firstlineno + 5)
    assert classify(bare[:1] + [main], idle=False, gil=True, is_own_code=fx.is_own) is None
    # the program's coroutine above the loop is charged as usual
    coro = Frame(fx.PATH, "Spinner.straight", line_of(fx, "n += 1"))
    ent, kind = classify([coro, Frame(ev, "Handle._run", 84)] + loop_only, idle=False, gil=True,
                         is_own_code=fx.is_own)
    assert (ent.function, kind) == ("Spinner.straight", EventKind.SAMPLE_RUN)
    # idle in the loop: the event loop waits in select at the program's call site
    sel = Frame("/usr/lib/python3.12/selectors.py", "EpollSelector.select", 468)
    ent, kind = classify([sel] + loop_only, idle=True, gil=False, is_own_code=fx.is_own)
    assert (ent.kind, ent.detail, ent.line, kind) == (EntityKind.WAIT, "select", 3, EventKind.SAMPLE_WAIT)


LIBRARY = textwrap.dedent('''\
    def tokens(text):
        out = []
        for ch in text:
            out.append(ch.upper())
        return out


    def thin(text):
        return text.upper()
''')


def test_library_loop_is_where_the_time_is(fx, tmp_path):
    """A running stack whose leaf is library code: the innermost library frame in a loop is the
    library's loop; a thin library wrapper (no loop) or a leaf in the program's own code is None."""
    from gyroscope.bridges.stacks import library_loop
    lib = tmp_path / "site-packages" / "somelib.py"
    lib.parent.mkdir()
    lib.write_text(LIBRARY)
    own_line = line_of(fx, "cond.wait(30)")
    own = Frame(fx.PATH, "cond_wait", own_line)
    in_loop = Frame(str(lib), "tokens", 4)           # out.append(...) inside the for loop
    ent = library_loop([Frame("<builtin>", "list.append", 0), in_loop, own], fx.is_own)
    assert ent is not None and (ent.kind, ent.file, ent.function, ent.line) == (EntityKind.LOOP, str(lib), "tokens", 3)
    assert library_loop([Frame(str(lib), "thin", 10), own], fx.is_own) is None
    assert library_loop([own, in_loop], fx.is_own) is None


def test_stack_mender_completes_a_generator_stack_cut_short():
    """py-spy --nonblocking sees a generator's frame alone when it reads as the generator yields:
    the stack gets the callers that frame had in the thread's latest whole stack."""
    from gyroscope.bridges.stacks import StackMender
    gen, caller, main = Frame("a.py", "numbers", 34), Frame("a.py", "over_gen", 40), Frame("a.py", "<module>", 60)
    mender = StackMender()
    assert mender.mend(1, (Frame("a.py", "numbers", 35),)) == (Frame("a.py", "numbers", 35),)   # nothing seen yet
    whole = (Frame("a.py", "numbers", 35), caller, main)
    assert mender.mend(1, whole) == whole
    assert mender.mend(1, (gen,)) == (gen, caller, main)
    assert mender.mend(2, (gen,)) == (gen,)                          # another thread's stacks are its own
    assert mender.mend(1, (Frame("b.py", "other", 3),)) == (Frame("b.py", "other", 3),)   # no stack holds it
    boot = (Frame("t.py", "work", 5), Frame("/usr/lib/python3.13/threading.py", "run", 1010),
            Frame("/usr/lib/python3.13/threading.py", "_bootstrap", 1032))
    assert mender.mend(3, boot) == boot and mender.mended == 1
    for tid in range(100, 100 + 2 * StackMender.MAX_THREADS):   # threads started all day: bounded
        mender.mend(tid, whole)
    assert len(mender._whole) == StackMender.MAX_THREADS and 1 not in mender._whole
