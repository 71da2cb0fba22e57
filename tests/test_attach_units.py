"""bridges/pyspy.py pieces: py-spy's raw output, own-code paths, the live view."""
from __future__ import annotations

import os
import pty
import subprocess
import sys
import time
from pathlib import Path

import pytest
from gyroscope.agent.attach_command import status_line
from gyroscope.bridges.events import EntityKind, EventKind
from gyroscope.bridges.pyspy import PySpySource, find_py_spy, is_own_code, parse_raw
from gyroscope.bridges.stacks import Frame

PY = sys.executable
PROJECT = Path(__file__).resolve().parents[1]


def test_parse_raw_threads_and_frames():
    text = (
        "thread (8694): Thread-4 (player);Thread._bootstrap (/usr/lib/python3.12/threading.py:1030);"
        "player (/w/condition_contention.py:16);Condition.notify (/usr/lib/python3.12/threading.py:410) 3\n"
        "thread (0x7F3A2B): MainThread;<module> (/w/a b.py:9);hot (/w/a b.py:4) 46\n"
        "garbage line\n")
    rows = parse_raw(text)
    assert rows[0] == (8694, "Thread-4 (player)",
                       [Frame("/usr/lib/python3.12/threading.py", "Condition.notify", 410),
                        Frame("/w/condition_contention.py", "player", 16),
                        Frame("/usr/lib/python3.12/threading.py", "Thread._bootstrap", 1030)], 3)
    assert rows[1] == (0x7F3A2B, "MainThread", [Frame("/w/a b.py", "hot", 4), Frame("/w/a b.py", "<module>", 9)], 46)
    assert len(rows) == 2


def test_own_code_paths():
    assert is_own_code("/work/shared/workloads/hot_loop_numeric.py")
    assert is_own_code("/home/me/project/lib/app.py")
    assert not is_own_code("/root/.pyenv/versions/3.12.1/lib/python3.12/threading.py")
    assert not is_own_code("/usr/lib64/python3.11/queue.py")
    assert not is_own_code("/venv/lib/python3.12/site-packages/numpy/core/x.py")
    assert not is_own_code("/usr/lib/python3/dist-packages/apt/x.py")
    assert not is_own_code("<frozen importlib._bootstrap>")
    assert not is_own_code("")


def test_source_from_a_real_dump(tmp_path):
    """One real py-spy dump of a script blocked on a lock held by its other thread."""
    script = tmp_path / "blocked.py"
    script.write_text("import threading, time\n"
                      "lock = threading.Lock()\n"
                      "def holder():\n"
                      "    with lock:\n"
                      "        time.sleep(30)\n"
                      "def waiter():\n"
                      "    with lock:\n"
                      "        pass\n"
                      "threading.Thread(target=holder, daemon=True).start()\n"
                      "time.sleep(0.1)\n"
                      "waiter()\n")
    target = subprocess.Popen([PY, str(script)])
    try:
        time.sleep(0.5)
        src = PySpySource(target.pid, find_py_spy(), record=False)
        src.ingest(src.dump(), time.monotonic_ns())
        obs = src.poll()
    finally:
        target.kill()
        target.wait()
    waits = {(e.entity.kind, e.entity.function, e.entity.line, e.entity.detail) for e in obs.events
             if e.kind == EventKind.SAMPLE_WAIT}
    assert (EntityKind.LOCK, "waiter", 7, "lock") in waits
    assert (EntityKind.WAIT, "holder", 5, "sleep") in waits
    assert obs.samples == 1 and len(obs.threads) == 2
    assert {t.name for t in obs.threads.values()} >= {"MainThread"}
    line = status_line(src, 1.0)
    assert "1 samples" in line and "wait" in line


def test_live_view_on_a_terminal_and_not_elsewhere(tmp_path):
    script = tmp_path / "spin.py"
    script.write_text("import time\nt = time.time()\nwhile time.time() - t < 30:\n    pass\n")
    target = subprocess.Popen([PY, str(script)])
    try:
        time.sleep(0.3)
        master, slave = pty.openpty()
        p = subprocess.Popen([PY, "-m", "gyroscope.agent.cli", "attach", str(target.pid), "--duration", "1.0"], cwd=PROJECT,
                             stdout=subprocess.DEVNULL, stderr=slave)
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        p.wait(timeout=30)
        os.close(master)
        tty_err = b"".join(chunks).decode(errors="replace")
        plain = subprocess.run([PY, "-m", "gyroscope.agent.cli", "attach", str(target.pid), "--duration", "0.5"], cwd=PROJECT,
                               capture_output=True, text=True, timeout=30)
    finally:
        target.kill()
        target.wait()
    assert p.returncode == 0
    assert "\r" in tty_err and "samples" in tty_err and "hot loop <module>:3" in tty_err
    assert plain.returncode == 0 and "\r" not in plain.stderr and "samples |" not in plain.stderr


