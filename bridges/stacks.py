"""The stack classifier shared by every sampler (in-process `sys._current_frames()` and py-spy):
one sampled stack of one thread -> the entity it counts for and what it was doing.

    classify(frames, idle, gil, is_own_code) -> (Entity, EventKind) | None

`frames` are innermost-first. The stack is charged to the innermost frame of the program's own
code (`is_own_code(file)`); library frames above it (threading, queue, selectors, socket...)
only say what it waits in. None when no frame belongs to the program.

- running (not idle, GIL held or unknown): SAMPLE_RUN on the innermost loop of that frame's
  function containing its line (Entity "loop", line = the loop header), else on the function
  ("function", line = its first line, CPython's co_firstlineno);
- runnable but not holding the GIL (not idle, gil False): SAMPLE_GIL on the same region;
- idle: SAMPLE_WAIT on the call site in the program's code (file, function, line of the
  with/call statement). Lock-like waits (lock, rlock, condition, semaphore) are "lock" entities,
  the others (sleep, socket, select, queue, event, join, other) "wait" entities; `detail` says
  which. What is waited in comes from the outermost library frame we know between the site and
  the leaf (Event.wait rather than the Condition.wait it calls), else, when the program's frame is
  the leaf (a C call: lock acquire, time.sleep, socket recv), from the source text of its line.

An event loop is a dispatcher, not work of its caller: a running stack whose innermost program
frame called into asyncio's event loop (run_forever / _run_once / Handle._run) with no program
frame above it is the loop's own bookkeeping, not the program's code: classify returns None
(counting it would make ``asyncio.run(main())`` at module level look like a hot function).
Idle, the same stack is the event loop waiting (select) at that call site.

`with cond:` on a Condition is an acquire of its underlying lock, and the text cannot tell a
Condition from a Lock: with-statements are reported as "lock".

A running stack whose leaf is library code is also where the time is (`library_loop`): the
sampler charges it to the program's frame as above (role "via": its time is in code it calls)
and to the innermost library loop on the way (role "lib"), so that a hot loop is named wherever
it lives, with the program's line that leads to it.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable

from gyroscope.bridges import codemap
from gyroscope.bridges.events import Entity, EntityKind, EventKind, Frame, WaitKind

LOCK_WAITS = frozenset({WaitKind.LOCK, WaitKind.RLOCK, WaitKind.CONDITION, WaitKind.SEMAPHORE})


# (module file basename, qualified name) of library functions -> what their caller waits in.
LIBRARY_WAITS: dict[tuple[str, str], str] = {
    ("threading.py", "Condition.wait"): WaitKind.CONDITION,
    ("threading.py", "Condition.wait_for"): WaitKind.CONDITION,
    ("threading.py", "Event.wait"): WaitKind.EVENT,
    ("threading.py", "Semaphore.acquire"): WaitKind.SEMAPHORE,
    ("threading.py", "BoundedSemaphore.acquire"): WaitKind.SEMAPHORE,
    ("threading.py", "Thread.join"): WaitKind.JOIN,
    ("threading.py", "Thread._wait_for_tstate_lock"): WaitKind.JOIN,
    ("threading.py", "Barrier.wait"): WaitKind.OTHER,
    ("threading.py", "_RLock.acquire"): WaitKind.RLOCK,
    ("queue.py", "Queue.get"): WaitKind.QUEUE,
    ("queue.py", "Queue.put"): WaitKind.QUEUE,
    ("queue.py", "Queue.join"): WaitKind.QUEUE,
    ("_base.py", "Future.result"): WaitKind.OTHER,
    ("_base.py", "Future.exception"): WaitKind.OTHER,
    ("_base.py", "wait"): WaitKind.OTHER,
    ("_base.py", "as_completed"): WaitKind.OTHER,
    ("base_events.py", "BaseEventLoop._run_once"): WaitKind.SELECT,
    ("subprocess.py", "Popen.wait"): WaitKind.OTHER,
    ("subprocess.py", "Popen.communicate"): WaitKind.OTHER,
}
# any frame of these library files: the caller waits in ...
LIBRARY_FILE_WAITS: dict[str, str] = {
    "selectors.py": WaitKind.SELECT, "select.py": WaitKind.SELECT,
    "socket.py": WaitKind.SOCKET, "ssl.py": WaitKind.SOCKET,
}
# (file, method name) of every LIBRARY_WAITS entry that is a method: what a bare co_name may be
_BARE_WAIT_NAMES = frozenset((base, qual.rsplit(".", 1)[1]) for base, qual in LIBRARY_WAITS if "." in qual)

# Library frames that dispatch work: running stacks through them with no program frame above are
# the dispatcher's own work.
DISPATCHERS: frozenset[tuple[str, str]] = frozenset({
    ("base_events.py", "BaseEventLoop.run_forever"),
    ("base_events.py", "BaseEventLoop._run_once"),
    ("events.py", "Handle._run"),
})

# The source text of a line where the program's own frame is the leaf (blocked in a C call).
# First match wins; the order puts specific calls before the generic ones.
_TEXT_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"\bsleep\s*\("), WaitKind.SLEEP),
    (re.compile(r"\.(recv|recv_into|recvfrom|recvmsg|accept|sendall|sendto|sendmsg|send|connect)\s*\(|"
                r"\bcreate_connection\s*\(|\bgetaddrinfo\s*\("), WaitKind.SOCKET),
    (re.compile(r"\b(select|poll|epoll|kqueue)\s*\("), WaitKind.SELECT),
    (re.compile(r"\.join\s*\("), WaitKind.JOIN),
    (re.compile(r"\b\w*sem\w*\.acquire\s*\(", re.IGNORECASE), WaitKind.SEMAPHORE),
    (re.compile(r"\b\w*rlock\w*\.acquire\s*\(", re.IGNORECASE), WaitKind.RLOCK),
    (re.compile(r"\.acquire\s*\("), WaitKind.LOCK),
    (re.compile(r"\b\w*(cond|cv)\w*\.wait(_for)?\s*\(", re.IGNORECASE), WaitKind.CONDITION),
    (re.compile(r"\.wait\s*\("), WaitKind.EVENT),
    (re.compile(r"\.(get|put)(_nowait)?\s*\("), WaitKind.QUEUE),
    (re.compile(r"^\s*(async\s+)?with\b"), WaitKind.LOCK),
]
_STRING_JOIN = re.compile(r"""(['"])\s*\.join\s*\(""")


def wait_kind_from_text(text: str) -> str:
    """What a thread blocked on this source line (its own frame being the leaf) waits in."""
    for pattern, kind in _TEXT_RULES:
        if pattern.search(text):
            if kind == WaitKind.JOIN and _STRING_JOIN.search(text):
                continue
            return kind
    return WaitKind.OTHER


def _library_wait(frame: Frame) -> str | None:
    base = os.path.basename(frame.file)
    w = LIBRARY_WAITS.get((base, frame.function))
    if w is None and (base, frame.function) in _BARE_WAIT_NAMES:
        # a bare co_name that is a known wait's method name (py-spy gives co_name, not the
        # qualname, for Python < 3.11): resolve the qualname from the library's source. Only
        # then: parsing logging/__init__.py for every bare function name cost ~0.1 s a run.
        qual = codemap.qualname_at(frame.file, frame.line, frame.function)
        if qual:
            w = LIBRARY_WAITS.get((base, qual))
    if w is None:
        w = LIBRARY_FILE_WAITS.get(base)
    return w


def wait_kind(library: list[Frame], own: Frame) -> str:
    """What the program's frame `own` waits in, given the library frames above it (innermost-first)."""
    found = None
    for f in library:           # innermost -> outermost: the outermost known one wins
        w = _library_wait(f)
        if w is not None:
            found = w
    if found is not None:
        return found
    # the leaf (the program's frame, or a library frame we do not know) is blocked in a C call
    leaf = library[0] if library else own
    return wait_kind_from_text(codemap.source_line(leaf.file, leaf.line))


_LEAF_CACHE: dict[tuple[str, str, int], bool] = {}
_LEAF_CACHE_MAX = 100_000   # answers kept per leaf rule (a program that generates code stays bounded)


def _leaf_answer(cache: dict, key: tuple, compute: Callable[[], bool]) -> bool:
    """cache[key], computed once per leaf (a frame's line is read at most once)."""
    got = cache.get(key)
    if got is None:
        got = compute()
        if len(cache) > _LEAF_CACHE_MAX:
            cache.clear()
        cache[key] = got
    return got


def waiting_leaf(frames: list[Frame] | tuple[Frame, ...]) -> bool:
    """Whether a stack looks blocked: its innermost frame is a library wait we know (Lock, Condition,
    Event, Queue, join, select, socket: LIBRARY_WAITS / LIBRARY_FILE_WAITS) or its line calls one
    (sleep, acquire, recv, wait, get, with ...: the source-text rules). A guess from the stack alone:
    the py-spy source checks it against the thread's CPU time (a "waiting" stack that burns CPU is
    running)."""
    if not frames:
        return False
    leaf = frames[0]
    return _leaf_answer(_LEAF_CACHE, (leaf.file, leaf.function, leaf.line), lambda: (
        _library_wait(leaf) is not None
        or wait_kind_from_text(codemap.source_line(leaf.file, leaf.line)) != WaitKind.OTHER))


# A line that can hand control to C code which may block: a call, iteration (`for line in f`),
# a with-statement, await / yield, an import.
_MAY_BLOCK = re.compile(r"\(|^\s*(async\s+)?(for|with)\b|\b(await|yield|import)\b")
_NO_CALL_CACHE: dict[tuple[str, int], bool] = {}


def calls_nothing(frames: list[Frame] | tuple[Frame, ...]) -> bool:
    """Whether the innermost frame is Python source at a line that calls nothing (`s += i * i`):
    a thread off the CPU there is not blocked in a call (its callee would be the leaf), it waits
    for the interpreter lock (bridges/cpu_attribution.py). Unknown source: False."""
    if not frames:
        return False
    leaf = frames[0]

    def compute() -> bool:
        text = codemap.source_line(leaf.file, leaf.line).split("#", 1)[0]
        return bool(text.strip()) and not _MAY_BLOCK.search(text)
    return _leaf_answer(_NO_CALL_CACHE, (leaf.file, leaf.line), compute)


def qualified(frame: Frame) -> tuple[str, int, int | None]:
    """(qualname, first line, loop header or None) of a frame of the program, via the code map
    when the file can be read, else from what the frame says."""
    loc = codemap.locate(frame.file, frame.line, frame.function)
    if loc is None:
        return frame.function, frame.first_line or frame.line, None
    name = frame.function
    if loc.qualname.rsplit(".", 1)[-1] == name.rsplit(".", 1)[-1]:
        name = loc.qualname
    first = loc.first_line if name == loc.qualname else (frame.first_line or frame.line)
    header = loc.loop_header if name == loc.qualname else None
    return name, first, header


_LOOP_PLACES: dict[Frame, tuple[tuple[Entity, ...], tuple[Entity, ...]]] = {}


def _frame_loops(f: Frame) -> tuple[tuple[Entity, ...], tuple[Entity, ...]]:
    """The loops a frame of the program is in, innermost first: (those around the loop its line
    is in, all of them). Once per frame: a new stack is mostly frames seen before (the last chunk
    of a deep recursion was placed frame by frame after the program had ended, ~14 ms)."""
    got = _LOOP_PLACES.get(f)
    if got is None:
        name, _first, header = qualified(f)
        heads: tuple[int, ...] = ()
        if header is not None:
            loc = codemap.locate(f.file, f.line, f.function)
            heads = (header, *(loc.outer_loops if loc is not None and loc.loop_header == header else ()))
        loops = tuple(Entity(EntityKind.LOOP, f.file, name, h) for h in heads)
        if len(_LOOP_PLACES) > _LEAF_CACHE_MAX:
            _LOOP_PLACES.clear()
        got = _LOOP_PLACES[f] = (loops[1:], loops)
    return got


def enclosing_loops(frames: list[Frame] | tuple[Frame, ...], is_own_code: Callable[[str], bool]) -> list[Entity]:
    """The loops that were running other code of the program when the stack was sampled (their
    time includes it): every loop of the program's frames outside its innermost one, and the
    loops of the innermost one around the loop it is in; each once (a recursion's frames are in
    the same loops). Innermost-first frames, as classify takes them."""
    out: dict[Entity, None] = {}
    own_seen = False
    for f in frames:
        if not is_own_code(f.file):
            continue
        around, loops = _frame_loops(f)
        out.update(dict.fromkeys(loops if own_seen else around))
        own_seen = True
    return list(out)


def _is_root(frame: Frame) -> bool:
    """The outermost frame of a whole stack: a module's body (the script, `-m`'s runpy), or a
    thread's start in threading.py."""
    return frame.function == "<module>" or os.path.basename(frame.file) in ("threading.py", "runpy.py")


class StackMender:
    """Stacks cut short by a sampler that does not pause its target (`py-spy --nonblocking`): a
    generator or coroutine links to its caller's frame only while it runs, and a read that lands
    as it yields sees its frame alone (on a loop over a generator, ~half the generator's samples).
    Such a stack, whose outermost frame is no root, is completed with the callers that frame had
    in the latest whole stack of the same thread that holds it (innermost-first frames)."""

    KEEP = 16          # whole stacks remembered per thread ...
    MAX_THREADS = 256  # ... for the threads seen last (a service starting threads all day stays bounded)

    def __init__(self) -> None:
        self._whole: dict[int, list[tuple[Frame, ...]]] = {}
        self.mended = 0

    def mend(self, tid: int, frames: tuple[Frame, ...]) -> tuple[Frame, ...]:
        if not frames:
            return frames
        recent = self._whole.get(tid)
        if recent is None:
            if len(self._whole) >= self.MAX_THREADS:
                del self._whole[next(iter(self._whole))]     # the thread seen first
            recent = self._whole[tid] = []
        if _is_root(frames[-1]):
            if not recent or recent[0] != frames:
                recent.insert(0, frames)
                del recent[self.KEEP:]
            return frames
        outer = frames[-1]
        for whole in recent:
            for i, f in enumerate(whole):
                if f.file == outer.file and f.function == outer.function and i + 1 < len(whole):
                    self.mended += 1
                    return frames + whole[i + 1:]
        return frames


NOT_YET = Entity(EntityKind.LOOP, "", "", 0)   # library_loop: a file it would read is not `ready`


def library_loop(frames: list[Frame], is_own_code: Callable[[str], bool],
                 ready: Callable[[str], bool] | None = None) -> Entity | None:
    """Where the time of a running stack is when it is not in the program's own code: the
    innermost frame between the leaf and the program's innermost frame that sits in a loop of its
    function (a library's hot loop: pygments' RegexLexer.get_tokens_unprocessed, networkx's
    shortest paths), as a "loop" entity in that library file. None when the leaf is the program's
    own code, no frame is, or none of the LIBRARY_DEPTH innermost library frames is in a loop (a
    thin wrapper over C code; deeper ones would cost a parse of every module on the way, import
    machinery included, for loops that are not where the time is). `ready(file)` says whether a
    library file may be read now; when it says no, the answer is NOT_YET (ask again later)."""
    lib = []
    for f in frames:
        if is_own_code(f.file):
            break
        if f.file.startswith("<frozen importlib"):
            return None      # an import: module bodies run once, their loops are not the answer
        lib.append(f)
    else:
        return None
    looked = 0
    for f in lib:
        if looked < LIBRARY_DEPTH and f.file.endswith(".py"):
            looked += 1
            if ready is not None and not ready(f.file):
                return NOT_YET
            name, header = _library_place(f)
            if header is not None:
                return Entity(EntityKind.LOOP, f.file, name, header)
    return None


def _library_place(frame: Frame) -> tuple[str, int | None]:
    """(qualname, loop header or None) of a library frame. From its function's source alone
    (codemap.locate_in_function) unless the module is parsed whole already: the last chunk of a
    0.5 s sympy script named loops in six sympy modules, and parsing them whole took 0.2 s after
    the program had ended. The name is the frame's own: py-spy gives co_qualname for Python >=
    3.11 (a bare co_name before, where a method's loop is then named without its class)."""
    if not codemap.has_map(frame.file):
        loc = codemap.locate_in_function(frame.file, frame.line, frame.function)
        if loc is not None:
            return frame.function, loc.loop_header
    name, _first, header = qualified(frame)
    return name, header


LIBRARY_DEPTH = 2


def classify(frames: list[Frame], idle: bool, gil: bool | None,
             is_own_code: Callable[[str], bool]) -> tuple[Entity, EventKind] | None:
    """The entity one sampled stack counts for and the sample kind; None when no frame is the
    program's own. See the module docstring for the rules."""
    own_index = -1
    for i, f in enumerate(frames):
        if is_own_code(f.file):
            own_index = i
            break
    if own_index < 0:
        return None
    own = frames[own_index]
    name, first, header = qualified(own)
    if idle:
        kind = wait_kind(frames[:own_index], own)
        ent_kind = EntityKind.LOCK if kind in LOCK_WAITS else EntityKind.WAIT
        return Entity(ent_kind, own.file, name, own.line, kind), EventKind.SAMPLE_WAIT
    for f in frames[:own_index]:
        base = os.path.basename(f.file)
        if (base, f.function) in DISPATCHERS or \
                (base in ("base_events.py", "events.py") and "." not in f.function
                 and (base, codemap.qualname_at(f.file, f.line, f.function) or "") in DISPATCHERS):
            return None
    if header is not None:
        ent = Entity(EntityKind.LOOP, own.file, name, header)
    else:
        ent = Entity(EntityKind.FUNCTION, own.file, name, first)
    return ent, (EventKind.SAMPLE_GIL if gil is False else EventKind.SAMPLE_RUN)
