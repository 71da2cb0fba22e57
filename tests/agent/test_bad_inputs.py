"""Bad input to any command: one line on stderr, the documented exit code, never a traceback.

Each case runs `gyroscope` as a user would (a subprocess of `python -m gyroscope.agent.cli`).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from gyroscope.cyext import law
from gyroscope.cyext.ledger import LedgerWriter

from tests.conftest import one_line_error

PY = sys.executable
PROJECT = Path(__file__).resolve().parents[2]


def gyro(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    e["PYTHONPATH"] = str(PROJECT)
    e.update(env or {})
    return subprocess.run([PY, "-m", "gyroscope.agent.cli", *args], cwd=cwd, env=e, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture()
def app(tmp_path: Path) -> Path:
    script = tmp_path / "app.py"
    script.write_text("print('program ran')\n")
    return script


def _bad_ledger(tmp_path: Path, case: str) -> tuple[str, str]:
    """(--ledger value, a word the error must contain)."""
    if case == "missing folder":
        return str(tmp_path / "no" / "such" / "k.ledger"), "no such directory"
    if case == "directory":
        return str(tmp_path), "is a directory"
    if case == "not a ledger":
        (tmp_path / "notes.txt").write_text("my notes\n")
        return str(tmp_path / "notes.txt"), "not a gyroscope ledger"
    if case == "/proc/version":
        return "/proc/version", "/proc/version"
    if case == "foreign ledger":   # a real GYRL ledger of another pool: refused when the session opens it
        path = tmp_path / "other.ledger"
        LedgerWriter(path, 1, sorted(law.N_BUCKETS)[0]).close()
        return str(path), "capacity 1"
    raise AssertionError(case)


LEDGER_CASES = ["missing folder", "directory", "not a ledger", "/proc/version", "foreign ledger"]


@pytest.mark.parametrize("case", LEDGER_CASES)
def test_run_bad_ledger(tmp_path, app, case):
    ledger, word = _bad_ledger(tmp_path, case)
    before = Path(ledger).read_bytes() if case in ("not a ledger", "foreign ledger") else None
    p = gyro("run", "--ledger", ledger, str(app), cwd=tmp_path)
    one_line_error(p, 2, word)
    assert "program ran" not in p.stdout
    if before is not None:
        assert Path(ledger).read_bytes() == before


def _pyspy_on(pid: int) -> list[str]:
    """Command lines of py-spy processes watching `pid`."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            argv = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [a.decode(errors="replace") for a in argv]
        if words and os.path.basename(words[0]) == "py-spy" and str(pid) in words:
            found.append(" ".join(words))
    return found


@pytest.mark.parametrize("case", LEDGER_CASES)
def test_attach_bad_ledger_stops_its_py_spy(tmp_path, case):
    from gyroscope.bridges import pyspy
    try:
        pyspy.find_py_spy()
    except pyspy.AttachError:
        pytest.skip("py-spy not installed")
    target = tmp_path / "idler.py"
    target.write_text("import time\nwhile True:\n    time.sleep(0.05)\n")
    prog = subprocess.Popen([PY, str(target)])
    try:
        time.sleep(0.3)
        ledger, word = _bad_ledger(tmp_path, case)
        p = gyro("attach", str(prog.pid), "--duration", "5", "--ledger", ledger, cwd=tmp_path)
        if p.returncode == pyspy.EXIT_PERMISSION:
            pytest.skip("no ptrace permission here")
        one_line_error(p, 2, word)
        time.sleep(0.2)
        assert _pyspy_on(prog.pid) == []
        assert prog.poll() is None   # the target is untouched
    finally:
        prog.kill()
        prog.wait()


def test_attach_refuses_the_targets_script_as_an_output(tmp_path):
    target = tmp_path / "idler.py"
    target.write_text("import time\nwhile True:\n    time.sleep(0.05)\n")
    before = target.read_bytes()
    prog = subprocess.Popen([PY, "idler.py"], cwd=tmp_path)
    try:
        time.sleep(0.3)
        p = gyro("attach", str(prog.pid), "--duration", "1", "--json", "idler.py", cwd=tmp_path)
        one_line_error(p, 2, "the target's script")
        assert target.read_bytes() == before and _pyspy_on(prog.pid) == []
    finally:
        prog.kill()
        prog.wait()


def test_attach_messages_name_no_temporary_file():
    import tempfile

    from gyroscope.agent.attach_command import _scrub_temp
    msg = _scrub_temp(f"Error: cannot write {tempfile.gettempdir()}/gyroscope-attach-x1/chunk3.txt: No space left")
    assert "gyroscope-attach" not in msg and msg.endswith(": No space left")


