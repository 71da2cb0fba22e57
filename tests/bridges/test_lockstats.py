"""Parent side of the profiled locks: a real contended program's drained tuples -> LockStats ->
Measurements (exact figures) -> the actuators' contention rule."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from gyroscope.agent import actuators
from gyroscope.agent.measure import Measurements
from gyroscope.bridges.events import EntityKind, EventKind, Observation
from gyroscope.bridges.lockstats import LockStats

pytest.importorskip("gyroscope.bridges._locks", reason="bridges/_locks.pyx is not built")

PROGRAM = textwrap.dedent('''
    import json, sys, time
    from gyroscope.bridges import _locks
    _locks.install()
    import threading
    lock = threading.Lock()
    truth = [0.0]
    tl = threading.Lock()
    def worker():
        for _ in range(25):
            t0 = time.perf_counter()
            lock.acquire()
            d = time.perf_counter() - t0
            time.sleep(0.001)
            lock.release()
            with tl:
                truth[0] += d
    windows = []
    t_start = time.monotonic_ns()
    ts = [threading.Thread(target=worker) for _ in range(6)]
    lock.acquire()              # every worker's first acquire waits: six waiting threads, whatever the load
    [t.start() for t in ts]
    time.sleep(0.05)
    lock.release()
    t0 = time.monotonic_ns()
    while any(t.is_alive() for t in ts):
        time.sleep(0.05)
        t1 = time.monotonic_ns()
        windows.append([t0, t1, _locks.sites(), _locks.drain(), list(_locks.counters())])
        t0 = t1
    [t.join() for t in ts]
    t1 = time.monotonic_ns()
    windows.append([t0, t1, _locks.sites(), _locks.drain(), list(_locks.counters())])
    print(json.dumps({"truth": truth[0], "windows": windows, "duration_ns": t1 - t_start,
                      "threads": [t.native_id for t in ts]}))
''')


def test_contended_lock_becomes_exact_measurements_and_a_decision(tmp_path) -> None:
    script = tmp_path / "contended.py"
    script.write_text(PROGRAM)
    p = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, env=os.environ)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    stats, measure = LockStats(), Measurements()
    n_events = 0
    for t0, t1, sites, drained, counters in out["windows"]:
        obs = Observation(t0, t1)
        stats.apply(obs, sites, drained)
        stats.note_counters(obs, counters)
        assert obs.errors == []
        n_events += len(obs.events)
        assert all(ev.entity.kind == EntityKind.LOCK for ev in obs.events)
        measure.update(obs)
    assert n_events > 0
    [ent] = [e for e in stats.entities.values() if e.file == str(script) and e.line == 6]
    assert (ent.kind, ent.detail, ent.function, ent.line) == ("lock", "lock", "<module>", 6)
    m = measure.as_dict(ent)
    info = (m, out["truth"])
    assert m["exact"] is True, info
    assert m["acquires"] == 151, info      # 6 x 25 by the workers, 1 by the main thread
    assert abs(m["wait_s_total"] - out["truth"]) <= 0.10 * out["truth"], info
    assert set(measure.threads_of(ent)) <= set(out["threads"])
    assert m["waiting_threads"] == 6, info
    assert m["waits"] >= 6 and 0 < m["wait_s_max"] <= m["wait_s_total"], info
    assert m["hold_s_total"] >= 150 * 0.001, info
    assert m["call_sites"][0]["file"] == str(script) and m["call_sites"][0]["line"] == 12, info
    assert stats.covers(str(script), 12) == ent            # the line that waits is this lock's
    assert stats.covers(str(script), 13) is None
    from gyroscope.agent.model import EntityRecord
    entity = EntityRecord(id=1, kind=ent.kind, file=ent.file, function=ent.function, line=ent.line,
                          detail=ent.detail, threads=measure.threads_of(ent), measurements=measure.record(ent))
    context = actuators.Context(duration_s=out["duration_ns"] / 1e9, threads=7, samples=0)
    decisions = actuators.decide([entity], context)
    assert len(decisions) == 1, (decisions, info, context)
    [d] = decisions
    assert d.action == actuators.CONTENTION
    assert d.evidence["exact"] is True and d.evidence["waiting_threads"] == 6
    assert d.evidence["acquires"] == 151


def test_malformed_and_unknown_rows_are_reported_not_raised() -> None:
    stats = LockStats(pid=7)
    obs = Observation(0, 1)
    stats.apply(obs, [(0, "rlock", "a.py", 3, "f"), ("bad",)],
                [(0, 2, 1, 500, 500, 900, ((11, 1, 500, 5),), (("a.py", 4, 1, 500),)),
                 (99, 1, 0, 0, 0, 0, (), ()), ("x",)])
    assert [e.kind for e in obs.events] == [EventKind.LOCK_WAIT, EventKind.LOCK_ACQUIRE]
    assert obs.events[0].duration_ns == 500 and obs.events[0].thread == 11 and obs.events[0].entity.pid == 7
    assert obs.locks[0].callsites == {("a.py", 4): (1, 500)}
    assert obs.errors == ["locks: 2 malformed rows, 1 rows for unknown sites dropped in this window"]
    stats.add_sites([(1, "queue", "a.py", 9, "g"), (2, "asyncio.lock", "a.py", 10, "h")])
    assert stats.entity(1).kind == EntityKind.WAIT and stats.entity(2).kind == EntityKind.LOCK
    stats.note_counters(obs, (1, 0, 2, 0, 0, "ValueError()"))
    assert obs.errors[-1].startswith("locks: 2 errors inside the lock bridge")
