"""Unit tests of the `run` pieces: serializer, code filter, sys.monitoring duty cycle, sampler, session."""
from __future__ import annotations

import importlib.util
import sys
import sysconfig
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from gyroscope.agent.measure import Measurements
from gyroscope.agent.session import Session
from gyroscope.bridges.events import Entity, EntityKind, Event, EventKind, Observation, WaitKind
from gyroscope.bridges.sampler import LoopMap, StackSampler
from gyroscope.bridges.serializer import KIND_CODE, TABLE, Serializer
from gyroscope.bridges.sysmon import CodeFilter, SysMonitor

MON = sys.monitoring


def load(tmp_path: Path, name: str, source: str):
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


LOOPS = """
def hot(n):
    s = 0
    for i in range(n):
        s += i
    return s

def nested(n):
    t = 0
    for i in range(n):
        j = 0
        while j < 3:
            j += 1
            t += j
    return t
"""


# ---- serializer ------------------------------------------------------------------------------
def test_serializer_table_covers_every_kind_and_is_structural():
    assert set(TABLE) == set(EventKind)                # a new kind without a word rule fails here
    assert len({row.byte0 for row in TABLE.values()}) == len(TABLE)
    ser = Serializer()
    loop = Entity(EntityKind.LOOP, "a.py", "f", 3)
    a = Event(loop, "iter", EventKind.LOOP_ITER, 101, 0, 64, 5000)
    b = Event(loop, "iter", EventKind.LOOP_ITER, 101, 99, 64, 7000)
    assert ser.word(a) == ser.word(b)                  # similar events, same word (no hashing of time)
    lock = Entity(EntityKind.LOCK, "a.py", "g", 9, WaitKind.LOCK)
    w1 = ser.word(Event(lock, "wait", EventKind.LOCK_WAIT, 101, 0, 1, 2_000_000))
    w2 = ser.word(Event(lock, "wait", EventKind.LOCK_WAIT, 202, 0, 1, 2_000))
    assert w1[0] == w2[0] == KIND_CODE[EventKind.LOCK_WAIT]
    assert w1[2] != w2[2] and w1[3] != w2[3]            # other thread, other duration bucket
    ids, words = ser.encode([5, -1, 7], [a, b, Event(lock, "wait", EventKind.SAMPLE_WAIT, 1, 0, 3, 10)])
    assert words.dtype == np.uint8 and words.shape == (len(ids), 4) and set(ids.tolist()) == {5, 7}


def test_serializer_word_reads_the_table(monkeypatch):
    """The word comes from TABLE (one vocabulary, not a copy in the code): change a row, the word follows."""
    from gyroscope.bridges import serializer as S
    loop = Entity(EntityKind.LOOP, "a.py", "f", 3)
    ev = Event(loop, "iter", EventKind.LOOP_ITER, 101, 0, 64, 5000)
    assert Serializer().word(ev) == (0x11, S.DETAIL_SATURATED, S.THREAD_SLOT_BASE, 7)
    monkeypatch.setitem(S.TABLE, EventKind.LOOP_ITER,
                        S.Row(0x12, lambda e: 0x33, lambda e: e.count % 5, "test", "test"))
    assert Serializer().word(ev) == (0x12, 0x33, S.THREAD_SLOT_BASE, 64 % 5)
    assert "LOOP_ITER      0x12" in S.describe()


# ---- code filter -----------------------------------------------------------------------------
def test_code_filter(tmp_path):
    f = CodeFilter([str(tmp_path)], include=["*/json/*"])
    assert f.file_is_ours(str(tmp_path / "app.py"))
    assert f.file_is_ours(str(tmp_path / "sub" / "mod.py"))
    assert not f.file_is_ours(str(Path(sysconfig.get_paths()["stdlib"]) / "threading.py"))
    assert not f.file_is_ours(np.__file__)
    assert not f.file_is_ours("<frozen importlib._bootstrap>")
    assert f.file_is_ours(str(Path(sysconfig.get_paths()["stdlib"]) / "json" / "encoder.py"))  # --include
    import gyroscope.bridges.sysmon
    assert not CodeFilter([str(Path(gyroscope.bridges.sysmon.__file__).parents[1])]).file_is_ours(gyroscope.bridges.sysmon.__file__)
    # a program that lives inside site-packages (pyperformance's benchmarks) is still the program
    site = Path(sysconfig.get_paths()["purelib"])
    inner = site / "somepkg" / "bench"
    assert CodeFilter([str(inner)]).file_is_ours(str(inner / "run.py"))
    assert not CodeFilter([str(inner)]).file_is_ours(str(site / "other" / "x.py"))


