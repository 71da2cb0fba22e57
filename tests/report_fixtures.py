"""Realistic session results and sink Windows for tests.

`session()` is a session file as gyroscope 0.1 wrote it (schema gyroscope.session/1, a dict),
`model()` the same session read through the model (agent/model.py, converted to /2)."""
from __future__ import annotations

import copy
import time
from typing import Any

from gyroscope.agent.model import SCHEMA_V1 as SCHEMA
from gyroscope.agent.model import SessionResult
from gyroscope.agent.sinks.base import Window

MAIN, WORKER1, WORKER2 = 1001, 1002, 1003
FILE = "/work/shared/workloads/mixed_hot_and_lock.py"


def _slcp(cell: int, chi6: int, shell: int, key: int, support: float, entropy: float, peak: float,
          hist: bool = True) -> dict[str, Any]:
    d: dict[str, Any] = {"cell_id": cell, "step": 4096, "omega12": 1234, "chi6": chi6, "shell": shell,
                         "resonance_key": key, "current_resonance": key, "omega_sig": 77,
                         "effective_support": support, "spectral_damping": 0.25, "chi_support_ratio": 0.4,
                         "shell_entropy": entropy, "spectral_peak_ratio": peak, "role": "run"}
    if hist:
        d["chi_hist64"] = [((i * 7 + cell) % 13) * (3 if i == chi6 else 1) for i in range(64)]
        d["spectral64"] = [round(1.0 / (1 + abs(i - 5)), 4) for i in range(64)]
    return d


def profile_store() -> Any:
    """The sampled stacks of the session below: MainThread in crunch's loop (lines 12-14) called from
    main (line 34) from <module>; two workers waiting on the lock in bump (line 30)."""
    from gyroscope.agent.profiles.store import StackStore
    from gyroscope.bridges.events import Frame, StackSample

    mod, main = Frame(FILE, "<module>", 40, 1), Frame(FILE, "main", 34, 33)
    boot = (Frame("/usr/lib/python3.12/threading.py", "Thread._bootstrap", 1012, 1005),
            Frame("/usr/lib/python3.12/threading.py", "Thread.run", 990, 985), Frame(FILE, "worker", 28, 26))
    ms = 1_000_000
    samples = [StackSample(4242, MAIN, "MainThread", (Frame(FILE, "crunch", line, 10), main, mod), "run", n,
                           n * 10 * ms, n * 10 * ms) for line, n in ((12, 150), (13, 50), (14, 13))]
    samples.append(StackSample(4242, MAIN, "MainThread", (Frame(FILE, "report", 50, 48), Frame(FILE, "main", 35, 33),
                                                           mod), "run", 15, 150 * ms, 140 * ms))
    for tid, name in ((WORKER1, "worker-1"), (WORKER2, "worker-2")):
        samples.append(StackSample(4242, tid, name, (Frame(FILE, "bump", 30, 29), *boot[::-1]),
                                   "wait", 70, 700 * ms, 0))
        samples.append(StackSample(4242, tid, name, (Frame(FILE, "bump", 31, 29), *boot[::-1]), "run", 1,
                                   10 * ms, 10 * ms))
    store = StackStore()
    store.add_many(samples)
    return store


