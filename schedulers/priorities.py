"""The thread-priority actuator (opt-in, reversible, restored on exit; DESIGN.md Invariants).

PriorityActuator.lower(tid, reason) lowers one OS thread (native id) and restore_all() undoes
every change; both return ACTION dicts:
  {"action": "lower_priority"|"restore_priority", "thread": tid, "mechanism": "nice"|"sched_batch"|
   "affinity", "from": ..., "to": ..., "reason": str, "ok": bool, "error": str|None, "t_s": float}
Mechanism choice (mechanism="auto"): raising nice is always allowed, but lowering it back needs
CAP_SYS_NICE (CapEff bit 23) or an RLIMIT_NICE allowance (ceiling 20 - rlim_cur <= old nice).
When the nice change could not be undone, SCHED_BATCH is used instead (SCHED_OTHER -> SCHED_BATCH
and back is allowed to an unprivileged owner), then CPU affinity (restrict to one CPU, restore
the old set). A thread that exits mid-change is recorded (ok False, error "thread exited"), never
raised. restore_all is registered with atexit.
"""
from __future__ import annotations

import atexit
import os
import resource
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

CAP_SYS_NICE = 23
LOWER_NICE_BY = 10
_T0 = time.monotonic()


def has_cap_sys_nice() -> bool:
    """CAP_SYS_NICE in this process's effective capabilities (/proc/self/status CapEff)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_SYS_NICE & 1)
    except (OSError, ValueError):
        pass
    return False


def rlimit_nice_floor() -> int:
    """Lowest nice value an unprivileged process may set (RLIMIT_NICE: floor = 20 - rlim_cur)."""
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_NICE)
    except (AttributeError, OSError, ValueError):
        return 20
    if soft == resource.RLIM_INFINITY:
        return -20
    return 20 - int(soft)


def thread_cpu_ticks(tid: int, pid: int | None = None) -> int | None:
    """utime + stime (clock ticks) of one thread from /proc/<pid>/task/<tid>/stat."""
    try:
        with open(f"/proc/{pid or os.getpid()}/task/{tid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return int(rest[11]) + int(rest[12])
    except (OSError, IndexError, ValueError):
        return None


def _err(exc: BaseException) -> str:
    if isinstance(exc, ProcessLookupError):
        return "thread exited"
    return f"{type(exc).__name__}: {exc}"


class PriorityActuator:
    """Lower thread priorities and put them back. Not re-entrant across processes (uses tids)."""

    def __init__(self, mechanism: str = "auto", *, nice_delta: int = LOWER_NICE_BY,
                 can_raise_priority: Callable[[], bool] | None = None, register_atexit: bool = True) -> None:
        if mechanism not in ("auto", "nice", "sched_batch", "affinity"):
            raise ValueError(f"unknown mechanism {mechanism!r}")
        self.mechanism = mechanism
        self.nice_delta = nice_delta
        self._can_raise = can_raise_priority or (lambda: has_cap_sys_nice())
        self._changed: dict[int, tuple[str, Any]] = {}   # tid -> (mechanism, original value)
        self._lock = threading.Lock()
        self.actions: list[dict[str, Any]] = []
        if register_atexit:
            atexit.register(self.restore_all)

    def can_undo_nice(self, old: int) -> bool:
        """Could this process set nice back to `old` after raising it?"""
        return self._can_raise() or rlimit_nice_floor() <= old

    def _record(self, action: str, tid: int, mech: str, frm: Any, to: Any, reason: str,
                error: str | None) -> dict[str, Any]:
        rec = {"action": action, "thread": int(tid), "mechanism": mech, "from": frm, "to": to, "reason": reason,
               "ok": error is None, "error": error, "t_s": round(time.monotonic() - _T0, 6)}
        self.actions.append(rec)
        return rec

    def _pick(self, tid: int) -> str:
        if self.mechanism != "auto":
            return self.mechanism
        try:
            old = os.getpriority(os.PRIO_PROCESS, tid)
        except OSError:
            return "nice"
        if self.can_undo_nice(old):
            return "nice"
        return "sched_batch" if hasattr(os, "SCHED_BATCH") else "affinity"

    def lower(self, thread_native_id: int, reason: str) -> dict[str, Any]:
        """Lower one thread's priority; returns the ACTION dict (also kept in self.actions)."""
        tid = int(thread_native_id)
        with self._lock:
            if tid in self._changed:
                mech, old = self._changed[tid]
                return self._record("lower_priority", tid, mech, old, old, reason, "already lowered")
            mech = self._pick(tid)
            frm: Any = None
            to: Any = None
            try:
                if mech == "nice":
                    frm = os.getpriority(os.PRIO_PROCESS, tid)
                    to = min(19, frm + self.nice_delta)
                    os.setpriority(os.PRIO_PROCESS, tid, to)
                elif mech == "sched_batch":
                    frm = os.sched_getscheduler(tid)
                    to = os.SCHED_BATCH
                    os.sched_setscheduler(tid, os.SCHED_BATCH, os.sched_param(0))
                    frm, to = _policy_name(frm), "SCHED_BATCH"
                else:
                    old_set = sorted(os.sched_getaffinity(tid))
                    frm, to = old_set, [old_set[-1]]
                    os.sched_setaffinity(tid, to)
            except OSError as exc:
                return self._record("lower_priority", tid, mech, frm, to, reason, _err(exc))
            self._changed[tid] = (mech, frm)
            return self._record("lower_priority", tid, mech, frm, to, reason, None)

    def lower_many(self, plan: Iterable[tuple[int, str]]) -> list[dict[str, Any]]:
        return [self.lower(tid, reason) for tid, reason in plan]

    def restore(self, thread_native_id: int) -> dict[str, Any] | None:
        tid = int(thread_native_id)
        with self._lock:
            if tid not in self._changed:
                return None
            mech, old = self._changed.pop(tid)
            cur: Any = None
            try:
                if mech == "nice":
                    cur = os.getpriority(os.PRIO_PROCESS, tid)
                    if cur != old and not self.can_undo_nice(old):
                        raise PermissionError("no CAP_SYS_NICE and RLIMIT_NICE forbids lowering nice")
                    os.setpriority(os.PRIO_PROCESS, tid, old)
                elif mech == "sched_batch":
                    cur = _policy_name(os.sched_getscheduler(tid))
                    os.sched_setscheduler(tid, _POLICIES.get(old, os.SCHED_OTHER), os.sched_param(0))
                else:
                    cur = sorted(os.sched_getaffinity(tid))
                    os.sched_setaffinity(tid, old)
            except OSError as exc:
                return self._record("restore_priority", tid, mech, cur, old, "restore", _err(exc))
            return self._record("restore_priority", tid, mech, cur, old, "restore", None)

    def restore_all(self) -> dict[str, Any]:
        """Undo every change. Report: {"actions": [...], "restored": n, "not_restored": [...]}."""
        with self._lock:
            tids = list(self._changed)
        recs = [r for r in (self.restore(t) for t in tids) if r is not None]
        return {"actions": recs, "restored": sum(r["ok"] for r in recs),
                "not_restored": [r for r in recs if not r["ok"]]}


