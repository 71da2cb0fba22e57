"""`gyroscope run`: run a script or a module exactly as `python` would, under the agent."""
from __future__ import annotations

import argparse
import importlib.util
import os
import runpy
import signal
import sys
import threading
import traceback
from types import TracebackType
from typing import Any

from gyroscope.agent.errors import InputError, ProgramNotFound, UsageError
from gyroscope.agent.options import positive_float

DESCRIPTION = """\
Run a Python program under the agent, exactly as `python app.py [args]` or
`python -m package.module [args]` would (same argv, __main__, sys.path[0], stdin/stdout/stderr,
exit code and tracebacks). When it ends, print a summary to stderr; with --json PATH also
write the session result (schema gyroscope.session/2).

Only the program's own code is watched (files under the script's directory, or the current
directory for -m, outside site-packages and the standard library); --include adds more.

gyroscope's own options go before the script (or -m); everything after it is the program's.

Exit code: the program's own; 2 if the script does not exist or an option is wrong; 1 if the
module of -m cannot be found (as python does).
"""

_RUNPY = os.path.join(os.path.dirname(os.path.abspath(runpy.__file__)), "runpy.py")
_PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_OWN_DIRS = tuple(os.path.join(_PROJECT, d, "") for d in ("agent", "bridges", "cyext", "schedulers"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-m", dest="module", nargs=argparse.REMAINDER, metavar="MODULE [ARG]",
                        help="run a library module as a script; like python, everything after it goes "
                             "to the module")
    parser.add_argument("script", nargs="?", help="the script to run (like `python script.py`)")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the program")
    parser.add_argument("--json", metavar="PATH", help="write the session result (JSON) to PATH")
    parser.add_argument("--window", metavar="SECONDS", type=positive_float, default=0.2,
                        help="observation window (Phase OS phase window), default 0.2 s")
    parser.add_argument("--sample-interval", metavar="MS", type=positive_float, default=10.0,
                        help="stack sampling interval in milliseconds, default 10 (x3 while the program "
                             "has a single thread)")
    parser.add_argument("--include", metavar="PATTERN", action="append", default=[],
                        help="also watch code whose file matches PATTERN (fnmatch; repeatable)")
    parser.add_argument("--act", metavar="ACTUATOR", action="append", default=[], choices=["priorities"],
                        help="act on the program (opt-in, restored at exit): 'priorities' lowers the nice "
                             "value of threads competing with a hot loop or piling onto a contended lock")
    parser.add_argument("--all-code", action="store_true",
                        help="watch all Python code (libraries and stdlib too), not only the program's")
    from gyroscope.agent.sinks.factory import add_sink_arguments
    add_sink_arguments(parser)




def main(args: argparse.Namespace) -> int:
    # everything gyroscope needs later is imported now, before sys.path[0] becomes the program's
    from gyroscope.agent.session import Session
    from gyroscope.agent.sinks.factory import build_sinks
    from gyroscope.agent.summary import print_summary
    from gyroscope.bridges.sysmon import CodeFilter, RunSource

    module: str | None = None
    prog_args = list(args.args or [])
    if args.module is not None:
        if not args.module:
            raise UsageError("argument -m: expected a module name")
        module, prog_args = args.module[0], list(args.module[1:])
        root = os.getcwd()
        sys.path[0:1] = [root]
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError) as e:
            raise ProgramNotFound(f"error while finding module specification for {module!r} ({e})") from None
        if spec is None:
            raise ProgramNotFound(f"No module named {module}")
        extra = [spec.origin] if spec.origin else []
        command = ["-m", module, *prog_args]
    else:
        if args.script is None:
            raise UsageError("nothing to run: give a script (gyroscope run app.py) or -m module")
        script = args.script
        if not os.path.exists(script):
            raise InputError(f"can't open file {os.path.abspath(script)!r}: no such file")
        if os.path.isdir(script):   # like python: a directory with a __main__.py
            if not os.path.exists(os.path.join(script, "__main__.py")):
                raise ProgramNotFound(f"can't find '__main__' module in {script!r}")
            root = os.path.realpath(script)
            extra = [os.path.join(root, "__main__.py")]
        else:
            root = os.path.dirname(os.path.realpath(script))
            extra = [os.path.realpath(script)]
        command = [script, *prog_args]
    json_path = os.path.abspath(args.json) if args.json else None

    sinks = build_sinks(args, "run")
    code_filter = CodeFilter([root], include=args.include, all_code=args.all_code, extra_files=extra)
    source = RunSource(code_filter, sample_interval_s=args.sample_interval / 1000.0)
    session = Session(source, sinks, window_s=args.window, command=command,
                      ledger=getattr(args, "ledger", None),
                      act_priorities="priorities" in args.act)

    exit_code, interrupted = _run_program(session, module, command, root)

    status = exit_code
    try:
        result = session.stop(exit_code)
    except Exception as e:  # the agent failing must not change what the program did
        print(f"gyroscope: error: the agent failed while stopping: {type(e).__name__}: {e}",
              file=sys.__stderr__ or sys.stderr)
        result = None
        json_path = None
    if result is None:
        pass
    elif json_path:
        try:
            result.save(json_path)
        except (OSError, TypeError, ValueError) as e:
            try:
                print(f"gyroscope: error: cannot write {json_path}: {getattr(e, 'strerror', None) or e}",
                      file=sys.__stderr__ or sys.stderr)
            except Exception:
                pass
            status = status or 2
    err = sys.__stderr__ or sys.stderr   # ours, even if the program replaced sys.stderr
    try:
        if result is not None:
            print_summary(result, err, quiet=bool(getattr(args, "quiet", False)))
    except Exception as e:  # the summary must never hide the program's exit code
        try:
            print(f"gyroscope: error: summary failed: {type(e).__name__}: {e}", file=err)
        except Exception:
            pass
    _flush()
    if interrupted:
        # like python: die of SIGINT so that the parent sees the interrupt
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    return status


