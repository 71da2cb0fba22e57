import os
import threading

import pytest
from gyroscope.schedulers.priorities import (
    PriorityActuator,
    plan_priorities,
)

pytestmark = pytest.mark.skipif(not hasattr(os, "sched_setscheduler"), reason="Linux scheduling API")


class Worker:
    def __init__(self):
        self.ready, self.stop = threading.Event(), threading.Event()
        self.tid = None
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()
        self.ready.wait()

    def _run(self):
        self.tid = threading.get_native_id()
        self.ready.set()
        self.stop.wait()

    def end(self):
        self.stop.set()
        self.t.join()


def test_lower_and_restore_nice():
    w = Worker()
    act = PriorityActuator("nice", register_atexit=False)
    before = os.getpriority(os.PRIO_PROCESS, w.tid)
    rec = act.lower(w.tid, "test")
    assert rec["ok"] and rec["mechanism"] == "nice" and rec["from"] == before
    assert os.getpriority(os.PRIO_PROCESS, w.tid) == rec["to"] > before
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before  # per-thread
    rep = act.restore_all()
    assert rep["restored"] == 1 and not rep["not_restored"]
    assert os.getpriority(os.PRIO_PROCESS, w.tid) == before
    assert {a["action"] for a in act.actions} == {"lower_priority", "restore_priority"}
    assert set(act.actions[0]) == {"action", "thread", "mechanism", "from", "to", "reason", "ok", "error", "t_s"}
    w.end()


def test_lower_and_restore_sched_batch_and_affinity():
    w = Worker()
    act = PriorityActuator("sched_batch", register_atexit=False)
    assert act.lower(w.tid, "bg")["ok"]
    assert os.sched_getscheduler(w.tid) == os.SCHED_BATCH
    act.restore_all()
    assert os.sched_getscheduler(w.tid) == os.SCHED_OTHER
    aff = PriorityActuator("affinity", register_atexit=False)
    old = os.sched_getaffinity(w.tid)
    assert aff.lower(w.tid, "bg")["ok"] and len(os.sched_getaffinity(w.tid)) == 1
    aff.restore_all()
    assert os.sched_getaffinity(w.tid) == old
    w.end()


def test_without_cap_sys_nice_auto_prefers_reversible_mechanism(monkeypatch):
    import gyroscope.schedulers.priorities as p
    monkeypatch.setattr(p, "rlimit_nice_floor", lambda: 20)  # RLIMIT_NICE 0: cannot lower nice
    w = Worker()
    act = PriorityActuator("auto", can_raise_priority=lambda: False, register_atexit=False)
    rec = act.lower(w.tid, "bg")
    assert rec["ok"] and rec["mechanism"] == "sched_batch"
    assert act.restore_all()["restored"] == 1
    # forced nice without the capability: the change is made but cannot be undone -> recorded
    forced = PriorityActuator("nice", can_raise_priority=lambda: False, register_atexit=False)
    before = os.getpriority(os.PRIO_PROCESS, w.tid)
    assert forced.lower(w.tid, "bg")["ok"]
    rep = forced.restore_all()
    assert rep["restored"] == 0 and len(rep["not_restored"]) == 1
    assert "CAP_SYS_NICE" in rep["not_restored"][0]["error"]
    os.setpriority(os.PRIO_PROCESS, w.tid, before)  # we are root: clean up for real
    w.end()


def test_thread_exiting_mid_change_is_recorded_not_raised():
    w = Worker()
    act = PriorityActuator("nice", register_atexit=False)
    assert act.lower(w.tid, "bg")["ok"]
    w.end()  # exits between lower and restore
    rep = act.restore_all()
    assert rep["not_restored"][0]["error"] == "thread exited"
    gone = act.lower(w.tid, "again")  # lowering a dead thread
    assert gone["ok"] is False and gone["error"] == "thread exited"
    for mech in ("sched_batch", "affinity"):
        assert PriorityActuator(mech, register_atexit=False).lower(w.tid, "x")["error"] == "thread exited"


def test_plan_priorities():
    decisions = [{"action": "specialize_hot_loop", "entity_id": 1, "function": "crunch", "file": "a.py", "line": 3},
                 {"action": "mitigate_contention", "entity_id": 2, "function": "work", "file": "a.py", "line": 9},
                 {"action": "observe", "entity_id": 3}]
    threads = {1: [100], 2: [201, 202, 203, 100], 3: [300]}
    plan = plan_priorities(decisions, threads)
    tids = [t for t, _ in plan]
    assert 100 not in tids and sorted(tids) == [201, 202, 203, 300]
    assert len(set(tids)) == len(tids)
    only_lock = plan_priorities(decisions[1:], threads)
    assert [t for t, _ in only_lock] == [202, 203, 100]
    assert all("contended lock work" in r for _, r in only_lock)
    assert plan_priorities([], threads) == []
