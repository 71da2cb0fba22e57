"""Profiled synchronisation objects (bridges/_locks.pyx), tested in real programs.

Each case runs in its own python process that calls install() and drain() directly (no channel):
the program measures its own truth with time.perf_counter around every blocking call and prints
it next to what the bridge drained; the test compares. Wait totals must be within 10% of the
truth, waiting-thread counts exact (the native ids themselves are compared). A second group runs a
semantics script under bare python and with install() and requires the same output.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

_locks = pytest.importorskip("gyroscope.bridges._locks", reason="bridges/_locks.pyx is not built")

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # tests/

PRELUDE = textwrap.dedent('''
    import json, os, sys, time
    from gyroscope.bridges import _locks
    if os.environ.get("LOCKS_INSTALL_FIRST", "1") == "1":
        _locks.install()
        import threading
    else:
        import threading
        _locks.install()
    _truth = {}
    _tlock = __import__("_thread").allocate_lock()

    def spin(s):
        end = time.perf_counter() + s
        while time.perf_counter() < end:
            pass

    def timed(key, fn, *a):
        """Call fn(*a) and add the time it took to the truth of `key` (with this thread's native id)."""
        t0 = time.perf_counter()
        r = fn(*a)
        d = time.perf_counter() - t0
        with _tlock:
            rec = _truth.setdefault(key, [0.0, {}])
            rec[0] += d
            tid = threading.get_native_id()
            rec[1][tid] = rec[1].get(tid, 0.0) + d
        return r

    _acc = {}
    _sites = {}

    def collect():
        for s in _locks.sites():
            _sites[s[0]] = s
        for r in _locks.drain():
            a = _acc.setdefault(r[0], {"acquires": 0, "contended": 0, "wait_ns": 0, "wait_max_ns": 0,
                                       "hold_ns": 0, "threads": set(), "callsites": set()})
            a["acquires"] += r[1]; a["contended"] += r[2]; a["wait_ns"] += r[3]
            a["wait_max_ns"] = max(a["wait_max_ns"], r[4]); a["hold_ns"] += r[5]
            a["threads"].update(t[0] for t in r[6]); a["callsites"].update((c[0], c[1]) for c in r[7])

    def report():
        collect()
        out = {"truth": {k: [v[0], {str(t): w for t, w in v[1].items()}] for k, v in _truth.items()}, "sites": [], "counters": list(_locks.counters())}
        for sid, s in _sites.items():
            a = _acc.get(sid, {"acquires": 0, "contended": 0, "wait_ns": 0, "wait_max_ns": 0, "hold_ns": 0,
                                "threads": set(), "callsites": set()})
            out["sites"].append({"id": sid, "kind": s[1], "file": s[2], "line": s[3], "function": s[4],
                                 **{k: (sorted(v) if isinstance(v, set) else v) for k, v in a.items()}})
        print(json.dumps(out))
''')


def run(body: str, env: dict[str, str] | None = None, timeout: float = 60) -> dict:
    code = PRELUDE + textwrap.dedent(body) + "\nreport()\n"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, **(env or {})})
    assert p.returncode == 0, p.stderr
    assert p.stderr == "", p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


def site(res: dict, kind: str) -> dict:
    found = [s for s in res["sites"] if s["kind"] == kind and s["file"] == "<string>"]
    assert len(found) == 1, res["sites"]
    return found[0]


def waited(truth_threads: dict[str, float], at_least_s: float) -> set[int]:
    """Native ids of the threads whose measured calls took at least `at_least_s` in total."""
    return {int(t) for t, w in truth_threads.items() if w >= at_least_s}


def close(ours_ns: int, truth_s: float, tol: float = 0.10) -> None:
    assert truth_s > 0
    assert abs(ours_ns / 1e9 - truth_s) <= tol * truth_s, (ours_ns / 1e9, truth_s)


LOCK_QUEUE = '''
lock = threading.{factory}()
def worker():
    for _ in range({n}):
        timed("w", lock.acquire)
        spin({hold}) if {hold} < 0.001 else time.sleep({hold})
        lock.release()
ts = [threading.Thread(target=worker) for _ in range(6)]
[t.start() for t in ts]; [t.join() for t in ts]
'''


@pytest.mark.parametrize("factory,kind", [("Lock", "lock"), ("RLock", "rlock")])
@pytest.mark.parametrize("hold,n", [(0.0001, 150), (0.01, 6)])
def test_lock_wait_totals_short_and_long_holds(factory: str, kind: str, hold: float, n: int) -> None:
    res = run(LOCK_QUEUE.format(factory=factory, hold=hold, n=n))
    s = site(res, kind)
    truth, truth_threads = res["truth"]["w"]
    close(s["wait_ns"], truth)
    assert s["acquires"] == 6 * n
    assert s["contended"] >= 1
    assert waited(truth_threads, 0.002) <= set(s["threads"]) <= waited(truth_threads, 0)   # who waited
    assert s["wait_max_ns"] <= s["wait_ns"]
    assert s["hold_ns"] >= 0.9 * 6 * n * hold * 1e9         # held at least the time each holder slept/spun
    assert s["line"] == PRELUDE.count("\n") + 2 and s["function"] == "<module>"
    assert s["callsites"] and all(c[0] == "<string>" for c in s["callsites"])


def test_semaphore_with_8_waiting_threads_says_8() -> None:
    res = run('''
sem = threading.Semaphore(2)
sem.acquire(); sem.acquire()          # all permits taken: every worker must wait
def worker():
    timed("w", sem.acquire)
    time.sleep(0.005)
    sem.release()
ts = [threading.Thread(target=worker) for _ in range(8)]
[t.start() for t in ts]
time.sleep(0.2)
sem.release(); sem.release()
[t.join() for t in ts]
''')
    s = site(res, "semaphore")
    truth, truth_threads = res["truth"]["w"]
    assert len(waited(truth_threads, 0.1)) == 8
    assert set(s["threads"]) == waited(truth_threads, 0.1)   # exactly those 8 native ids
    close(s["wait_ns"], truth)
    assert s["contended"] >= 8


KINDS = {
    "bounded_semaphore": '''
sem = threading.BoundedSemaphore(1)
def worker():
    for _ in range(5):
        timed("w", sem.acquire); time.sleep(0.004); sem.release()
ts = [threading.Thread(target=worker) for _ in range(4)]
[t.start() for t in ts]; [t.join() for t in ts]
''',
    "condition": '''
cond = threading.Condition()
items = []
def consumer():
    for _ in range(5):
        with cond:
            timed("w", cond.wait_for, lambda: items)
            items.pop()
ts = [threading.Thread(target=consumer) for _ in range(3)]
[t.start() for t in ts]
for _ in range(15):
    time.sleep(0.005)
    with cond:
        items.append(1); cond.notify()
[t.join() for t in ts]
''',
    "event": '''
ev = threading.Event()
ts = [threading.Thread(target=lambda: timed("w", ev.wait)) for _ in range(4)]
[t.start() for t in ts]
time.sleep(0.1); ev.set()
[t.join() for t in ts]
''',
    "barrier": '''
bar = threading.Barrier(4)
def worker(i):
    time.sleep(0.02 * i)
    timed("w", bar.wait)
ts = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
[t.start() for t in ts]; [t.join() for t in ts]
''',
    "queue": '''
import queue
q = queue.Queue()
def consumer():
    for _ in range(4):
        timed("w", q.get)
ts = [threading.Thread(target=consumer) for _ in range(3)]
[t.start() for t in ts]
for i in range(12):
    time.sleep(0.005); q.put(i)
[t.join() for t in ts]
''',
}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_threading_kind_wait_total_and_threads(kind: str) -> None:
    res = run(KINDS[kind])
    s = site(res, kind)
    truth, truth_threads = res["truth"]["w"]
    close(s["wait_ns"], truth)
    assert waited(truth_threads, 0.002) <= set(s["threads"]) <= waited(truth_threads, 0)


ASYNCIO = '''
import asyncio
async def main():
    objs = {"asyncio.lock": asyncio.Lock(), "asyncio.semaphore": asyncio.Semaphore(1),
            "asyncio.event": asyncio.Event(), "asyncio.condition": asyncio.Condition()}
    async def timed_a(key, aw):
        t0 = time.perf_counter(); await aw; _truth.setdefault(key, [0.0, {}])[0] += time.perf_counter() - t0
    async def hold(k):
        obj = objs[k]
        await timed_a(k, obj.acquire()); await asyncio.sleep(0.01); obj.release()
    await asyncio.gather(*(hold(k) for k in ("asyncio.lock", "asyncio.semaphore") for _ in range(4)))
    async def ev_wait():
        await timed_a("asyncio.event", objs["asyncio.event"].wait())
    async def cond_wait():
        async with objs["asyncio.condition"]:
            await timed_a("asyncio.condition", objs["asyncio.condition"].wait())
    waiters = [asyncio.ensure_future(ev_wait()) for _ in range(3)] + [asyncio.ensure_future(cond_wait()) for _ in range(3)]
    await asyncio.sleep(0.05)
    objs["asyncio.event"].set()
    async with objs["asyncio.condition"]:
        objs["asyncio.condition"].notify_all()
    await asyncio.gather(*waiters)
asyncio.run(main())
'''


def test_asyncio_waits_are_task_waits() -> None:
    res = run(ASYNCIO)
    for kind in ("asyncio.lock", "asyncio.semaphore", "asyncio.event", "asyncio.condition"):
        s = site(res, kind)
        truth = res["truth"][kind][0]
        # the truth includes the acquires that did not wait (microseconds) and the re-acquire of the condition
        close(s["wait_ns"], truth, tol=0.10)
        assert len(s["threads"]) == 1          # one event loop thread


@pytest.mark.parametrize("first", ["1", "0"])
def test_install_before_and_after_import_threading(first: str) -> None:
    res = run(LOCK_QUEUE.format(factory="Lock", hold=0.002, n=4) + '''
assert threading.Lock.__module__.endswith("._locks") and threading.Lock.__name__ == "lock"
assert threading.__loader__.__class__.__name__ == "SourceFileLoader", threading.__loader__
assert threading.__spec__.loader is threading.__loader__
assert _locks.status()["threading"] == "patched"
assert not any(type(f).__name__ == "_Finder" for f in sys.meta_path) or "asyncio.locks" not in sys.modules
''', env={"LOCKS_INSTALL_FIRST": first})
    s = site(res, "lock")
    close(s["wait_ns"], res["truth"]["w"][0])


def test_internal_objects_are_not_profiled_and_nothing_is_added() -> None:
    res = run('''
before = set(sys.modules)
t = threading.Thread(target=time.sleep, args=(0.01,)); t.start(); t.join()
tm = threading.Timer(0.01, lambda: None); tm.start(); tm.join()
assert threading.active_count() == 1
''')
    assert res["sites"] == []          # Thread._started, Timer.finished: threading's own machinery
    assert res["counters"][2] == 0     # no errors


def test_fork_after_install_child_counts_its_own() -> None:
    res = run('''
lock = threading.Lock()
for _ in range(10):
    with lock:
        pass
collect()
pid = os.fork()
if pid == 0:
    _acc.clear(); _sites.clear(); _truth.clear()
    def worker():
        for _ in range(4):
            timed("w", lock.acquire); time.sleep(0.003); lock.release()
    ts = [threading.Thread(target=worker) for _ in range(3)]
    [t.start() for t in ts]; [t.join() for t in ts]
    report()
    sys.stdout.flush()
    os._exit(0)
_, st = os.waitpid(pid, 0)
assert st == 0
sys.exit(0)
''')
    s = site(res, "lock")
    assert s["acquires"] == 12                         # the child's only, not the parent's 10
    close(s["wait_ns"], res["truth"]["w"][0])


def test_uninstall_restores_threading() -> None:
    res = run('''
import asyncio
_locks.uninstall()
import _thread
assert threading.Condition.__module__ == "threading" and threading.Condition.__init__.__code__.co_filename == threading.__file__
assert threading._CRLock is _thread.RLock
assert threading.Lock is (_thread.LockType if sys.version_info >= (3, 13) else _thread.allocate_lock)
assert asyncio.Lock is asyncio.locks.Lock and asyncio.Lock.__mro__[1] is not asyncio.locks.Lock
l = threading.Lock(); l.acquire(); l.release()
''')
    assert not [s for s in res["sites"] if s["file"] == "<string>"]   # the lock made after uninstall() is bare


def test_semantics_same_as_bare_python() -> None:
    script = os.path.join(HERE, "fixtures", "locks_semantics.py")
    bare = subprocess.run([sys.executable, script], capture_output=True, text=True, timeout=60)
    inst = subprocess.run([sys.executable, script, "install"], capture_output=True, text=True, timeout=60)
    assert bare.returncode == inst.returncode == 0, (bare.stderr, inst.stderr)
    assert inst.stdout == bare.stdout
    assert "True" in inst.stdout


def test_green_threads_are_left_alone() -> None:
    """gevent's monkey-patched locks yield to its hub; a native lock would block it: not patched."""
    code = '''
import sys, threading, types
fake = types.ModuleType("gevent.thread")
class LockType:
    pass
LockType.__module__ = "gevent.thread"
threading.Lock = LockType
from gyroscope.bridges import _locks
_locks.install()
assert threading.Lock is LockType
assert threading.Condition.__module__ == "threading" and threading.Condition.__init__.__code__.co_filename == threading.__file__
print(_locks.status()["threading"])
'''
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "not patched: threading is monkey-patched by gevent.thread"


def test_signals_interrupt_blocked_acquires_as_in_bare_python() -> None:
    script = os.path.join(HERE, "fixtures", "locks_signals.py")
    bare = subprocess.run([sys.executable, script], capture_output=True, text=True, timeout=60)
    inst = subprocess.run([sys.executable, script, "install"], capture_output=True, text=True, timeout=60)
    assert bare.returncode == inst.returncode == 0, (bare.stderr, inst.stderr)
    assert inst.stdout == bare.stdout
    assert inst.stdout.count("interrupted: alarm") == 3


def test_install_is_lean_imports_nothing_starts_no_thread() -> None:
    """The in-process bridge's rule: nothing python does not load at start-up, no thread."""
    code = """
import json, sys, _thread
before, threads = set(sys.modules), _thread._count()
from gyroscope.bridges import _locks
_locks.install()
print(json.dumps({"added": sorted(set(sys.modules) - before), "threads": _thread._count() - threads,
                  "status": _locks.status()}))
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    extra = [m for m in out["added"] if not (m.startswith("_cython_") or m in (
        "cython_runtime", "gyroscope", "gyroscope.bridges", "gyroscope.bridges._locks"))]
    assert extra == []                        # not threading, not asyncio: patched when the program imports them
    assert out["threads"] == 0
    assert out["status"] == {"threading": "waiting for import", "asyncio.locks": "waiting for import"}