def session(with_hist: bool = True, with_timeline: bool = True, with_profile: bool = True) -> dict[str, Any]:
    t0 = time.time() - 3.0
    entities = [
        {"id": 1, "kind": "loop", "file": FILE, "function": "crunch", "line": 12, "detail": "",
         "threads": [MAIN],
         "measurements": {"iterations": 2_400_000, "iterations_per_s": 800_000.0, "calls": 1, "cpu_share": 0.71,
                          "samples_running": 213, "samples_waiting": 0, "wait_s_total": 0.0, "wait_s_mean": 0.0,
                          "waits": 0, "waiting_threads": 0},
         "slcp": _slcp(3, 17, 2, 41, 0.12, 0.2, 0.8, with_hist),
         "scores": {"hot_loop_score": 0.84, "contention_score": 0.16, "action_structural": "specialize_hot_loop"}},
        {"id": 2, "kind": "lock", "file": FILE, "function": "bump", "line": 30, "detail": "lock",
         "threads": [WORKER1, WORKER2],
         "measurements": {"iterations": 0, "iterations_per_s": 0.0, "calls": 0, "cpu_share": 0.02,
                          "samples_running": 2, "samples_waiting": 140, "wait_s_total": 1.84, "wait_s_mean": 0.0046,
                          "waits": 400, "waiting_threads": 2},
         "slcp": _slcp(5, 3, 4, 9, 0.8, 0.7, 0.2, with_hist),
         "scores": {"hot_loop_score": 0.1, "contention_score": 0.79, "action_structural": "mitigate_contention"}},
        {"id": 3, "kind": "function", "file": FILE, "function": "<module>", "line": 1, "detail": "",
         "threads": [MAIN],
         "measurements": {"iterations": 0, "iterations_per_s": 0.0, "calls": 1, "cpu_share": 0.05,
                          "samples_running": 15, "samples_waiting": 0, "wait_s_total": 0.0, "wait_s_mean": 0.0,
                          "waits": 0, "waiting_threads": 0},
         "slcp": _slcp(1, 0, 0, 0, 0.5, 0.5, 0.5, False)},
    ]
    decisions = [
        {"action": "specialize_hot_loop", "entity_id": 1, "entity_kind": "loop", "file": FILE, "function": "crunch",
         "line": 12, "hot_loop_score": 0.84, "contention_score": 0.16,
         "evidence": {"iterations_per_s": 800_000.0, "cpu_share": 0.71, "chi6": 17, "shell": 2,
                      "resonance_key": 41, "action_structural": "specialize_hot_loop"}},
        {"action": "mitigate_contention", "entity_id": 2, "entity_kind": "lock", "file": FILE, "function": "bump",
         "line": 30, "hot_loop_score": 0.1, "contention_score": 0.79,
         "evidence": {"wait_s_total": 1.84, "wait_s_mean": 0.0046, "waiting_threads": 2, "chi6": 3}},
    ]
    r: dict[str, Any] = {
        "schema": SCHEMA, "source": "run", "command": ["python", FILE], "pid": 4242, "python": "3.12.1",
        "started_unix_s": t0, "duration_s": 3.0, "exit_code": 0, "window_s": 0.2, "windows": 15,
        "counters": {"raw_events": 3_000_000, "events": 5400, "samples": 300, "dropped": 7, "words": 5400,
                     "gate_sent": 12, "gate_held": 40},
        "errors": ["sampler: 1 sample skipped"],
        "threads": [{"id": MAIN, "name": "MainThread", "cpu_s": 2.1},
                    {"id": WORKER1, "name": "worker-1", "cpu_s": 0.3},
                    {"id": WORKER2, "name": "worker-2", "cpu_s": 0.3}],
        "entities": entities, "decisions": decisions, "actions": [],
        "agent": {"cpu_s": 0.12, "version": "0.1.0"},
    }
    if with_profile:
        r["profile"] = profile_store().to_json()
    if with_timeline:
        r["timeline"] = [{"thread": tid, "entity_id": 2, "start_s": 0.1 * i + (0.05 if tid == WORKER2 else 0),
                          "duration_s": 0.03} for i in range(20) for tid in (WORKER1, WORKER2)]
    return copy.deepcopy(r)


def model(**kw: Any) -> SessionResult:
    """session(**kw) as the typed model (schema gyroscope.session/2)."""
    return SessionResult.from_json(session(**kw))


def windows(n: int = 3) -> list[Window]:
    """Windows as the session would hand them to sinks (gated deltas)."""
    r = session()
    out = []
    t0 = 1_000_000_000
    for i in range(n):
        ts = t0 + i * 1_000_000_000
        out.append(Window(index=(i + 1) * 5, t_start_ns=ts, t_end_ns=ts + 1_000_000_000,
                          unix_start_s=r["started_unix_s"] + i,
                          entities=copy.deepcopy(r["entities"][:2]) if i == 0 else copy.deepcopy(r["entities"][1:2]),
                          decisions=copy.deepcopy(r["decisions"]) if i == 0 else [],
                          waits=[{"thread": WORKER1, "entity_id": 2, "t_ns": ts + 10_000_000, "duration_ns": 3_000_000},
                                 {"thread": WORKER2, "entity_id": 2, "t_ns": ts + 20_000_000, "duration_ns": 5_000_000}],
                          counters={"events": 1800, "raw_events": 1_000_000, "samples": 100, "dropped": 2},
                          threads={MAIN: "MainThread", WORKER1: "worker-1", WORKER2: "worker-2"}))
    return out