def test_subprocesses_follows_a_child_python(tmp_path):
    (tmp_path / "child.py").write_text("import time\n\n\ndef churn():\n    t = time.time()\n"
                                       "    while time.time() - t < 1.5:\n        pass\n\n\nchurn()\n")
    parent = tmp_path / "parent.py"
    parent.write_text("import subprocess, sys\nsubprocess.run([sys.executable, sys.argv[1]])\n")
    target = subprocess.Popen([PY, str(parent), str(tmp_path / "child.py")])
    out = tmp_path / "s.json"
    try:
        time.sleep(0.3)
        p = subprocess.run([PY, "-m", "gyroscope.agent.cli", "attach", str(target.pid), "--subprocesses", "-q", "--json",
                            str(out)], cwd=PROJECT, capture_output=True, text=True, timeout=60)
    finally:
        target.wait(timeout=30)
    assert p.returncode == 0, p.stderr
    import json
    doc = json.loads(out.read_text())
    loops = [e for e in doc["entities"] if e["kind"] == "loop"]
    assert loops and (loops[0]["function"], Path(loops[0]["file"]).name, loops[0]["line"]) == ("churn", "child.py", 6)
    assert any(e["kind"] == "wait" and Path(e["file"]).name == "parent.py" for e in doc["entities"])


def test_dump_stands_in_when_record_misses_the_running_thread(tmp_path):
    script = tmp_path / "hot.py"
    script.write_text("def f():\n    while True:\n        pass\n")
    trace = {"os_thread_id": 11, "thread_name": "MainThread", "active": True, "owns_gil": True,
             "frames": [{"name": "f", "filename": str(script), "line": 3}]}
    src = PySpySource(os.getpid(), find_py_spy(), rate_hz=100, wait_rate_hz=10,
                      own_code=lambda f: f == str(script))
    try:
        for _ in range(3):
            src.ingest([trace], time.monotonic_ns())
        src.ingest_running([], 10_000_000)          # record saw nothing: dump's 3 samples count x10
        runs = [e for e in src.poll().events if e.kind == EventKind.SAMPLE_RUN]
        assert [(e.entity.kind, e.entity.function, e.entity.line, e.count) for e in runs] == [("loop", "f", 2, 30)]
        assert src.empty_chunks == 1
        for _ in range(3):
            src.ingest([trace], time.monotonic_ns())
        src.ingest_running([(11, "MainThread", [Frame(str(script), "f", 3)], 25)], 10_000_000)
        runs = [e for e in src.poll().events if e.kind == EventKind.SAMPLE_RUN]
        assert [(e.count, e.duration_ns) for e in runs] == [(25, 250_000_000)]   # record's own, dump's dropped
    finally:
        src.stop()


def _flaky_dump(failures: int):
    from gyroscope.bridges.pyspy import EXIT_NOT_PYTHON, AttachError
    calls = []

    def dump():
        calls.append(1)
        if len(calls) <= failures:
            raise AttachError("process is not a Python process", EXIT_NOT_PYTHON)
        return []
    return dump, calls


def test_a_just_started_target_is_asked_again_before_it_is_called_not_python():
    from gyroscope.bridges.pyspy import EXIT_NOT_PYTHON, AttachError
    young = subprocess.Popen(["sleep", "5"])
    try:
        dump, calls = _flaky_dump(2)
        src = PySpySource(young.pid, "py-spy", dump=dump, record=False)
        src.begin()
        src.stop()
        assert len(calls) >= 3
        # an old process that is not Python fails on the first answer
        dump, calls = _flaky_dump(99)
        with pytest.raises(AttachError) as err:
            PySpySource(1, "py-spy", dump=dump, record=False).begin()
        assert err.value.exit_code == EXIT_NOT_PYTHON and len(calls) == 1
    finally:
        young.kill()
        young.wait()


def test_speedscope_stacks_cover_every_thread_and_frame(tmp_path):
    lib = "/usr/lib/python3.12/threading.py"
    src = PySpySource(os.getpid(), find_py_spy(), rate_hz=100, wait_rate_hz=10, keep_stacks=True,
                      own_code=lambda f: f == "/w/app.py")
    try:
        waiting = {"os_thread_id": 12, "thread_name": "worker", "active": False, "owns_gil": False,
                   "frames": [{"name": "Lock.acquire", "filename": lib, "line": 5},
                              {"name": "run", "filename": "/w/app.py", "line": 9}]}
        src.ingest([waiting], time.monotonic_ns(), first=True)
        src.ingest([waiting], time.monotonic_ns())
        src.ingest_running([(12, "", [Frame("/w/app.py", "run", 8)], 7)], 10_000_000)
        stacks = src.stacks
        assert set(stacks) == {("worker (12)", (Frame(lib, "Lock.acquire", 5), Frame("/w/app.py", "run", 9))),
                               ("worker (12)", (Frame("/w/app.py", "run", 8),))}
        assert stacks[("worker (12)", (Frame("/w/app.py", "run", 8),))] == 0.07
        # the GIL holder is left to py-spy record; when record's chunk comes back empty, dump's stack counts
        running = {"os_thread_id": 12, "thread_name": "worker", "active": True, "owns_gil": True,
                   "frames": [{"name": "run", "filename": "/w/app.py", "line": 7}]}
        src.ingest([running], time.monotonic_ns())
        assert ("worker (12)", (Frame("/w/app.py", "run", 7),)) not in src.stacks
        src.ingest_running([], 10_000_000)
        assert src.stacks[("worker (12)", (Frame("/w/app.py", "run", 7),))] > 0
        # the same stacks reach the session as Observation.stacks (the profiles' input), with their state
        obs = src.poll()
        got = {(s.frames[0].line, s.state): s for s in obs.stacks}
        assert set(got) == {(5, "wait"), (8, "run"), (7, "run")}
        assert got[(8, "run")].count == 7 and got[(8, "run")].wall_ns == 70_000_000
        assert all(s.pid == os.getpid() and s.thread == 12 and s.thread_name == "worker" for s in obs.stacks)
        assert src.poll().stacks == []
    finally:
        src.stop()
