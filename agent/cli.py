"""The `gyroscope` command line. Each subcommand lives in its own module with
`add_arguments(parser)` and `main(args) -> int`; this file only wires them together."""
from __future__ import annotations

import os
import sys

from gyroscope.agent import __version__, errors
from gyroscope.agent.errors import GyroscopeError

TYPE_CHECKING = False   # argparse is imported once a command line needs it (agent/launch.py)
if TYPE_CHECKING:
    import argparse

# The one place where an error class becomes an exit code (the numbers each command's --help
# documents). The most specific class wins; GyroscopeError itself is 2 (bad input).
EXIT_NO_SUCH_PID = 3
EXIT_PERMISSION = 4
EXIT_NOT_PYTHON = 5
EXIT_NO_PYSPY = 6
EXIT_UNSUPPORTED_PYTHON = 7
EXIT_PYSPY_FAILED = 8
EXIT_CODES: dict[type[GyroscopeError], int] = {
    errors.UsageError: 2,
    errors.InputError: 2,
    errors.OutputError: 2,
    errors.ProgramNotFound: 1,
    errors.NoSuchProcess: EXIT_NO_SUCH_PID,
    errors.PermissionDenied: EXIT_PERMISSION,
    errors.NotPython: EXIT_NOT_PYTHON,
    errors.PySpyNotFound: EXIT_NO_PYSPY,
    errors.UnsupportedPython: EXIT_UNSUPPORTED_PYTHON,
    errors.PySpyFailed: EXIT_PYSPY_FAILED,
    errors.AttachError: EXIT_PYSPY_FAILED,
    GyroscopeError: 2,
}


def exit_code_for(error: GyroscopeError) -> int:
    """The exit code of an error: the entry of its nearest class in EXIT_CODES."""
    for cls in type(error).__mro__:
        if cls in EXIT_CODES:
            return EXIT_CODES[cls]
    return 2

# (name, module, one-line help). A module that is missing is reported cleanly, not with a traceback.
COMMANDS = [
    ("run", "gyroscope.agent.run_command", "run a Python script or module under the agent"),
    ("attach", "gyroscope.agent.attach_command", "attach to a running Python process by PID (py-spy)"),
    ("eval", "gyroscope.agent.eval_command", "score the agent's decisions on a manifest of labeled programs"),
    ("report", "gyroscope.agent.report_command", "render a session JSON as a terminal summary or an HTML report"),
    ("replay", "gyroscope.agent.replay_command", "replay a kernel ledger, optionally verifying it against a snapshot"),
]

DESCRIPTION = """\
gyroscope watches a Python program, finds its hot loops and the locks its threads wait on,
and exports what it sees through OpenTelemetry and plain files.

  gyroscope run app.py [args...]          run a script under the agent (like `python app.py`)
  gyroscope run -m package.module [args]  run a module
  gyroscope attach PID                    sample a running process with py-spy

Observe-only by default; acting on the program (thread priorities) is opt-in.
Exit codes: the program's own exit code for `run`; 2 for bad input (missing script, bad
option, unreadable file); see each command's --help for the rest.
"""


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with `only`, the other commands' modules are not imported (start-up: `gyroscope
    run` starts the program ~80 ms sooner when it does not import attach, eval, report and replay)."""
    import importlib

    from gyroscope.agent.cli_parser import Parser
    parser = Parser(prog="gyroscope", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"gyroscope {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name, help_text in COMMANDS:
        if only is not None and name != only:
            sub.add_parser(name, help=help_text)
            continue
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            if e.name != module_name:
                raise
            p = sub.add_parser(name, help=f"{help_text} (not available in this build)")
            p.set_defaults(_missing=name)
            continue
        p = sub.add_parser(name, help=help_text, description=getattr(module, "DESCRIPTION", help_text))
        module.add_arguments(p)
        p.set_defaults(_main=module.main)
    return parser


def main(argv: list[str] | None = None, site_later: bool = False) -> int:
    """`site_later`: python was started with -S by the launcher (see entry): `site` runs here,
    once the program's process is started."""
    argv = sys.argv[1:] if argv is None else argv
    launch = program = args = None
    if argv[:1] == ["run"]:   # the program's interpreter starts while gyroscope reads its options
        from gyroscope.agent.launch import adopt, early_launch, program_argv
        program = program_argv(argv[1:])
        launch = adopt(program, argv) or early_launch(program)
    if site_later:
        import site
        site.main()
    if program is not None:
        from gyroscope.agent.launch import run_options
        args = run_options(argv[1:])   # argparse (~7 ms) only when this cannot tell
    try:
        if args is not None:
            from gyroscope.agent.run_command import main as run_main
            args._main = run_main
        else:
            first = next((a for a in argv if not a.startswith("-")), None)
            parser = build_parser(only=first if first in {c[0] for c in COMMANDS} else None)
            args = parser.parse_args(argv)
            if getattr(args, "_missing", None):
                print(f"gyroscope: error: the '{args._missing}' command is not available in this build",
                      file=sys.stderr)
                return 2
            if not getattr(args, "_main", None):
                parser.print_help(sys.stderr)
                return 2
        args._launch, args._program_argv = launch, program
        return int(args._main(args) or 0)
    except GyroscopeError as e:
        print(f"gyroscope: error: {e.message}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("gyroscope: interrupted", file=sys.stderr)
        return 130
    finally:
        if launch is not None:
            launch.abort()   # the program never got its go (bad options, --help): it leaves unseen


def entry(site_later: bool = False) -> None:
    """The `gyroscope` console script: main(), then leave at once. When main returns, everything
    gyroscope writes is written and closed (files, sinks shut down, the summary printed); the
    interpreter's own teardown with numpy and the kernel loaded (~25 ms) would only keep the
    user's shell, or a pipe reading our stderr, waiting.

    `site_later`: called so by the launcher .ci/setup writes over the console script. It starts
    python with -S (no `site`: the .pth files, the user site, the venv's prefix) and puts
    gyroscope's own folder on sys.path itself; `site` then runs in main(), once the program's
    process is started (python -c pass: 16 ms, 9.5 ms with -S)."""
    status = main(site_later=site_later)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:   # a closed pipe: python would ignore it at exit too
            pass
    os._exit(status)


if __name__ == "__main__":  # pragma: no cover
    entry()
