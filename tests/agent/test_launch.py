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
from gyroscope.agent.options import positive_float
from gyroscope.agent.run_command import program_of


def _run_parser() -> argparse.ArgumentParser:
    parser = build_parser(only="run")
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["run"]


def test_option_tables_are_the_parsers():
    """Every option `gyroscope run` has is in exactly the table of its arity, with argparse's
    destination, default, and way of reading its value (a new option missing from the tables,
    or a changed default, would make the early reading wrong)."""
    value, flags = {}, {}
    for action in _run_parser()._actions:
        if not action.option_strings or action.dest in ("help", "module"):
            continue
        for option in action.option_strings:
            if action.nargs == 0:
                flags[option] = (action.dest, action.const)
            else:
                how = ("act" if action.choices else "append") if isinstance(action, argparse._AppendAction) else (
                    "positive" if action.type is positive_float else "str")
                assert action.type in (None, positive_float) and action.choices in (None, list(launch.ACT_CHOICES))
                value[option] = (action.dest, action.default, how)
    assert value == launch.VALUE_TABLE
    assert flags == launch.FLAG_TABLE
    assert set(value) == launch.VALUE_OPTIONS and set(flags) == launch.FLAG_OPTIONS


READINGS = [
    ["app.py"], ["app.py", "-x", "--json", "y"], ["-q", "app.py", "a"], ["--json", "o.json", "app.py"],
    ["--json=o.json", "--window", "0.5", "app.py", "z"], ["--include", "*lib*", "-m", "pkg.mod", "-v"],
    ["-"], ["-", "a"], ["--all-code", "--no-sampling", "-m", "json.tool", "--help"],
    ["--act", "priorities", "--otlp", "http://x:4318", "app.py"], ["--js", "o.json", "--wind=1", "app.py"],
    ["--rate", "250", "--rate=1e3", "--window", " 0.3 ", "--include", "a", "--include=b", "--act=priorities",
     "--act", "priorities", "--no-subprocesses", "--quiet", "-q", "--no-otlp-profiles", "--stream", "s.jsonl",
     "--trace", "t.json", "--ledger", "l.bin", "--pprof", "p.pb.gz", "--speedscope", "s.json", "--collapsed",
     "c.txt", "app.py", "--window", "x"],
    ["--no-sa", "--qu", "--coll", "c", "--speed=s", "-m", "mod"],
    ["--window", "1_000", "app.py"], ["--window", "5e-324", "app.py"],
]


def _argparse_reading(argv: list[str]) -> dict:
    d = vars(_run_parser().parse_args(argv))
    d.pop("_main", None)
    return d


@pytest.mark.parametrize("argv", READINGS)
def test_run_options_are_argparses_reading(argv):
    ns = launch.run_options(argv)
    assert ns is not None
    got = dict(vars(ns))
    assert got.pop("command") == "run"
    assert got == _argparse_reading(argv)


@pytest.mark.parametrize("argv", [
    ["--window", "0", "app.py"], ["--window", "-1", "app.py"], ["--window", "nan", "app.py"],
    ["--window", "inf", "app.py"], ["--rate", "x", "app.py"], ["--act", "nice", "app.py"], ["--json=", "app.py"],
    ["--json", "-o", "app.py"], ["--include", "-x", "app.py"], ["--window=", "app.py"],
])
def test_run_options_leave_what_argparse_refuses_or_reads_otherwise_to_it(argv):
    """A value argparse refuses (it then says why), or might read otherwise (empty, or like an
    option), is argparse's to read: run_options gives up."""
    assert launch.run_options(argv) is None


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


def test_nothing_gyroscope_runs_before_the_go_imports_argparse_or_re():
    """The modules `gyroscope run` uses until the program's gate opens import neither argparse
    nor re (~7 ms that the program waited at its gate for)."""
    code = ("import sys; from gyroscope.agent import cli, launch; launch.run_options(['-q', '--window', '0.5', 'x.py']); "
            "from gyroscope.agent import run_command, outputs; from gyroscope.agent.sinks import factory, otlp_env; "
            "from gyroscope.bridges import owncode, tmpdir; print(sorted({'argparse', 're', 'threading', 'typing'} & "
            "set(sys.modules)))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"
