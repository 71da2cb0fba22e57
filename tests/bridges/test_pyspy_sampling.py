"""The out-of-process sampler: py-spy record chunks (chrometrace), CPU attribution from /proc,
fresh targets (run mode), and `gyroscope attach` with several PIDs, --match, --continuous."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from gyroscope.bridges import procfs
from gyroscope.bridges.cpu_attribution import CpuHistory, attribute
from gyroscope.bridges.events import EventKind, Frame
from gyroscope.bridges.pyspy import PySpySource
from gyroscope.bridges.pyspy_record import Span, parse_chrometrace

PY = sys.executable
PROJECT = Path(__file__).resolve().parents[2]
MS = 1_000_000


def test_chrometrace_spans_drop_labels_and_shim_frames():
    def ev(ph, name, ts, file="", line=0, tid=7):
        return {"ph": ph, "name": name, "ts": ts, "pid": 100, "tid": tid, "args": {"filename": file, "line": line}}
    events = [ev("B", "thread (101): worker", 10), ev("B", "__init__", 10, "/w/app.py", 0),
              ev("B", "run", 10, "/w/app.py", 5), ev("B", "inner", 10, "/w/app.py", 9),
              ev("E", "inner", 30, "/w/app.py", 9), ev("B", "other", 30, "/w/app.py", 12),
              ev("E", "other", 50, "/w/app.py", 12), ev("E", "run", 50, "/w/app.py", 5),
              ev("E", "__init__", 50, "/w/app.py", 0), ev("E", "thread (101): worker", 50)]
    spans = parse_chrometrace(events, origin_ns=1_000_000)
    assert [(s.pid, s.tid, s.thread_name, [(f.function, f.line) for f in s.frames], s.t0_ns, s.t1_ns)
            for s in spans] == [(100, 101, "worker", [("inner", 9), ("run", 5)], 1_010_000, 1_030_000),
                                (100, 101, "worker", [("other", 12), ("run", 5)], 1_030_000, 1_050_000)]


def _span(tid, frames, t0, t1):
    return Span(1, tid, f"t{tid}", tuple(frames), t0, t1)


def test_attribution_run_gil_wait_and_busy_machine():
    hot = [Frame("/w/a.py", "spin", 3)]
    blocked = [Frame("/lib/python3.13/threading.py", "Event.wait", 655), Frame("/w/a.py", "idle", 8)]
    h = CpuHistory()
    # 4 threads over 100 ms: 1 spins on a CPU (90 ms CPU, 10 ms run-queue), 2 waits for the GIL
    # (5 ms CPU), 3 is blocked in Event.wait, 4 is "waiting" by its stack but burns 100 ms of CPU
    h.add(0, {1: (0, 0), 2: (0, 0), 3: (0, 0), 4: (0, 0)})
    h.add(100 * MS, {1: (90 * MS, 10 * MS), 2: (5 * MS, 0), 3: (0, 0), 4: (100 * MS, 0)})
    spans = [_span(1, hot, 0, 100 * MS), _span(2, hot, 0, 100 * MS), _span(3, blocked, 0, 100 * MS),
             _span(4, blocked, 0, 100 * MS)]
    got = {p.span.tid: p for p in attribute(spans, h, lambda f: f[0].function == "Event.wait")}
    assert (got[1].run_ns, got[1].gil_ns, got[1].wait_ns, got[1].cpu_ns) == (100 * MS, 0, 0, 90 * MS)
    assert (got[2].run_ns, got[2].cpu_ns) == (5 * MS, 5 * MS) and got[2].gil_ns == 95 * MS
    assert (got[3].run_ns, got[3].gil_ns, got[3].wait_ns) == (0, 0, 100 * MS)
    assert (got[4].run_ns, got[4].wait_ns, got[4].cpu_ns) == (100 * MS, 0, 100 * MS)
    # a span outside every reading: waiting stacks wait, others run for their wall time
    (p,) = attribute([_span(5, hot, 200 * MS, 210 * MS)], h, lambda f: False)
    assert (p.run_ns, p.cpu_ns) == (10 * MS, 10 * MS)
    # four threads sampled over the same 40 ms after the last reading ran one at a time
    after = attribute([_span(tid, hot, 300 * MS, 340 * MS) for tid in (5, 6, 7, 8)], h, lambda f: False)
    assert sum(p.run_ns for p in after) == 40 * MS and all(p.gil_ns == 30 * MS for p in after)
    h.trim(150 * MS)
    assert h.times == [100 * MS]


def test_attribution_a_gil_holder_left_out_of_the_samples_explains_the_wait():
    """The program's only sampled thread ran 60 of 100 ms while the bridge's shipper (not sampled)
    used 40 ms of CPU holding the GIL: the main thread waited for the GIL, not in a C call."""
    hot = [Frame("/w/a.py", "spin", 3)]
    h = CpuHistory()
    h.add(0, {1: (0, 0), 9: (0, 0)})
    h.add(100 * MS, {1: (60 * MS, 0), 9: (40 * MS, 0)})
    spans = [_span(1, hot, 0, 100 * MS)]
    (before,) = attribute(spans, h, lambda f: False)
    assert (before.run_ns, before.gil_ns, before.wait_ns) == (60 * MS, 0, 40 * MS)
    (p,) = attribute(spans, h, lambda f: False, gil_holders={9})
    assert (p.run_ns, p.gil_ns, p.wait_ns) == (60 * MS, 40 * MS, 0)


def test_attribution_a_line_that_calls_nothing_is_not_blocked_in_a_call(tmp_path):
    """Off the CPU at `s += i * i` (no call on the line), with no other thread running: the thread
    waited for the interpreter lock (a GIL holder no sampler sees), never in a call; a line with a
    call, or a `for` over something that may block, keeps the unexplained time as a wait."""
    from gyroscope.bridges.stacks import calls_nothing
    src = tmp_path / "p.py"
    src.write_text("def f(n, f2):\n    s = 0\n    for i in range(n):\n        s += i * i  # sum\n"
                   "    for line in f2:\n        s += len(line)\n    return s\n")
    body, header, call = Frame(str(src), "f", 4), Frame(str(src), "f", 5), Frame(str(src), "f", 6)
    assert calls_nothing([body]) and not calls_nothing([header]) and not calls_nothing([call])
    assert not calls_nothing([Frame(str(tmp_path / "missing.py"), "f", 1)]) and not calls_nothing([])
    h = CpuHistory()
    h.add(0, {1: (0, 0)})
    h.add(100 * MS, {1: (60 * MS, 0)})
    for frame, want in ((body, (60 * MS, 40 * MS, 0)), (call, (60 * MS, 0, 40 * MS))):
        (p,) = attribute([_span(1, [frame], 0, 100 * MS)], h, lambda f: False, no_call=calls_nothing)
        assert (p.run_ns, p.gil_ns, p.wait_ns) == want


def _watch(script: Path, seconds: float | None = None, **kw) -> tuple[list, PySpySource, subprocess.Popen]:
    target = subprocess.Popen([PY, str(script)], cwd=script.parent)
    src = PySpySource(target.pid, fresh=True, **kw)
    src.start()
    obs = []
    t_end = time.monotonic() + seconds if seconds else None
    try:
        while target.poll() is None and (t_end is None or time.monotonic() < t_end):
            time.sleep(0.2)
            obs.append(src.poll())
        obs.append(src.stop())
    finally:
        if target.poll() is None:
            target.kill()
        target.wait()
    return obs, src, target


@pytest.mark.slow
def test_cpu_goes_to_the_spinning_thread_not_the_sleeping_one(tmp_path):
    script = tmp_path / "spin_and_sleep.py"
    script.write_text("import threading, time\n"
                      "def sleeper():\n"
                      "    for _ in range(150):\n"
                      "        time.sleep(0.01)\n"
                      "def spin():\n"
                      "    t = time.perf_counter()\n"
                      "    while time.perf_counter() - t < 1.5:\n"
                      "        pass\n"
                      "th = threading.Thread(target=sleeper, name='sleeper')\n"
                      "th.start()\n"
                      "spin()\n"
                      "th.join()\n")
    obs, src, target = _watch(script)
    assert target.returncode == 0 and src.target_exited
    cpu: dict[str, int] = {}
    for o in obs:
        for s in o.stacks:
            cpu[s.thread_name] = cpu.get(s.thread_name, 0) + s.cpu_ns
    total = sum(cpu.values())
    assert total > 0.3e9, cpu
    assert cpu.get("MainThread", 0) / total >= 0.9, cpu
    runs = {}
    for o in obs:
        for e in o.events:
            if e.kind == EventKind.SAMPLE_RUN:
                runs[(e.entity.function, e.entity.line)] = runs.get((e.entity.function, e.entity.line), 0) + e.duration_ns
    assert max(runs, key=runs.get) == ("spin", 7), runs
    waits = {(e.entity.function, e.entity.detail) for o in obs for e in o.events if e.kind == EventKind.SAMPLE_WAIT}
    assert ("sleeper", "sleep") in waits


@pytest.mark.slow
def test_no_gap_between_chunks(tmp_path):
    script = tmp_path / "spin3.py"
    script.write_text("import time\nt = time.perf_counter()\nwhile time.perf_counter() - t < 3.0:\n    pass\n")
    obs, src, target = _watch(script, rate_hz=100, chunk_s=0.8, overlap_s=0.3)
    assert src.record.chunks >= 4          # 0.6, 0.8, 0.8, 0.8 ...: several chunk boundaries
    main = sum(s.count for o in obs for s in o.stacks if s.thread == target.pid)
    covered = (src.record.covered_until - src.record.first_sample_ns) / 1e9
    assert covered >= 2.9
    assert abs(main - 100 * covered) <= 0.05 * 100 * covered, (main, covered)
    assert src.gap_ns <= 0.05 * covered * 1e9
    assert sum(o.samples for o in obs) == pytest.approx(main, rel=0.05)
    # two py-spys sample at once only until the new one says it samples (+30 ms), not overlap_s
    assert src.record.overlaps >= 3 and src.record.overlap_ns / src.record.overlaps < 0.2e9


@pytest.mark.slow
def test_a_fresh_short_program_gets_its_samples(tmp_path):
    """Run mode: py-spy pointed at a child that has just been spawned; a 0.15 s loop."""
    script = tmp_path / "short.py"
    script.write_text("import time\n\n\ndef hot():\n    t = time.perf_counter()\n    n = 0\n"
                      "    while time.perf_counter() - t < 0.15:\n        n += 1\n\n\nhot()\n")
    obs, src, target = _watch(script)
    assert target.returncode == 0 and src.failure is None
    assert not [e for o in obs for e in o.errors], [e for o in obs for e in o.errors]
    loop = sum(e.count for o in obs for e in o.events
               if e.kind == EventKind.SAMPLE_RUN and (e.entity.function, e.entity.line) == ("hot", 7))
    assert loop >= 10, loop


def _gyro(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([PY, "-m", "gyroscope.agent.cli", "attach", *args], cwd=PROJECT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _service(tmp_path: Path, name: str, body: str = "work") -> Path:
    script = tmp_path / name
    script.write_text("import time\n\n\ndef work():\n    t = time.perf_counter()\n"
                      "    while time.perf_counter() - t < 0.05:\n        pass\n\n\n"
                      "def rest():\n    time.sleep(0.05)\n\n\n"
                      f"while True:\n    {body}()\n")
    return script


@pytest.mark.slow
def test_continuous_stops_on_sigterm_with_the_session_written(tmp_path):
    svc = subprocess.Popen([PY, str(_service(tmp_path, "svc.py"))])
    out = tmp_path / "s.json"
    try:
        time.sleep(0.3)
        g = _gyro(str(svc.pid), "--continuous", "-q", "--json", str(out))
        time.sleep(2.5)
        g.send_signal(signal.SIGTERM)
        _, err = g.communicate(timeout=30)
    finally:
        svc.kill()
        svc.wait()
    assert g.returncode == 0, err
    assert "Traceback" not in err
    doc = json.loads(out.read_text())
    assert doc["attach"]["interrupted"] is True and doc["attach"]["continuous"] is True
    assert doc["attach"]["target_exited"] is False and doc["counters"]["samples"] >= 100
    assert any(e["function"] == "work" and e["kind"] == "loop" for e in doc["entities"])


@pytest.mark.slow
def test_several_pids_and_match(tmp_path):
    a = subprocess.Popen([PY, str(_service(tmp_path, "svc_alpha.py", "work"))])
    b = subprocess.Popen([PY, str(_service(tmp_path, "svc_beta.py", "rest"))])
    try:
        time.sleep(0.3)
        assert set(procfs.matching_pids(r"svc_(alpha|beta)\.py")) == {a.pid, b.pid}
        runs = {}
        for how in ([str(a.pid), str(b.pid)], ["--match", r"svc_(alpha|beta)\.py"]):
            out = tmp_path / "s.json"
            g = _gyro(*how, "--duration", "1.5", "-q", "--json", str(out))
            _, err = g.communicate(timeout=60)
            assert g.returncode == 0, err
            doc = json.loads(out.read_text())
            assert sorted(doc["attach"]["pids"]) == sorted([a.pid, b.pid])
            files = {(Path(e["file"]).name, e["function"], e["kind"]) for e in doc["entities"]}
            assert ("svc_alpha.py", "work", "loop") in files and ("svc_beta.py", "rest", "wait") in files, files
            runs[how[0]] = doc
        assert runs["--match"]["attach"]["match"] == r"svc_(alpha|beta)\.py"
    finally:
        for p in (a, b):
            p.kill()
            p.wait()


def test_match_with_nothing_to_match_is_one_line():
    g = _gyro("--match", "no-such-program-xyz-123", "--duration", "0.5")
    _, err = g.communicate(timeout=60)
    assert g.returncode == 3 and err.count("\n") == 1 and "no Python process matches" in err, err
    g = _gyro("--duration", "0.5")
    _, err = g.communicate(timeout=60)
    assert g.returncode == 2 and "Traceback" not in err


def test_ptrace_denied_names_a_cause(monkeypatch):
    reason = procfs.ptrace_denied_reason(1)
    assert any(w in reason for w in ("ptrace_scope", "CAP_SYS_PTRACE", "user", "seccomp")), reason

    def case(euid, cap, scope, owner):
        monkeypatch.setattr(procfs.os, "geteuid", lambda: euid)
        monkeypatch.setattr(procfs, "has_cap_sys_ptrace", lambda: cap)
        monkeypatch.setattr(procfs, "ptrace_scope", lambda: scope)
        monkeypatch.setattr(procfs, "_uids", lambda pid: (owner, owner))
        return procfs.ptrace_denied_reason(42)
    assert "belongs to user 0" in case(1000, False, 0, 0) and "sudo" in case(1000, False, 0, 0)
    assert "ptrace_scope is 1" in case(1000, False, 1, 1000) and "ptrace_scope=0" in case(1000, False, 1, 1000)
    assert "ptrace_scope is 2" in case(1000, False, 2, 1000)
    assert "ptrace_scope is 3" in case(0, True, 3, 0)
    assert "CAP_SYS_PTRACE" in case(0, False, None, 0) and "--cap-add SYS_PTRACE" in case(0, False, None, 0)
    assert "seccomp" in case(0, True, None, 0)


@pytest.mark.slow
def test_match_continuous_picks_up_a_restarted_service(tmp_path):
    script = _service(tmp_path, "svc_restart.py")
    first = subprocess.Popen([PY, str(script)])
    out = tmp_path / "s.json"
    second = None
    try:
        time.sleep(0.3)
        g = _gyro("--match", r"svc_restart\.py", "--continuous", "-q", "--json", str(out))
        time.sleep(1.5)
        first.kill()
        first.wait()
        second = subprocess.Popen([PY, str(script)])
        time.sleep(3.5)              # the process table is scanned every 2 s
        g.send_signal(signal.SIGTERM)
        _, err = g.communicate(timeout=30)
    finally:
        for p in (first, second):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    assert g.returncode == 0, err
    doc = json.loads(out.read_text())
    assert doc["attach"]["pids"] == sorted([first.pid, second.pid]), (doc["attach"], err)
    # one entity per process (Entity.pid tells them apart)
    assert len([e for e in doc["entities"] if e["function"] == "work" and e["kind"] == "loop"]) == 2, doc["entities"]


@pytest.mark.slow
def test_state_stays_bounded_while_threads_come_and_go(tmp_path):
    """A service that starts a short thread every 10 ms: what the source keeps does not grow."""
    script = tmp_path / "churn.py"
    script.write_text("import threading, time\n\n\ndef job():\n    time.sleep(0.005)\n\n\n"
                      "while True:\n    threading.Thread(target=job).start()\n    time.sleep(0.01)\n")
    target = subprocess.Popen([PY, str(script)])
    try:
        time.sleep(0.3)
        src = PySpySource(target.pid, chunk_s=0.5)
        src.begin()
        starts = ends = 0
        sizes = []
        for _ in range(20):
            time.sleep(0.2)
            obs = src.poll()
            starts += sum(1 for e in obs.events if e.kind == EventKind.THREAD_START)
            ends += sum(1 for e in obs.events if e.kind == EventKind.THREAD_END)
            sizes.append((len(src._threads), len(src._history.times), len(src._gone)))
        src.stop()
    finally:
        target.kill()
        target.wait()
    # ends are told once the stacks up to the moment a thread was missed in /proc are in (a chunk late)
    assert starts >= 20 and ends >= 0.7 * starts, (starts, ends)
    # threads that ended are forgotten once their stacks are in (a chunk late): no growth
    assert max(s[0] for s in sizes[14:]) <= max(s[0] for s in sizes[4:14]) + 20, sizes
    assert max(s[1] for s in sizes) <= 3.0 / 0.05 + 30, sizes
    assert max(s[2] for s in sizes) <= 200, sizes


def test_attribution_threads_without_a_reading_share_the_process_rest():
    """Short-lived threads (born and ended between two readings) and threads py-spy names with a
    stale id have no /proc reading: they get the process's CPU that the readings do not explain."""
    hot = [Frame("/w/a.py", "serve", 3)]
    h = CpuHistory()
    h.add(0, {-1: (0, 0), 1: (0, 0)})
    h.add(200 * MS, {-1: (150 * MS, 0), 1: (50 * MS, 0)})    # 100 ms of CPU in threads now gone
    spans = [_span(1, hot, 0, 200 * MS), _span(77, hot, 0, 60 * MS), _span(78, hot, 100 * MS, 160 * MS)]
    got = {p.span.tid: p for p in attribute(spans, h, lambda f: False)}
    assert got[1].cpu_ns == 50 * MS
    # 100 ms of CPU over 120 ms of their samples: 5/6 running, the rest waits for the GIL held by 1
    assert got[77].cpu_ns + got[78].cpu_ns == 100 * MS
    assert (got[77].run_ns, got[77].gil_ns) == (50 * MS, 10 * MS)


