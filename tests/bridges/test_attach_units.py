"""bridges/pyspy.py pieces: own-code paths, a real blocked program, the live view, speedscope stacks."""
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
from gyroscope.bridges.pyspy import PySpySource, find_py_spy, is_own_code
from gyroscope.bridges.stacks import Frame

PY = sys.executable
PROJECT = Path(__file__).resolve().parents[2]


def test_own_code_paths():
    assert is_own_code("/work/shared/workloads/hot_loop_numeric.py")
    assert is_own_code("/home/me/project/lib/app.py")
    assert not is_own_code("/root/.pyenv/versions/3.12.1/lib/python3.12/threading.py")
    assert not is_own_code("/usr/lib64/python3.11/queue.py")
    assert not is_own_code("/venv/lib/python3.12/site-packages/numpy/core/x.py")
    assert not is_own_code("/usr/lib/python3/dist-packages/apt/x.py")
    assert not is_own_code("<frozen importlib._bootstrap>")
    assert not is_own_code("")


@pytest.mark.slow
def test_source_on_a_real_blocked_program(tmp_path):
    """py-spy record + /proc on a script blocked on a lock held by its other thread (sleeping)."""
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
        time.sleep(0.3)
        src = PySpySource(target.pid, find_py_spy(), chunk_s=0.5)
        src.begin()
        time.sleep(1.2)
        obs = src.stop()
    finally:
        target.kill()
        target.wait()
    waits = {(e.entity.kind, e.entity.function, e.entity.line, e.entity.detail) for e in obs.events
             if e.kind == EventKind.SAMPLE_WAIT}
    assert (EntityKind.LOCK, "waiter", 7, "lock") in waits
    assert (EntityKind.WAIT, "holder", 5, "sleep") in waits
    assert not [e for e in obs.events if e.kind == EventKind.SAMPLE_RUN and e.count > 5], obs.events
    assert obs.samples >= 100 and len(obs.threads) == 2
    assert {t.name for t in obs.threads.values()} >= {"MainThread"}
    assert {s.state for s in obs.stacks} == {"wait"} or sum(s.count for s in obs.stacks if s.state == "wait") > 100
    assert src.python_version.startswith("3.")
    line = status_line(src, 1.0)
    assert "samples" in line and "wait" in line


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


def test_a_just_started_target_is_asked_again_before_it_is_called_not_python(monkeypatch):
    from gyroscope.bridges import pyspy
    from gyroscope.bridges.pyspy import EXIT_NOT_PYTHON, AttachError
    calls = []

    def flaky(failures):
        def version(py_spy, pid):
            calls.append(pid)
            if len(calls) <= failures:
                raise AttachError("process is not a Python process", EXIT_NOT_PYTHON)
            return "3.13.0"
        return version

    young = subprocess.Popen(["sleep", "5"])
    try:
        monkeypatch.setattr(pyspy, "python_version", flaky(2))
        src = PySpySource(young.pid, "py-spy")
        assert src._preflight() == "3.13.0" and len(calls) == 3
        # an old process that is not Python fails on the first answer
        calls.clear()
        monkeypatch.setattr(pyspy, "python_version", flaky(99))
        with pytest.raises(AttachError) as err:
            PySpySource(1, "py-spy")._preflight()
        assert err.value.exit_code == EXIT_NOT_PYTHON and len(calls) == 1
    finally:
        young.kill()
        young.wait()


def test_speedscope_and_window_stacks_cover_every_thread_and_frame():
    from gyroscope.bridges.pyspy_record import Span
    lib = "/usr/lib/python3.12/threading.py"
    src = PySpySource(os.getpid(), find_py_spy(), rate_hz=100, keep_stacks=True,
                      own_code=lambda f: f == "/w/app.py")
    try:
        t0 = time.monotonic_ns()
        blocked = (Frame(lib, "Condition.wait", 5), Frame("/w/app.py", "run", 9))
        running = (Frame("/w/app.py", "run", 8),)
        # no /proc reading covers these (thread 12 is not ours): a waiting stack waits, another runs
        src._on_spans([Span(0, 12, "worker", blocked, t0 - 10**9, t0 - 10**9 + 200_000_000),
                       Span(0, 12, "worker", running, t0 - 10**9 + 200_000_000, t0 - 10**9 + 270_000_000)],
                      t0 - 10**9 + 270_000_000)
        assert set(src.stacks) == {("worker (12)", blocked), ("worker (12)", running)}
        assert round(src.stacks[("worker (12)", running)], 3) == 0.07
        obs = src.poll()
        got = {(s.thread, s.thread_name, s.frames, s.state, s.count) for s in obs.stacks}
        assert got == {(12, "worker", blocked, "wait", 20), (12, "worker", running, "run", 7)}
        kinds = {(e.kind, e.entity.function, e.entity.line, e.count) for e in obs.events
                 if e.kind in (EventKind.SAMPLE_RUN, EventKind.SAMPLE_WAIT)}
        assert kinds == {(EventKind.SAMPLE_WAIT, "run", 9, 20), (EventKind.SAMPLE_RUN, "run", 8, 7)}
        assert obs.samples == 27
    finally:
        src.stop()


def test_a_library_file_is_read_for_its_loops_only_once_it_is_sampled_enough(tmp_path):
    """A library module seen under one or two running samples (an import, a call at start-up) is
    not read; at LIBRARY_FILE_MIN_SAMPLES its loop is named (from the function's source alone),
    and from then on at once."""
    from gyroscope.bridges import codemap
    from gyroscope.bridges.pyspy import LIBRARY_FILE_MIN_SAMPLES
    lib = tmp_path / "site-packages" / "somelib.py"
    lib.parent.mkdir()
    lib.write_text("def tokens(text):\n    out = []\n    for ch in text:\n        out.append(ch)\n    return out\n")
    src = PySpySource(os.getpid(), find_py_spy(), rate_hz=100, own_code=lambda f: f == "/w/app.py")
    try:
        stack = (Frame(str(lib), "tokens", 4), Frame("/w/app.py", "run", 8))
        for _ in range(LIBRARY_FILE_MIN_SAMPLES - 1):
            assert src._library_loop(stack) is None
        assert str(lib) not in codemap.DEFAULT._texts      # not even read
        ent = src._library_loop(stack)
        assert (ent.kind, ent.file, ent.function, ent.line) == ("loop", str(lib), "tokens", 3)
        assert not codemap.has_map(str(lib))     # the function's source alone was parsed
        other = (Frame(str(lib), "tokens", 4), Frame("/w/app.py", "main", 20))   # the file is read: at once
        assert src._library_loop(other) == ent
    finally:
        src.stop()