def test_loop_map(tmp_path):
    mod = load(tmp_path, "lm_mod", LOOPS)
    lm = LoopMap()
    code = mod.nested.__code__
    first = code.co_firstlineno
    assert lm.header(code, first + 3) == first + 2     # `j = 0` is in the for loop
    assert lm.header(code, first + 5) == first + 4     # `j += 1` is in the while loop
    assert lm.header(code, first + 1) == 0


# ---- sys.monitoring duty cycle -----------------------------------------------------------------
@pytest.fixture
def monitor(tmp_path):
    mon = SysMonitor(CodeFilter([str(tmp_path)]), LoopMap(), k=16)
    yield mon
    mon.stop()


def test_sysmon_counts_rearms_and_cleans_up(tmp_path, monitor):
    mod = load(tmp_path, "dc_mod", LOOPS)
    monitor.start()
    tool = monitor.tool
    assert tool is not None and MON.get_tool(tool) == "gyroscope"
    assert tool != MON.PROFILER_ID or MON.get_tool(MON.OPTIMIZER_ID) is not None
    for _ in range(2):
        mod.hot(10_000)
        events, raw, dropped = monitor.poll()
        loops = [e for e in events if e.kind == EventKind.LOOP_ITER and e.entity.function == "hot"]
        assert len(loops) == 1 and loops[0].count == 16 and loops[0].duration_ns > 0   # saturated, re-armed
        assert loops[0].entity.kind == EntityKind.LOOP and loops[0].entity.line == mod.hot.__code__.co_firstlineno + 2
        calls = [e for e in events if e.kind == EventKind.CALL and e.entity.function == "hot"]
        assert calls and calls[0].count == 1 and calls[0].duration_ns == 0               # exact below K
        assert dropped == 0 and raw >= 17
    mod.hot(3)
    events, _, _ = monitor.poll()
    assert [e.count for e in events if e.kind == EventKind.LOOP_ITER] == [3]
    monitor.stop()
    assert MON.get_tool(tool) is None
    assert MON.get_events(tool) == 0 and MON.get_local_events(tool, mod.hot.__code__) == 0


def test_rearm_leaves_other_tools_disabled(tmp_path, monitor):
    """Our re-arm (local events off/on) must not re-enable another tool's DISABLEd locations."""
    mod = load(tmp_path, "other_mod", LOOPS)
    other = next(t for t in (1, 3, 4) if MON.get_tool(t) is None)
    MON.use_tool_id(other, "other-tool")
    seen = []

    def on_jump(code, src, dst):
        seen.append(src)
        return MON.DISABLE

    try:
        MON.register_callback(other, MON.events.JUMP, on_jump)
        MON.set_local_events(other, mod.hot.__code__, MON.events.JUMP)
        monitor.start()
        mod.hot(1000)
        assert len(seen) == 1                          # the other tool disabled its location
        for _ in range(3):
            monitor.poll()                             # re-arms our tool on hot's code
            mod.hot(1000)
        assert len(seen) == 1
        events, _, _ = monitor.poll()
        assert any(e.kind == EventKind.LOOP_ITER and e.count == 16 for e in events)
    finally:
        MON.set_local_events(other, mod.hot.__code__, 0)
        MON.register_callback(other, MON.events.JUMP, None)
        MON.free_tool_id(other)


def test_callback_errors_never_reach_the_program(tmp_path):
    mod = load(tmp_path, "err_mod", LOOPS)

    def bad_filter(code):
        raise RuntimeError("boom")

    mon = SysMonitor(CodeFilter([str(tmp_path)]), LoopMap(), k=8)
    mon.filter = bad_filter
    mon.start()
    try:
        assert mod.hot(100) == sum(range(100))
        mon.poll()
        assert any("callback errors" in e for e in mon.errors)
    finally:
        mon.stop()


