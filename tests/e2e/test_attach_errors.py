"""`gyroscope attach` failures: one clear line on stderr, the documented exit code, no traceback;
and the endings that are not failures (duration over, Ctrl-C, target exit)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from gyroscope.bridges import pyspy

PY = sys.executable
PROJECT = Path(__file__).resolve().parents[2]
PY_SPY = pyspy.find_py_spy()


def gyro(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "gyroscope.agent.cli", "attach", *args], cwd=PROJECT, capture_output=True, text=True,
                          timeout=timeout)


def assert_one_line_error(p: subprocess.CompletedProcess, code: int, *words: str) -> None:
    assert p.returncode == code, (p.returncode, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gyroscope: error: "), p.stderr
    assert "Traceback" not in p.stderr
    for w in words:
        assert w in lines[0], lines[0]


@pytest.fixture()
def python_target(tmp_path):
    script = tmp_path / "idler.py"
    script.write_text("import time\n\n\ndef idle():\n    while True:\n        time.sleep(0.05)\n\n\nidle()\n")
    p = subprocess.Popen([PY, str(script)])
    time.sleep(0.3)
    yield p
    p.kill()
    p.wait()


def dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_no_such_pid():
    pid = dead_pid()
    assert_one_line_error(gyro(str(pid)), pyspy.EXIT_NO_SUCH_PID, "no such process", str(pid))


def test_not_a_python_process():
    p = subprocess.Popen(["sleep", "30"])
    try:
        time.sleep(0.1)
        assert_one_line_error(gyro(str(p.pid)), pyspy.EXIT_NOT_PYTHON, "not a Python process")
    finally:
        p.kill()
        p.wait()


def test_a_wrapper_of_python_points_at_its_child():
    # like a pyenv shim or `bash -c`: the PID a user finds first is not the interpreter
    p = subprocess.Popen(["bash", "-c", f"'{PY}' -c 'import time; time.sleep(30)'; true"], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while not pyspy._children(p.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        (child,) = pyspy._children(p.pid)
        assert_one_line_error(gyro(str(p.pid)), pyspy.EXIT_NOT_PYTHON, "not a Python process",
                              f"child process {child} is Python")
    finally:
        os.killpg(p.pid, signal.SIGKILL)   # bash and its Python child
        p.wait()


def test_py_spy_not_found(python_target):
    assert_one_line_error(gyro(str(python_target.pid), "--py-spy", "/nonexistent/py-spy"), pyspy.EXIT_NO_PYSPY,
                          "py-spy not found", "/nonexistent/py-spy")


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv")
def test_permission_denied(tmp_path, python_target):
    """py-spy run as an unprivileged user (nobody) against a root-owned process: a real EPERM."""
    wrapper = tmp_path / "py-spy-as-nobody"
    wrapper.write_text(f"#!/bin/sh\nexec setpriv --reuid=65534 --regid=65534 --clear-groups {PY_SPY} \"$@\"\n")
    wrapper.chmod(0o755)
    p = gyro(str(python_target.pid), "--py-spy", str(wrapper))
    assert_one_line_error(p, pyspy.EXIT_PERMISSION, "permission denied", "ptrace", "CAP_SYS_PTRACE")


def test_unsupported_python_version_message():
    """No interpreter this py-spy cannot read is installed here: check the mapping of py-spy's message."""
    pid = os.getpid()
    e = pyspy.explain_failure(pid, "Error: Unsupported version of Python: 3.99.0\n\nStack backtrace:\n   0: x\n")
    assert e.exit_code == pyspy.EXIT_UNSUPPORTED_PYTHON
    assert "3.99.0" in e.message and pyspy.SUPPORTED_PYTHONS in e.message
    e = pyspy.explain_failure(pid, "Error: Failed to find python version from target process\n")
    assert e.exit_code == pyspy.EXIT_NOT_PYTHON
    e = pyspy.explain_failure(pid, "Error: something else broke\n\nCaused by:\n    0: details\n")
    assert e.exit_code == pyspy.EXIT_PYSPY_FAILED and "something else broke" in e.message
    assert pyspy.explain_failure(dead_pid(), "").exit_code == pyspy.EXIT_NO_SUCH_PID


