"""Unit tests of the `run` pieces: serializer, code filter, sys.monitoring duty cycle, sampler, session."""
from __future__ import annotations

import importlib.util
import os
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np
import pytest
from gyroscope.agent.measure import ESTIMATE_ERROR, MIN_FREE_NS, Measurements
from gyroscope.agent.session import Session
from gyroscope.bridges.events import (
    Entity,
    EntityKind,
    Event,
    EventKind,
    Frame,
    LoopRead,
    Observation,
    WaitKind,
)
from gyroscope.bridges.owncode import OwnCode
from gyroscope.bridges.serializer import KIND_CODE, TABLE, Serializer

from tests.conftest import ListSource

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
    assert ids.typecode == "I" and isinstance(words, bytes) and len(words) == 4 * len(ids)
    assert set(ids) == {5, 7}
    assert words[:4] == bytes(ser.word(a)) and words[-4:] == bytes(ser.word(Event(lock, "wait", EventKind.SAMPLE_WAIT, 1, 0, 3, 10)))


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
def test_own_code_rule(tmp_path):
    f = OwnCode.for_program([str(tmp_path)], include=["*/json/*"])
    assert f.ours(str(tmp_path / "app.py"))
    assert f.ours(str(tmp_path / "sub" / "mod.py"))
    assert not f.ours(str(Path(sysconfig.get_paths()["stdlib"]) / "threading.py"))
    assert not f.ours(np.__file__)
    assert not f.ours("<frozen importlib._bootstrap>")
    assert f.ours(str(Path(sysconfig.get_paths()["stdlib"]) / "json" / "encoder.py"))  # --include
    import gyroscope.bridges.owncode as oc
    assert not OwnCode.for_program([str(Path(oc.__file__).parents[1])]).ours(oc.__file__)
    # a program that lives inside site-packages (pyperformance's benchmarks) is still the program
    site = Path(sysconfig.get_paths()["purelib"])
    inner = site / "somepkg" / "bench"
    assert OwnCode.for_program([str(inner)]).ours(str(inner / "run.py"))
    assert not OwnCode.for_program([str(inner)]).ours(str(site / "other" / "x.py"))
    # the script the user names is the program's wherever it lives, stdin included
    tool = site / "tool" / "__main__.py"
    assert OwnCode.for_program([str(tmp_path)], extra=[str(tool)]).ours(str(tool))
    assert OwnCode.for_program([str(tmp_path)], extra=["<stdin>"]).ours("<stdin>")
    # the rule survives the trip to the program's process unchanged
    g = OwnCode.from_config(f.to_config())
    assert (g.roots, g.excluded, g.extra, g.include, g.all_code) == (f.roots, f.excluded, f.extra, f.include,
                                                                     f.all_code)


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