# ---- sampler ---------------------------------------------------------------------------------
CONTENTION = """
import threading, time
lock = threading.Lock()
def worker(n):
    for _ in range(n):
        with lock:
            time.sleep(0.004)
def spin(t_end):
    x = 0
    while time.monotonic() < t_end:
        x += 1
    return x
"""


def test_sampler_sees_lock_waits_and_running_loops(tmp_path):
    mod = load(tmp_path, "cont_mod", CONTENTION)
    sampler = StackSampler(CodeFilter([str(tmp_path)]), interval_s=0.003)
    sampler.exclude.add(threading.get_ident())
    sampler.start()
    threads = [threading.Thread(target=mod.worker, args=(40,)) for _ in range(3)]
    threads.append(threading.Thread(target=mod.spin, args=(time.monotonic() + 0.4,)))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sampler.stop()
    events, infos, samples, dropped = sampler.take()
    assert samples > 10 and dropped == 0
    waits = [e for e in events if e.kind == EventKind.SAMPLE_WAIT and e.entity.kind == EntityKind.LOCK]
    assert waits and {e.entity.function for e in waits} == {"worker"}
    assert {e.entity.detail for e in waits} == {WaitKind.LOCK}
    assert len({e.thread for e in waits}) >= 2
    sleeps = [e for e in events if e.kind == EventKind.SAMPLE_WAIT and e.entity.detail == WaitKind.SLEEP]
    assert sleeps and all(e.entity.function == "worker" for e in sleeps)
    runs = [e for e in events if e.kind == EventKind.SAMPLE_RUN and e.entity.function == "spin"]
    assert runs and runs[0].entity.kind == EntityKind.LOOP
    assert any(e.kind == EventKind.LOCK_WAIT for e in events)
    assert any(e.kind == EventKind.THREAD_START for e in events) and any(e.kind == EventKind.THREAD_END for e in events)
    assert threading.get_ident() not in {i.native_id for i in infos.values()}


# ---- measurements and session -------------------------------------------------------------------
def test_measure_extrapolates_saturated_loops():
    m = Measurements()
    loop = Entity(EntityKind.LOOP, "a.py", "f", 3)
    obs = Observation(0, 200_000_000, [
        Event(loop, "iter", EventKind.LOOP_ITER, 1, 0, 65, 64_000),          # 1e6 it/s while counted
        Event(loop, "run", EventKind.SAMPLE_RUN, 1, 0, 10, 100_000_000),      # ran 0.1 s of the window
    ])
    m.update(obs)
    d = m.as_dict(loop)
    assert d["iterations_per_s"] == pytest.approx(1e6)
    assert d["iterations"] == pytest.approx(1e5, rel=1e-6)
    assert d["cpu_share"] == 1.0 and d["samples_running"] == 10


class ListSource:
    name = "run"

    def __init__(self, batches):
        self.batches = list(batches)

    def exclude_thread(self, ident):
        pass

    def start(self):
        pass

    def poll(self):
        return self.batches.pop(0) if self.batches else Observation(0, 1)

    def stop(self):
        return self.poll()


class BrokenSink:
    name = "broken"

    def on_window(self, window):
        raise RuntimeError("sink down")

    def close(self, result):
        raise RuntimeError("sink down at close")


def test_session_survives_broken_sinks_and_full_pool():
    ents = [Entity(EntityKind.FUNCTION, "a.py", f"f{i}", i) for i in range(6)]
    obs = Observation(0, 10, [Event(e, "run", EventKind.SAMPLE_RUN, 7, 0, 3, 30) for e in ents])
    s = Session(ListSource([obs]), [BrokenSink()], window_s=0.01, pool_capacity=4)
    s.start()
    time.sleep(0.1)
    r = s.stop(0)
    assert r.exit_code == 0 and len(r.entities) == 6
    assert any("sink broken.on_window" in e for e in r.errors)
    assert any("sink broken.close" in e for e in r.errors)
    assert r.counters.dropped >= 2              # 6 cells wanted, 4 available: counted, not fatal
    with_slcp = [e for e in r.entities if e.slcp is not None]
    assert len(with_slcp) == 4 and all(e.slcp.step > 0 for e in with_slcp)
