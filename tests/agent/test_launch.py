"""agent/launch.py: the command line read without argparse, and the gate the program waits at."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import pytest
from gyroscope.agent import launch
from gyroscope.agent.cli import build_parser
from gyroscope.agent.run_command import program_of


def _run_parser() -> argparse.ArgumentParser:
    parser = build_parser(only="run")
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["run"]


def test_option_tables_are_the_parsers():
    """Every option `gyroscope run` has is in exactly the table of its arity (a new option that
    takes a value and is missing from VALUE_OPTIONS would make the early reading wrong)."""
    value, flags = set(), set()
    for action in _run_parser()._actions:
        if not action.option_strings or action.dest in ("help", "module"):
            continue
        (flags if action.nargs == 0 else value).update(action.option_strings)
    assert value == launch.VALUE_OPTIONS
    assert flags == launch.FLAG_OPTIONS


@pytest.mark.parametrize("argv", [
    ["app.py"], ["app.py", "-x", "--json", "y"], ["-q", "app.py", "a"], ["--json", "o.json", "app.py"],
    ["--json=o.json", "--window", "0.5", "app.py", "z"], ["--include", "*lib*", "-m", "pkg.mod", "-v"],
    ["-"], ["-", "a"], ["--all-code", "--no-sampling", "-m", "json.tool", "--help"],
    ["--act", "priorities", "--otlp", "http://x:4318", "app.py"], ["--js", "o.json", "--wind=1", "app.py"],
])
def test_early_reading_agrees_with_argparse(argv):
    args = _run_parser().parse_args(argv)
    expected = ["-m", *args.module] if args.module is not None else [args.script, *args.args]
    assert launch.program_argv(argv) == expected


def test_program_keeps_its_double_dash(tmp_path):
    """python app.py -- x gives the program ['--', 'x'] (argparse alone would drop the '--')."""
    script = _probe(tmp_path)
    assert launch.program_argv(["-q", script, "--", "x"]) == [script, "--", "x"]
    args = _run_parser().parse_args(["-q", script, "--", "x"])
    args._program_argv = [script, "--", "x"]
    assert program_of(args).argv == [script, "--", "x"]


@pytest.mark.parametrize("argv", [
    [], ["--help"], ["--he", "app.py"], ["-h", "app.py"], ["--no-s", "app.py"], ["-qv", "app.py"], ["--json"],
    ["--", "app.py"], ["-m"], ["-m", "-x"], ["--unknown", "app.py"], ["--json", "o.json"], ["-q=1", "app.py"],
])
def test_early_reading_leaves_the_rest_to_argparse(argv):
    assert launch.program_argv(argv) is None


def _probe(tmp_path) -> str:
    script = tmp_path / "probe.py"
    script.write_text("import sys\nprint('ran', sys.argv[1:])\n")
    return str(script)


def test_aborted_program_never_runs(tmp_path, capfd):
    """Closed without a go, the program's process leaves before its first line, saying nothing."""
    la = launch.Launch([_probe(tmp_path), "a"])
    time.sleep(0.05)   # its interpreter is waiting at the gate by now
    la.abort()
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    with pytest.raises(ChildProcessError):
        os.waitpid(la.pid, os.WNOHANG)   # reaped by abort


def test_gyroscope_refusing_an_option_starts_nothing(tmp_path):
    """An output that would overwrite the script is refused after the early launch: the program
    (which prints a line if it runs) must not run."""
    script = _probe(tmp_path)
    p = subprocess.run([sys.executable, "-m", "gyroscope.agent.cli", "run", "-q", "--json", script, script],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    assert "ran" not in p.stdout
    assert p.stderr.count("\n") == 1 and "refusing to overwrite" in p.stderr


def test_program_gets_its_double_dash(tmp_path):
    """End to end: the program's sys.argv under gyroscope run is python's."""
    script = _probe(tmp_path)
    want = subprocess.run([sys.executable, script, "--", "-x"], capture_output=True, text=True, timeout=60)
    got = subprocess.run([sys.executable, "-m", "gyroscope.agent.cli", "run", "-q", script, "--", "-x"],
                         capture_output=True, text=True, timeout=60)
    assert (got.returncode, got.stdout, got.stderr) == (want.returncode, want.stdout, want.stderr)