def _run_program(session: Any, module: str | None, command: list[str], root: str) -> tuple[int, bool]:
    """Run the program as python would; return (exit code, died of KeyboardInterrupt)."""
    if module is None:
        sys.argv = list(command)
        sys.path[0:1] = [root]
        target = os.path.abspath(command[0])
    else:
        sys.argv = [module, *command[2:]]   # run_module(alter_sys=True) puts the file name in argv[0]
    session.start()
    exit_code, interrupted = 0, False
    try:
        try:
            if module is None:
                runpy.run_path(target, run_name="__main__")
            else:
                runpy.run_module(module, run_name="__main__", alter_sys=True)
        finally:
            _flush()
        exit_code = _wait_for_threads()
    except SystemExit as e:
        exit_code = _system_exit_code(e)
        _wait_for_threads()
    except KeyboardInterrupt as e:
        _print_exception(e)
        exit_code, interrupted = 130, True
    except BaseException as e:
        _print_exception(e)
        exit_code = 1
        _wait_for_threads()
    return exit_code, interrupted


def _wait_for_threads() -> int:
    """Mimic python's shutdown: threading's atexit callbacks, then join the non-daemon threads."""
    try:
        atexits = getattr(threading, "_threading_atexits", None)
        if atexits:
            for call in reversed(list(atexits)):
                try:
                    call()
                except Exception:
                    traceback.print_exc()
            atexits.clear()
        me = threading.current_thread()
        while True:
            others = [t for t in threading.enumerate() if t is not me and not t.daemon and t.is_alive()]
            if not others:
                return 0
            for t in others:
                t.join()
    except KeyboardInterrupt:
        return 130


def _system_exit_code(e: SystemExit) -> int:
    code = e.code
    if code is None:
        return 0
    if isinstance(code, bool):
        return int(code)
    if isinstance(code, int):
        return code & 0xFF
    try:
        print(code, file=sys.stderr)
    except Exception:
        pass
    return 1


def _print_exception(e: BaseException) -> None:
    """Print an uncaught exception through sys.excepthook, without gyroscope's or runpy's frames."""
    tb = _trim(e.__traceback__)
    e.__traceback__ = tb
    _flush()
    try:
        sys.excepthook(type(e), e, tb)
    except Exception:
        traceback.print_exception(type(e), e, tb)
    _flush()


def _trim(tb: TracebackType | None) -> TracebackType | None:
    while tb is not None:
        fn = os.path.abspath(tb.tb_frame.f_code.co_filename)
        raw = tb.tb_frame.f_code.co_filename
        if fn == _RUNPY or raw.startswith("<frozen runpy") or fn.startswith(_OWN_DIRS):
            tb = tb.tb_next
            continue
        break
    return tb


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except Exception:
            pass