def test_a_recorder_samples_faster_in_its_first_two_chunks_only(tmp_path):
    """4x in the first chunk (0.3 s: a 0.15 s program gets its decision), 2x in the second
    (0.3-0.8 s; until stop 27 a run was at 4x until 1.5 s, and each sample costs CPU too), then
    the nominal rate, moved by the jitter cycle. An attach keeps 4x in its second chunk."""
    from gyroscope.bridges.pyspy_record import JITTER_X, ChunkedRecorder
    rec = ChunkedRecorder("py-spy", 1, 100, lambda spans, t: None, lambda m: None, str(tmp_path), fresh=True)
    assert (rec.first_chunk_s, rec.overlap_s) == (0.25, 0.15)   # chunks start at 0, 0.3, 0.8 s
    assert rec.chunk_rate_hz(1, 0.0) == 400
    assert rec.chunk_rate_hz(2, 0.3) == rec.chunk_rate_hz(2, 0.35) == 200
    assert rec.chunk_rate_hz(3, 0.8) == 100 * JITTER_X[2]
    attach = ChunkedRecorder("py-spy", 1, 100, lambda spans, t: None, lambda m: None, str(tmp_path))
    assert (attach.chunk_rate_hz(1, 0.0), attach.chunk_rate_hz(2, 0.5), attach.chunk_rate_hz(3, 1.5)) == (400, 400, 200)