def test_measure_prefers_the_iterator_readings_to_the_timed_hits():
    """A range loop's readings (LoopRead): the uninstrumented rate replaces the bursts', and what
    was counted exactly is a floor the estimate never goes under."""
    m = Measurements()
    loop = Entity(EntityKind.LOOP, "a.py", "f", 3)
    m.update(Observation(0, 200_000_000, [
        Event(loop, "iter", EventKind.LOOP_ITER, 1, 0, 65, 64_000),           # bursts: 1e6 it/s
        Event(loop, "run", EventKind.SAMPLE_RUN, 1, 0, 10, 100_000_000),       # ran 0.1 s
    ], loop_reads=[LoopRead(loop, 150_000, 100_000, 50_000_000, gap=True)]))  # read: 2e6 it/s
    d = m.as_dict(loop)
    assert d["iterations_per_s"] == pytest.approx(2e6) and d["iterations_per_s_source"] == "uninstrumented"
    assert d["iterations_counted"] == 65 + 150_000
    assert d["iterations"] == pytest.approx(2e5, rel=1e-6)        # 2e6/s over the 0.1 s sampled
    assert d["iterations_per_s_error"] == ESTIMATE_ERROR["uninstrumented"]["iterations_per_s"]
    # the sampled time says less than was counted: the count is what was counted
    m.update(Observation(0, 1, loop_reads=[LoopRead(loop, 500_000, 0, 0)]))
    assert m.as_dict(loop)["iterations"] == 65 + 650_000
    # too little uninstrumented time (< MIN_FREE_NS): the bursts' rate, and it says so
    other = Entity(EntityKind.LOOP, "a.py", "g", 7)
    m.update(Observation(0, 1, [Event(other, "iter", EventKind.LOOP_ITER, 1, 0, 65, 64_000)],
                         loop_reads=[LoopRead(other, 10, 10, MIN_FREE_NS - 1)]))
    d = m.as_dict(other)
    assert d["iterations_per_s"] == pytest.approx(1e6) and d["iterations_per_s_source"] == "timed hits"
    # no window flagged (every run counted or read), one thread: the count is what was counted
    whole = Entity(EntityKind.LOOP, "a.py", "h", 11)
    m.update(Observation(0, 1, [Event(whole, "iter", EventKind.LOOP_ITER, 1, 0, 65, 64_000),
                                Event(whole, "run", EventKind.SAMPLE_RUN, 1, 0, 10, 100_000_000)],
                         loop_reads=[LoopRead(whole, 150_000, 100_000, 50_000_000)]))
    d = m.as_dict(whole)
    assert d["iterations"] == 65 + 150_000 and d["iterations_exact"] and d["iterations_error"] == 0.0
    # the same seen on two threads: not whole
    m.update(Observation(0, 1, [Event(whole, "iter", EventKind.LOOP_ITER, 2, 0, 65, 64_000)]))
    assert not m.as_dict(whole)["iterations_exact"]


def test_measure_extrapolates_a_loop_over_its_time_with_what_it_runs():
    """A loop counted in part (timed hits: rates of whole iterations) is extrapolated over its own
    sampled time and the time of the program code it ran (a generator it draws from, a function
    it calls: Observation.enclosing), which the samples give to that code."""
    m = Measurements()
    loop = Entity(EntityKind.LOOP, "a.py", "f", 3)
    m.update(Observation(0, 1, [Event(loop, "iter", EventKind.LOOP_ITER, 1, 0, 65, 64_000),     # 1e6 it/s
                                Event(loop, "run", EventKind.SAMPLE_RUN, 1, 0, 6, 300_000_000)]))
    assert m.as_dict(loop)["iterations"] == pytest.approx(300_000, rel=1e-3)
    m.update(Observation(0, 1, enclosing={loop: 200_000_000}))
    d = m.as_dict(loop)
    assert d["iterations"] == pytest.approx(500_000, rel=1e-3) and not d["iterations_exact"]
    assert d["run_s_total"] == pytest.approx(0.3)     # its own time (CPU shares): the callees' stays theirs


def test_measure_an_estimate_from_few_samples_says_so():
    """A count mostly extrapolated over a handful of running samples carries their error (two
    standard errors of the samples, times the extrapolated share), not only its rate's."""
    m = Measurements()
    loop = Entity(EntityKind.LOOP, "a.py", "f", 3)
    m.update(Observation(0, 1, [Event(loop, "iter", EventKind.LOOP_ITER, 1, 0, 65, 64_000),     # 1e6 it/s
                                Event(loop, "run", EventKind.SAMPLE_RUN, 1, 0, 16, 300_000_000)],
                         loop_reads=[LoopRead(loop, 0, 0, 0, gap=True)]))
    d = m.as_dict(loop)
    assert d["iterations"] == pytest.approx(300_000, rel=1e-3) and not d["iterations_exact"]
    assert d["iterations_error"] == pytest.approx((1 - 65 / 300_000) * 2 / 4, abs=1e-3)   # 16 samples