_POLICIES = {name: getattr(os, name) for name in ("SCHED_OTHER", "SCHED_BATCH", "SCHED_IDLE", "SCHED_FIFO",
                                                   "SCHED_RR") if hasattr(os, name)}


def _policy_name(p: int) -> str:
    for name, val in _POLICIES.items():
        if val == p:
            return name
    return str(p)


def plan_priorities(decisions: list[dict[str, Any]], threads_by_entity: dict[int, list[int]],
                    all_threads: Iterable[int] | None = None) -> list[tuple[int, str]]:
    """Which threads to lower, from DECISION dicts (agent/actuators.py).

    specialize_hot_loop: every program thread other than the hot loop's threads (the background
      threads compete with it for the CPU); program threads = all_threads, or the union of
      threads_by_entity.
    mitigate_contention: the threads waiting on the lock beyond the first one listed (the first
      keeps its priority; the ones piling on are backed off).
    A thread is listed once (first reason wins) and never if it runs a hot loop. threads_by_entity
    maps entity_id -> native thread ids in the order they were first seen on that entity.
    """
    program = list(all_threads) if all_threads is not None else sorted(
        {t for ts in threads_by_entity.values() for t in ts})
    hot_decisions = [d for d in decisions if d.get("action") == "specialize_hot_loop"]
    hot_threads = {t for d in hot_decisions for t in threads_by_entity.get(int(d.get("entity_id", 0)), [])}
    plan: list[tuple[int, str]] = []
    seen: set[int] = set()

    def add(tid: int, reason: str) -> None:
        if tid not in seen and tid not in hot_threads:
            seen.add(tid)
            plan.append((tid, reason))

    for d in hot_decisions:
        if not threads_by_entity.get(int(d.get("entity_id", 0))):
            continue
        where = f"{d.get('function', '?')} ({d.get('file', '?')}:{d.get('line', 0)})"
        for tid in program:
            add(tid, f"background thread while hot loop {where} runs")
    for d in decisions:
        if d.get("action") != "mitigate_contention":
            continue
        where = f"{d.get('function', '?')} ({d.get('file', '?')}:{d.get('line', 0)})"
        for tid in threads_by_entity.get(int(d.get("entity_id", 0)), [])[1:]:
            add(tid, f"piling onto contended lock {where}")
    return plan
