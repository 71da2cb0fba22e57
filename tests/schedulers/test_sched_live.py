"""Issue 16: live decisions -> CoherenceExecutor lanes / coherence-first, and the live module."""
import functools
import json
import os
import subprocess
import sys
import threading
import time
import types
from concurrent.futures import CancelledError, ThreadPoolExecutor, wait

import pytest
from gyroscope.schedulers import live
from gyroscope.schedulers.executor import CoherenceExecutor
from gyroscope.schedulers.matching import Classifier, code_footprint, rules_from

LOCK = threading.Lock()
RUNNING = {"lane": 0, "lane_max": 0, "other": 0, "overlap": 0}
MU = threading.Lock()


def locked_write(i, hold=0.002, gate=None):
    with MU:
        RUNNING["lane"] += 1
        RUNNING["lane_max"] = max(RUNNING["lane_max"], RUNNING["lane"])
    with LOCK:
        if gate is not None:
            gate.wait(30)
        time.sleep(hold)
    with MU:
        RUNNING["lane"] -= 1
    return i


def other_work(i, dt=0.003):
    with MU:
        RUNNING["other"] += 1
        if RUNNING["lane"]:
            RUNNING["overlap"] += 1
    time.sleep(dt)
    with MU:
        RUNNING["other"] -= 1
    return -i


def calls_locked_write(i):
    return locked_write(i, 0)


class Store:
    def __init__(self):
        self.lock = threading.Lock()
        self.rows = []

    def write(self, row):
        with self.lock:
            self.rows.append(row)


STORE = Store()


def process_row(i):
    return STORE.write(i * 2)


def hot_numeric(n):
    s = 0
    for k in range(n):
        s += k
    return s


def _decision(fn, action="mitigate_contention", kind="lock", line_offset=None, **extra):
    code = fn.__code__
    line = code.co_firstlineno + (line_offset if line_offset is not None else 1)
    d = {"action": action, "kind": kind, "file": code.co_filename, "function": code.co_qualname, "line": line,
         "detail": "threading.Lock" if kind == "lock" else "", "pid": os.getpid(), "threads": [], "call_sites": [],
         "measurements": {}}
    d.update(extra)
    return d


@pytest.fixture(autouse=True)
def _clean_live(monkeypatch):
    # outside any session: an earlier test's channel may have loaded the bridge module in this
    # process (its fallback calibration), which live.report() takes for being under gyroscope
    monkeypatch.delitem(sys.modules, "gyroscope.bridges._inproc", raising=False)
    live.inject(None)
    for k in RUNNING:
        RUNNING[k] = 0
    yield
    live.inject(None)


def _blocked(ex, n):
    """Occupy n workers of ex with tasks waiting on a gate; returns (gate, their futures)."""
    gate, started = threading.Event(), threading.Semaphore(0)

    def block():
        started.release()
        gate.wait(30)
        return "gate"
    futs = [ex.submit_with(block, coherence=1.0, urgency=99) for _ in range(n)]
    for _ in range(n):
        assert started.acquire(timeout=30)
    return gate, futs