def test_measure_a_loop_whose_iterations_were_lost_is_not_exact_though_no_window_saturated():
    """A forked child's loop that began disarmed, or a process whose last window never arrived:
    its hits are not all it ran, even with no window at K (stop 24 called such a count exact in
    ~1 of 20 runs of tests/e2e/test_loop_spans.py's fork)."""
    m = Measurements()
    loop = Entity(EntityKind.LOOP, "a.py", "f", 3)
    m.update(Observation(0, 1, [Event(loop, "iter", EventKind.LOOP_ITER, 1, 0, 100)],
                         loop_reads=[LoopRead(loop, 600_000, gap=True, lost=True)]))
    d = m.as_dict(loop)
    assert d["iterations_counted"] == 600_100
    assert not d["iterations_exact"] and d["iterations_error"] > 0


def test_measure_a_short_burst_that_saturated_is_not_an_exact_count():
    """A loop whose rate comes from its free runs gets bursts of 8 untimed hits (bridges/_inproc.pyx
    SHORT_K): a window that saturated says so by its flag, not by a timed span. Its hits are a
    lower bound: with no iterator reading its count is extrapolated at its free-run rate over its
    sampled running time, never called exact (stop 25's bursts were read as exact counts of 8)."""
    m = Measurements()
    loop = Entity(EntityKind.LOOP, "a.py", "f", 3)
    m.update(Observation(0, 1, [Event(loop, "iter", EventKind.LOOP_ITER, 1, 0, 8, 0, True),
                                Event(loop, "run", EventKind.SAMPLE_RUN, 1, 0, 10, 100_000_000)],
                         loop_reads=[LoopRead(loop, 0, 1_000_000, 50_000_000, gap=True)]))
    d = m.as_dict(loop)
    assert not d["iterations_exact"]
    assert d["iterations"] == pytest.approx(2_000_000, rel=0.01)   # 20 M/s over the 0.1 s sampled
    assert d["iterations_per_s_source"] == "uninstrumented"


def test_channel_a_window_that_saturated_untimed_is_a_saturated_event_and_no_reading(tmp_path):
    """Flag bit 3 of a window's hit record (the slot's last hit disarmed it) makes its event
    saturated though no gap was timed; alone it is no iterator reading (one would make a while
    loop that saturated count as read whole)."""
    import socket
    import struct

    from gyroscope.bridges import channel as ch
    src = tmp_path / "w.py"
    src.write_text("def f(a, b):\n    for x in a:\n        pass\n    while a:\n        a.pop()\n    while b:\n        b.pop()\n")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp_path / "s"))
    server = ch.ChannelServer(listener, str(tmp_path / "s"), dispatch_ns=(50.0, 60.0))
    proc = ch.ProcessInfo(1234, 1, slots={0: (0, 1, 3, 2, str(src), "f"), 1: (0, 1, 5, 5, str(src), "f"),
                                          2: (0, 1, 7, 7, str(src), "f")})
    hits = [(0, 8, 100, 0, 7, 0, 0, 0, 0, 8, 0),        # a short burst that saturated: flag bit 3
            (1, 8, 100, 0, 7, 0, 0, 0, 0, 0, 0),        # 8 hits, all of the window's
            (2, 400, 100, 0, 7, 0, 0, 0, 0, 8 | 1, 0)]  # saturated, and the loop may have run unseen
    payload = ch._HEAD.pack(1, 416, 0, 0, len(hits), 0) + b"".join(ch._HIT.pack(*h) for h in hits)
    payload += ch._GC.pack(0, 0, 0, 0) * 3 + struct.pack("=I", 0)
    server._window(proc, payload)
    obs = server.poll()
    by_line = {ev.entity.line: ev for ev in obs.events}
    assert by_line[2].saturated and by_line[2].count == 8
    assert not by_line[4].saturated
    assert by_line[6].saturated
    assert [(r.entity.line, r.gap) for r in obs.loop_reads] == [(6, True)]
    listener.close()