def test_bad_pid_argument():
    p = gyro("notapid")
    assert p.returncode == 2 and "Traceback" not in p.stderr


def test_help_documents_exit_codes():
    p = subprocess.run([PY, "-m", "gyroscope.agent.cli", "attach", "--help"], cwd=PROJECT, capture_output=True, text=True)
    for code in range(3, 9):
        assert f"\n  {code}  " in p.stdout


def test_duration_ends_the_session_and_leaves_the_target_running(tmp_path, python_target):
    out = tmp_path / "s.json"
    p = gyro(str(python_target.pid), "--duration", "0.6", "--json", str(out))
    assert p.returncode == 0, p.stderr
    assert python_target.poll() is None
    doc = json.loads(out.read_text())
    assert doc["source"] == "attach" and doc["attach"]["target_exited"] is False
    assert doc["counters"]["samples"] >= 3
    waits = [e for e in doc["entities"] if e["kind"] in ("wait", "lock")]
    assert [(e["kind"], e["detail"], e["function"], e["line"], Path(e["file"]).name) for e in waits] == \
        [("wait", "sleep", "idle", 6, "idler.py")]
    assert waits[0]["measurements"]["wait_s_total"] > 0.3
    # the loop around the sleep runs now and then: when it is seen, it is the `while` loop of idle()
    assert all((e["kind"], e["function"], e["line"]) == ("loop", "idle", 5)
               for e in doc["entities"] if e["kind"] in ("loop", "function"))


def test_target_exit_is_not_an_error(tmp_path):
    target = subprocess.Popen([PY, "-c", "import time; time.sleep(0.8)"])
    out = tmp_path / "s.json"
    try:
        time.sleep(0.2)
        p = gyro(str(target.pid), "--json", str(out))
    finally:
        target.wait()
    assert p.returncode == 0, p.stderr
    doc = json.loads(out.read_text())
    assert doc["attach"]["target_exited"] is True and doc["errors"] == []
    assert doc["counters"]["samples"] >= 1


def test_ctrl_c_writes_the_result(tmp_path, python_target):
    out = tmp_path / "s.json"
    p = subprocess.Popen([PY, "-m", "gyroscope.agent.cli", "attach", str(python_target.pid), "--json", str(out)], cwd=PROJECT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    assert "Traceback" not in err
    doc = json.loads(out.read_text())
    assert doc["attach"]["interrupted"] is True and doc["counters"]["samples"] >= 3
    assert python_target.poll() is None      # the target did not get the signal


def test_py_spy_failing_mid_run_keeps_what_was_collected(tmp_path, python_target):
    """A py-spy that works for a few samples, then fails: exit 8, the error in the result, samples kept."""
    counter = tmp_path / "calls"
    wrapper = tmp_path / "flaky-py-spy"
    wrapper.write_text(f"""#!/bin/sh
n=$(cat {counter} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {counter}
if [ $n -le 4 ]; then exec {PY_SPY} "$@"; fi
echo "Error: Failed to copy PyInterpreterState from process" >&2
exit 1
""")
    wrapper.chmod(0o755)
    out = tmp_path / "s.json"
    p = gyro(str(python_target.pid), "--py-spy", str(wrapper), "--json", str(out))
    assert p.returncode == pyspy.EXIT_PYSPY_FAILED, p.stderr
    assert "py-spy stopped working" in p.stderr and "Traceback" not in p.stderr
    doc = json.loads(out.read_text())
    assert any("Failed to copy PyInterpreterState" in e for e in doc["errors"])
    assert doc["counters"]["samples"] >= 2
    assert python_target.poll() is None