# ---- live ---------------------------------------------------------------------------------------
def test_live_outside_gyroscope_is_empty():
    code = ("import sys; before = set(sys.modules)\n"
            "from gyroscope.schedulers import live\n"
            "import json; print(json.dumps([live.decisions(), live.version(),"
            " 'gyroscope.bridges._inproc' in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    decs, ver, bridge = json.loads(out.stdout)
    assert decs == [] and ver == 0 and bridge is False


def test_live_reads_the_bridge_and_survives_a_broken_one(monkeypatch):
    fake = types.ModuleType("gyroscope.bridges._inproc")
    state = {"v": 3, "d": [{"action": "mitigate_contention"}]}
    fake.live_decisions = lambda: (state["v"], state["d"])
    monkeypatch.setitem(sys.modules, "gyroscope.bridges._inproc", fake)
    assert live.decisions() == [{"action": "mitigate_contention"}] and live.version() == 3
    live.inject([{"action": "specialize_hot_loop"}])
    assert live.decisions() == [{"action": "specialize_hot_loop"}] and live.version() > 3
    live.inject(None)
    assert live.decisions() == state["d"]

    def broken():
        raise RuntimeError("bridge gone")
    fake.live_decisions = broken
    assert live.decisions() == [] and live.version() >= 0
    del fake.live_decisions   # an older bridge without the return path
    assert live.decisions() == []


# ---- matching -----------------------------------------------------------------------------------
def test_matching_follows_partials_methods_globals_and_call_sites():
    rules = rules_from([_decision(locked_write)])
    cl = Classifier(rules)
    assert cl.classify(locked_write)[0] is rules[0]
    assert cl.classify(functools.partial(locked_write, hold=0))[0] is rules[0]
    assert cl.classify(calls_locked_write)[0] is rules[0]          # through its globals
    assert cl.classify(lambda: locked_write(1))[0] is rules[0]     # a lambda calling it

    class Writer:
        def write(self, i):
            return self.inner(i)

        def inner(self, i):
            return locked_write(i)

        def __call__(self, i):
            return self.write(i)
    assert cl.classify(Writer().write)[0] is rules[0]              # bound method -> its class's methods
    assert cl.classify(Writer())[0] is rules[0]                    # callable object
    assert cl.classify(other_work) == (None, None)
    assert cl.classify(print) == (None, None)                      # no code object
    # a lock decision found only through a call site (the function name differs)
    site = rules_from([{**_decision(other_work), "function": "elsewhere", "line": 1,
                        "call_sites": [[other_work.__code__.co_filename, other_work.__code__.co_firstlineno + 3]]}])
    assert Classifier(site).classify(other_work)[0] is site[0]
    # waits (sleep, I/O) are never routed; only locks
    assert rules_from([_decision(other_work, kind="wait")]) == []
    assert len(code_footprint(calls_locked_write)) >= 2
    # through a method of a global object: STORE.write() (decision on Store.write's `with` line)
    store = rules_from([_decision(Store.write, line_offset=1)])
    assert Classifier(store).classify(process_row)[0] is store[0]
    assert Classifier(store).classify(calls_locked_write) == (None, None)

    def with_store(st, i):       # the object is an argument of the task
        return st.write(i)
    assert Classifier(store).classify(with_store, (STORE, 1))[0] is store[0]
    assert Classifier(store).classify(with_store, ([], 1)) == (None, None)


# ---- executor with decisions -------------------------------------------------------------------
def test_lane_from_injected_decision_bounds_the_lock_tasks_and_others_run_beside():
    live.inject([_decision(locked_write)])
    with CoherenceExecutor(4) as ex:
        futs = [ex.submit(locked_write if i % 2 == 0 else other_work, i) for i in range(40)]
        assert [f.result(timeout=30) for f in futs] == [i if i % 2 == 0 else -i for i in range(40)]
        stats, actions = ex.stats, ex.actions
    assert RUNNING["lane_max"] == 1                 # lane_limit 1: never two lock tasks at once
    assert stats["lanes"] == 1 and stats["routed"] == 20
    (act,) = actions
    assert act["action"] == "route_to_lane" and act["limit"] == 1 and act["routed"] == 20
    assert act["entity"]["function"] == "locked_write" and act["entity"]["detail"] == "threading.Lock"
    assert any(t.startswith("locked_write") for t in act["tasks"])


def test_while_the_lane_is_busy_the_other_workers_run_the_rest():
    live.inject([_decision(locked_write)])
    gate = threading.Event()
    with CoherenceExecutor(4) as ex:
        first = ex.submit(locked_write, 0, 0, gate)
        deadline = time.monotonic() + 30
        while not RUNNING["lane"]:
            assert time.monotonic() < deadline
            time.sleep(0.001)
        second = ex.submit(locked_write, 1, 0)
        others = [ex.submit(other_work, i, 0.001) for i in range(12)]
        done, not_done = wait(others, timeout=30)
        assert not not_done                                   # three free workers ran them all
        assert not second.running() and not second.done()    # held back by the lane, not queued on the lock
        gate.set()
        assert (first.result(timeout=30), second.result(timeout=30)) == (0, 1)
    assert RUNNING["lane_max"] == 1


def test_without_decisions_it_behaves_like_a_thread_pool():
    assert live.decisions() == []
    barrier = threading.Barrier(4, timeout=10)   # breaks unless 4 tasks run at once
    with CoherenceExecutor(4) as ex, ThreadPoolExecutor(4) as tp:
        assert [f.result() for f in [ex.submit(barrier.wait) for _ in range(4)]]
        args = list(range(30))
        assert list(ex.map(locked_write, args, [0] * 30)) == list(tp.map(locked_write, args, [0] * 30))
        assert ex.stats["lanes"] == 0 and ex.actions == []


def test_pending_tasks_are_rerouted_when_decisions_arrive():
    with CoherenceExecutor(2) as ex:
        gate, blockers = _blocked(ex, 2)
        futs = [ex.submit(locked_write, i) for i in range(10)]   # queued before any decision
        assert ex.stats["lanes"] == 0
        live.inject([_decision(locked_write)])
        gate.set()
        assert [f.result(timeout=30) for f in futs] == list(range(10))
        wait(blockers)
        assert ex.stats["lanes"] == 1 and ex.stats["routed"] == 10
    assert RUNNING["lane_max"] == 1


def test_hot_loop_decision_runs_its_tasks_first():
    live.inject([_decision(hot_numeric, action="specialize_hot_loop", kind="loop", line_offset=2)])
    order = []
    with CoherenceExecutor(1) as ex:
        gate, blockers = _blocked(ex, 1)
        futs = [ex.submit(lambda i=i: order.append(("plain", i))) for i in range(3)]
        futs += [ex.submit(lambda i=i: order.append(("hot", hot_numeric(10)))) for i in range(3)]
        # the caller's own hint wins over the decision (0.2: deferred, runs last)
        futs += [ex.submit_with(lambda: order.append(("hinted", hot_numeric(1))), coherence=0.2)]
        gate.set()
        wait(futs + blockers)
        assert ex.stats["hot_tasks"] == 3
    assert [k for k, _ in order] == ["hot"] * 3 + ["plain"] * 3 + ["hinted"]


def test_aging_bounds_the_delay_behind_an_endless_lane():
    """One worker; every lane task submits another (an endless stream ranking LANE_BONUS above
    plain tasks). A plain task T still runs: a lane task submitted K >= (2 + 1) / aging_step
    dispatches after T cannot outrank it (module docstring), so T runs within ~K + 2 dispatches."""
    live.inject([_decision(locked_write)])
    step = 0.05
    bound = int((2 + 1) / step) + 3
    done, ran_at = threading.Event(), {}
    with CoherenceExecutor(1, aging_step=step) as ex:
        def chain(i):
            locked_write(i, 0)
            if not done.is_set() and i < 10 * bound:
                ex.submit(chain, i + 1)
            return i

        gate, blockers = _blocked(ex, 1)
        ex.submit(chain, 0)
        t = ex.submit(lambda: (ran_at.setdefault("T", ex.stats["dispatched"]), done.set()))
        gate.set()
        t.result(timeout=30)
        assert ex.stats["lanes"] == 1
    assert ran_at["T"] <= bound, ran_at


def test_exactly_once_or_cancelled_with_lanes_and_shutdown_cancel():
    live.inject([_decision(locked_write)])
    counts = {}
    cmu = threading.Lock()

    def count(i, fn):
        with cmu:
            counts[i] = counts.get(i, 0) + 1
        return fn(i, 0.001) if fn is locked_write else other_work(i, 0.001)

    ex = CoherenceExecutor(3)
    futs = [ex.submit(count, i, locked_write if i % 3 else other_work) for i in range(200)]
    futs[150].cancel()
    time.sleep(0.05)
    ex.shutdown(wait=True, cancel_futures=True)
    with pytest.raises(RuntimeError):
        ex.submit(count, 999, other_work)
    ran = cancelled = 0
    for i, f in enumerate(futs):
        assert f.done()
        if f.cancelled():
            cancelled += 1
            assert i not in counts
            with pytest.raises(CancelledError):
                f.result()
        else:
            ran += 1
            assert counts[i] == 1 and f.result() in (i, -i)
    assert ran + cancelled == 200 and ran >= 1 and cancelled >= 1
    assert all(v == 1 for v in counts.values())


def test_exceptions_and_map_through_a_lane():
    def boom(i):
        locked_write(i, 0)
        raise ValueError(f"task {i}")
    live.inject([_decision(locked_write)])
    with CoherenceExecutor(2) as ex:
        f = ex.submit(boom, 7)
        with pytest.raises(ValueError, match="task 7"):
            f.result(timeout=30)
        assert list(ex.map(locked_write, range(6), [0] * 6)) == list(range(6))
        assert ex.stats["lanes"] == 1 and ex.stats["routed"] == 7


def test_shutdown_wait_drains_lanes():
    live.inject([_decision(locked_write)])
    ex = CoherenceExecutor(3)
    futs = [ex.submit(locked_write, i, 0.001) for i in range(30)]
    ex.shutdown(wait=True)
    assert [f.result() for f in futs] == list(range(30))
    assert all(not t.is_alive() for t in ex._threads)


def test_invalid_lane_limit():
    with pytest.raises(ValueError):
        CoherenceExecutor(2, lane_limit=0)


def test_malformed_decisions_and_odd_callables_never_break_submit():
    live.inject([{"action": "mitigate_contention", "kind": "lock", "line": "not a number"}])
    with CoherenceExecutor(2) as ex:
        assert ex.submit(int, "3").result() == 3
    live.inject([_decision(locked_write), {"action": "mitigate_contention", "kind": "lock", "call_sites": [[None]]}])

    class Weird:
        @property
        def __wrapped__(self):
            raise RuntimeError("no")

        def __call__(self):
            return "ok"
    with CoherenceExecutor(2) as ex:
        assert ex.submit(Weird()).result() == "ok"
        assert ex.submit(functools.partial(max, 1), 2).result() == 2
        assert ex.submit(locked_write, 5, 0).result() == 5
        assert ex.stats["lanes"] == 1


def test_protected_hot_tasks_run_only_on_the_protected_workers():
    """--act priorities: the decision names the threads left at normal priority; the hot loop's
    tasks run only there, the rest anywhere; protection naming none of our workers strands nothing."""
    with CoherenceExecutor(4) as ex:
        barrier = threading.Barrier(4, timeout=10)
        natives = [f.result() for f in [ex.submit(lambda: (barrier.wait(), threading.get_native_id())[1])
                                        for _ in range(4)]]
        assert len(set(natives)) == 4
        keep = natives[2]
        live.inject([_decision(hot_numeric, action="specialize_hot_loop", kind="loop", line_offset=2,
                               protected_threads=[keep])])
        hot = [ex.submit(lambda: (hot_numeric(1000), time.sleep(0.001), threading.get_native_id())[2])
               for _ in range(20)]
        plain = [ex.submit(lambda: (time.sleep(0.002), threading.get_native_id())[1]) for _ in range(20)]
        assert {f.result(timeout=30) for f in hot} == {keep}
        assert {f.result(timeout=30) for f in plain} - {keep}
        assert ex.stats["protected"] == 20
        (act,) = [a for a in ex.actions if a["action"] == "run_on_protected_threads"]
        assert act["threads"] == [keep] and act["routed"] == 20 and act["entity"]["function"] == "hot_numeric"
    live.inject([_decision(hot_numeric, action="specialize_hot_loop", kind="loop", line_offset=2,
                           protected_threads=[1])])   # not one of this executor's workers
    with CoherenceExecutor(2) as ex:
        assert [f.result(timeout=30) for f in [ex.submit(hot_numeric, 10) for _ in range(5)]] == [45] * 5


@pytest.mark.slow
def test_under_gyroscope_run_without_decisions_the_executor_is_a_thread_pool(tmp_path):
    """Under `gyroscope run` the bridge is loaded; until the return path sends decisions,
    live.decisions() is [] and CoherenceExecutor runs everything like a thread pool."""
    script = tmp_path / "app.py"
    script.write_text(
        "import sys, json\n"
        "from gyroscope.schedulers import live, CoherenceExecutor\n"
        "with CoherenceExecutor(3) as ex:\n"
        "    out = list(ex.map(pow, range(10), [2] * 10))\n"
        "    lanes = ex.stats['lanes']\n"
        "print(json.dumps([live.decisions(), 'gyroscope.bridges._inproc' in sys.modules, out, lanes]))\n")
    gyro = os.path.join(os.path.dirname(sys.executable), "gyroscope")
    r = subprocess.run([gyro, "run", "-q", str(script)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    decs, bridge, out, lanes = json.loads(r.stdout)
    assert decs == [] and bridge is True and out == [i * i for i in range(10)] and lanes == 0


def test_report_keeps_nothing_when_not_under_gyroscope():
    assert "gyroscope.bridges._inproc" not in sys.modules
    before = list(live._reported)
    live.report({"action": "route_to_lane", "routed": 1})
    assert live._reported == before and live._drain() is None


REPORT_PROGRAM = """\
import json, sys
from gyroscope.bridges import _inproc          # the bridge module, loaded but not started
from gyroscope.schedulers import live
a = {"action": "route_to_lane", "routed": 0, "tasks": []}
b = {"action": "route_to_lane", "routed": 5, "tasks": ["f"]}
live.report(a); live.report(b)
out = [live._drain()]
a["routed"] += 1; a["tasks"].append("g")       # the executor goes on updating its dict
out.append(live._drain())
out.append(live._drain())                       # nothing changed: nothing shipped
live.report({"action": "x", "bad": object()})   # not marshal-able: skipped, never raised
out.append(live._drain())
print(json.dumps(out))
"""


def test_report_ships_the_changed_actions_once_per_window():
    """live.report() registers one source with the bridge; each call ships only the actions that
    changed since the last one, as (index, copy)."""
    r = subprocess.run([sys.executable, "-c", REPORT_PROGRAM], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    first, second, third, fourth = json.loads(r.stdout)
    assert first == ["actions", [[0, {"action": "route_to_lane", "routed": 0, "tasks": []}],
                                 [1, {"action": "route_to_lane", "routed": 5, "tasks": ["f"]}]]]
    assert second == ["actions", [[0, {"action": "route_to_lane", "routed": 1, "tasks": ["g"]}]]]
    assert third is None and fourth is None


def test_a_decision_on_the_executors_own_lock_changes_nothing():
    """Under load gyroscope may decide the executor's own policy lock (its workers queue on it);
    no task is routed for it and the pool stays in plain mode (submission order, no lock)."""
    from gyroscope.schedulers import executor as executor_mod
    code = CoherenceExecutor._worker.__code__
    live.inject([{"action": "mitigate_contention", "kind": "lock", "file": executor_mod.__file__,
                  "function": code.co_qualname, "line": code.co_firstlineno + 20, "call_sites": [],
                  "detail": "lock"}])
    with CoherenceExecutor(2) as ex:
        assert [f.result(timeout=30) for f in [ex.submit(locked_write, i) for i in range(10)]] == list(range(10))
        assert ex.stats["lanes"] == 0 and ex._fifo