def test_measure_a_loop_no_counter_counted_has_an_unknown_count():
    """A library's loop the samples found (not watched without --all-code) says its count is not
    known, rather than an exact 0."""
    m = Measurements()
    lib = Entity(EntityKind.LOOP, "/usr/lib/python3.13/json/decoder.py", "raw_decode", 40)
    m.update(Observation(0, 1, [Event(lib, "lib", EventKind.SAMPLE_RUN, 1, 0, 6, 30_000_000)]))
    d = m.as_dict(lib)
    assert d["iterations"] == 0 and not d["iterations_exact"] and d["iterations_error"] == 1.0
    assert d["library"] and d["run_s_total"] == pytest.approx(0.03)


def test_measure_cpu_share_of_a_whole_loop_is_its_count_over_its_rate():
    """At the session's end, a loop counted whole at an uninstrumented rate has its CPU time from
    the two (the samples would say 60%: noise), unless it was seen running other program code."""
    from gyroscope.bridges.events import StackSample
    m = Measurements()
    loop, outer = Entity(EntityKind.LOOP, "a.py", "f", 3), Entity(EntityKind.LOOP, "a.py", "main", 20)
    samples = [StackSample(1, 1, "MainThread", (), "run", 10, 0, 500_000_000)]   # 0.5 s of process CPU
    for ent in (loop, outer):
        m.update(Observation(0, 1, [Event(ent, "iter", EventKind.LOOP_ITER, 1, 0, 65, 64_000),
                                    Event(ent, "run", EventKind.SAMPLE_RUN, 1, 0, 6, 300_000_000)],
                             loop_reads=[LoopRead(ent, 199_935, 100_000, 50_000_000)]))   # 2e6 it/s
    m.update(Observation(0, 1, stacks=samples, enclosing={outer: 100_000_000}))
    assert m.as_dict(loop)["cpu_share"] == pytest.approx(0.6)            # while the session runs: sampled
    m.complete = True
    d = m.as_dict(loop)
    assert d["cpu_share"] == pytest.approx(200_000 / 2e6 / 0.5) and d["cpu_share_source"] == "iterations / rate"
    d = m.as_dict(outer)
    assert d["cpu_share"] == pytest.approx(0.6) and d["cpu_share_source"] == "samples"


def test_stacks_enclosing_loops(tmp_path):
    from gyroscope.bridges.stacks import enclosing_loops
    src = tmp_path / "p.py"
    src.write_text("def work(x):\n    return x * 2\n\n\ndef main():\n    t = 0\n    for i in range(9):\n"
                   "        t += work(i)\n    return t\n\n\ndef grid():\n    for r in range(3):\n"
                   "        for c in range(3):\n            pass\n")
    own = lambda f: f == str(src)   # noqa: E731
    leaf = Frame(str(src), "work", 2)
    caller = Frame(str(src), "main", 8)
    lib = Frame("/usr/lib/python3.13/json/decoder.py", "decode", 340)
    assert enclosing_loops((leaf, caller), own) == [Entity(EntityKind.LOOP, str(src), "main", 7)]
    assert enclosing_loops((lib, caller), own) == []          # the loop runs library code: its own time
    assert enclosing_loops((caller,), own) == []
    # a loop around the innermost frame's own loop runs that loop too
    assert enclosing_loops((Frame(str(src), "grid", 15),), own) == [Entity(EntityKind.LOOP, str(src), "grid", 13)]
    # a recursion: its frames are in the same loop, which is running other code once, not per frame
    deep = (leaf, caller, caller, caller)
    assert enclosing_loops(deep, own) == enclosing_loops(deep, own) == [Entity(EntityKind.LOOP, str(src), "main", 7)]