@pytest.mark.parametrize("field,value,word", [
    ("duration_s", "abc", "duration_s must be a number"),
    ("pid", "x", "pid must be an integer"),
    ("command", [1, 2], "command[0] must be a string"),
    ("counters", {"samples": "many"}, "counters.samples"),
    ("entities", [1], "entities[0] must be an object"),
    ("entities", [{"id": 1, "kind": "loop", "measurements": {"cpu_share": "0.5"}}], "measurements.cpu_share"),
    ("decisions", [{"action": "specialize_hot_loop", "entity_id": 1, "line": "12"}], "decisions[0].line"),
    ("threads", [{"id": 1, "name": 5}], "threads[0].name"),
    ("errors", [{"not": "a string"}], "errors[0]"),
])
@pytest.mark.parametrize("html", [False, True])
def test_report_of_a_session_with_wrong_types(tmp_path, field, value, word, html):
    from tests import report_fixtures as fx
    doc = fx.session()
    doc[field] = value
    path = tmp_path / "s.json"
    path.write_text(json.dumps(doc))
    extra = ["--html", str(tmp_path / "r.html")] if html else []
    p = gyro("report", str(path), *extra, cwd=tmp_path)
    one_line_error(p, 2, word)
    assert not (tmp_path / "r.html").exists()


@pytest.mark.parametrize("argv", [
    ["run", "--window", "inf"], ["run", "--window", "0"], ["run", "--window", "-1"], ["run", "--window", "nan"],
    ["run", "--sample-interval", "inf"], ["attach", "--duration", "inf", "1"], ["attach", "--rate", "nan", "1"],
    ["eval", "--timeout", "nan", "m.json"], ["eval", "--timeout", "inf", "m.json"],
    ["eval", "--timeout", "0", "m.json"],
])
def test_float_options_refuse_nan_inf_and_non_positive(tmp_path, app, argv):
    if argv[0] == "run":
        argv = [*argv, str(app)]
    p = gyro(*argv, cwd=tmp_path)
    one_line_error(p, 2, argv[1])
    assert "program ran" not in p.stdout


def test_replay_of_a_truncated_ledger_exits_as_its_help_says(tmp_path):
    from gyroscope.cyext import CellPool
    path = tmp_path / "k.ledger"
    pool = CellPool(capacity=16, ledger=str(path))
    cid = pool.allocate()
    pool.ingest([cid] * 4, [[1, 2, 3, 4]] * 4)
    pool.close()
    path.write_bytes(path.read_bytes()[:-3])
    help_text = gyro("replay", "--help", cwd=tmp_path).stdout
    assert "3 the ledger has a truncated tail" in " ".join(help_text.split())
    p = gyro("replay", str(path), cwd=tmp_path)
    assert p.returncode == 3 and "Traceback" not in p.stderr, p.stderr
    assert "truncated tail: 5 trailing bytes" in p.stdout
    p = gyro("replay", str(path), "--snapshot", str(path), cwd=tmp_path)
    one_line_error(p, 2, "is the ledger")


def test_attach_pid_1_does_not_say_no_such_process(tmp_path):
    p = gyro("attach", "1", "--duration", "0.5", cwd=tmp_path)
    assert p.returncode != 3 and "no such process" not in p.stderr and "Traceback" not in p.stderr, p.stderr
    if p.returncode != 0:
        one_line_error(p, p.returncode)


@pytest.mark.parametrize("env", [
    {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
    {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"},
    {"OTEL_EXPORTER_OTLP_LOGS_PROTOCOL": "http/json"},
])
def test_otlp_protocol_other_than_http_protobuf_is_refused(tmp_path, app, env):
    p = gyro("run", "--otlp", "http://127.0.0.1:9", str(app), cwd=tmp_path, env=env)
    var = next(iter(env))
    one_line_error(p, 2, var, "http/protobuf only")
    assert "program ran" not in p.stdout
    # per-signal endpoint only: a protocol for another signal does not matter
    p = gyro("run", "-q", str(app), cwd=tmp_path,
             env={"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://127.0.0.1:9/v1/metrics",
                  "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http/protobuf"})
    assert p.returncode == 0 and "program ran" in p.stdout


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_quiet_still_reports_an_otlp_failure_in_one_line(tmp_path, app):
    p = gyro("run", "-q", "--otlp", f"http://127.0.0.1:{_closed_port()}", str(app), cwd=tmp_path)
    assert p.returncode == 0 and "program ran" in p.stdout
    one_line_error(p, 0, "otlp export to http://127.0.0.1:")


def test_quiet_still_reports_a_sink_failure_in_one_line(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    script = tmp_path / "clobber.py"   # the program puts a file where the trace's folder was
    script.write_text(f"import shutil\nshutil.rmtree({str(out)!r})\nopen({str(out)!r}, 'w').close()\n")
    p = gyro("run", "-q", "--trace", str(out / "t.json"), str(script), cwd=tmp_path)
    line = one_line_error(p, 0, "sink trace.close", str(out / "t.json"))
    assert ".tmp" not in line


def test_eval_names_no_temporary_file(tmp_path):
    # a program that kills itself: its session is still written (the gyroscope process writes it)
    (tmp_path / "dies.py").write_text("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    (tmp_path / "m.json").write_text(json.dumps({"workloads": [{"script": "dies.py", "expect": [{"action": "specialize_hot_loop", "function": "f"}],
                                                                "forbid": []}]}))
    p = gyro("eval", str(tmp_path / "m.json"), cwd=tmp_path, timeout=120)
    assert p.returncode == 1 and "Traceback" not in p.stderr + p.stdout
    assert "gyroscope-eval-" not in p.stdout + p.stderr and ".json" not in p.stdout
    assert "FAIL" in p.stdout and "found:    nothing" in p.stdout