def test_measure_joins_counts_and_sampled_time_over_the_session_and_estimates_native_time():
    m = Measurements()
    loop = Entity(EntityKind.LOOP, "a.py", "f", 3)
    # the counts come first, the samples a chunk later (py-spy): they are joined over the session
    m.update(Observation(0, 200_000_000, [Event(loop, "iter", EventKind.LOOP_ITER, 1, 0, 65, 64_000)]))
    m.update(Observation(200_000_000, 400_000_000, [Event(loop, "iter", EventKind.LOOP_ITER, 1, 0, 30, 0)]))
    m.update(Observation(400_000_000, 600_000_000,
                         [Event(loop, "run", EventKind.SAMPLE_RUN, 1, 0, 20, 200_000_000)]))
    d = m.as_dict(loop)
    # 30 exact (0.03 ms at 1e6/s) + 1e6/s over the rest of the 0.2 s sampled: ~2e5
    assert d["iterations"] == pytest.approx(30 + 1e6 * (0.2 - 30 / 1e6), rel=1e-6)
    assert not d["iterations_exact"] and d["native_share"] == 0.0
    # a loop of 40 exactly counted iterations that ran 0.5 s: its time is in what it calls
    slow = Entity(EntityKind.LOOP, "a.py", "g", 9)
    m.update(Observation(0, 1, [Event(slow, "iter", EventKind.LOOP_ITER, 1, 0, 40, 0),
                                Event(slow, "run", EventKind.SAMPLE_RUN, 1, 0, 50, 500_000_000)]))
    d = m.as_dict(slow)
    assert d["iterations_exact"] and d["iterations"] == 40 and d["native_share"] > 0.99
    # a function of 20 exactly counted calls of 5 ms each (ast.parse: the C parser)
    fn = Entity(EntityKind.FUNCTION, "ast.py", "parse", 34)
    m.update(Observation(0, 1, [Event(fn, "call", EventKind.CALL, 1, 0, 20, 0),
                                Event(fn, "run", EventKind.SAMPLE_RUN, 1, 0, 10, 100_000_000)]))
    assert m.as_dict(fn)["native_share"] > 0.99


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


def test_rate_leaves_out_the_first_burst():
    """A loop's first burst runs beside gyroscope's own start-up (slow): the rate is the median of
    the others; a single burst is what there is."""
    from gyroscope.agent.measure import _burst_median
    ms = 1_000_000
    assert _burst_median([(40 * ms, 10e6), (10 * ms, 5e6), (100 * ms, 10.4e6), (200 * ms, 9.8e6)]) == 10e6
    assert _burst_median([(10 * ms, 5e6), (60 * ms, 10e6)]) == 10e6
    assert _burst_median([(10 * ms, 7e6)]) == 7e6


def test_own_code_follows_symlinks_like_realpath(tmp_path):
    """The own-code rule resolves a file as os.path.realpath does (its folder's resolution is
    cached): a link to the project's file is the program's, a file reached through a linked
    folder too, a link out of it is not."""
    proj, lib = tmp_path / "proj", tmp_path / "lib"
    proj.mkdir()
    lib.mkdir()
    (proj / "app.py").write_text("")
    (lib / "other.py").write_text("")
    (lib / "to_app.py").symlink_to(proj / "app.py")
    (proj / "to_other.py").symlink_to(lib / "other.py")
    (tmp_path / "proj_link").symlink_to(proj)
    own = OwnCode([str(proj)], [str(lib)])
    for f in (lib / "to_app.py", proj / "to_other.py", tmp_path / "proj_link" / "app.py", proj / "app.py",
              lib / "other.py", proj / "missing.py"):
        assert own._realpath(str(f)) == os.path.realpath(f)
    assert own.ours(str(lib / "to_app.py")) and own.ours(str(tmp_path / "proj_link" / "app.py"))
    assert not own.ours(str(proj / "to_other.py")) and not own.ours(str(lib / "other.py"))


def test_quiet_still_prints_a_profile_file_that_could_not_be_written():
    """-q hides the summary, never a lost output: a --pprof/--speedscope/--collapsed file that
    could not be written (its folder replaced by the program) said nothing under -q until stop 26."""
    import io

    from gyroscope.agent.sinks.factory import print_sink_failures
    out = io.StringIO()
    print_sink_failures({"errors": ["cannot write /x/p.pb.gz: Not a directory", "agent: something else",
                                    "sink stream.on_window: OSError: full"]}, out)
    assert out.getvalue().splitlines() == ["gyroscope: error: cannot write /x/p.pb.gz: Not a directory",
                                           "gyroscope: error: sink stream.on_window: OSError: full"]
