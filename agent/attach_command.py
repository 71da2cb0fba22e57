"""`gyroscope attach PID`: watch a running Python process from outside, with py-spy."""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time

from gyroscope.agent.errors import GyroscopeError
from gyroscope.agent.options import positive_float

TYPE_CHECKING = False   # not `from typing import ...`: ~2 ms before py-spy starts sampling
if TYPE_CHECKING:
    from typing import Any, TextIO

DESCRIPTION = """\
Attach to running Python processes and watch them with py-spy (no change to the targets, no
restart): which loops are hot, which locks their threads wait on. Runs until --duration ends,
Ctrl-C / SIGTERM, or the targets exit (with --continuous and --match: until Ctrl-C / SIGTERM);
then prints a summary to stderr and, with --json PATH, writes the session result (schema
gyroscope.session/2, "source": "attach").

`py-spy record` (non-blocking: the target is never paused; --rate, default 100 Hz) samples every
thread's stack; each thread's CPU time from /proc says which samples were running, waiting for
the GIL, or blocked. The program's own code is every file outside its standard library and
site-packages. gyroscope and its py-spy run at nice +10: where they compete with the targets for
a core, the targets win.

Exit codes:
  0  the session ended normally (duration over, Ctrl-C, or the target exited)
  2  bad option
  3  no such process (or no Python process matches --match)
  4  permission denied (ptrace): the message names the cause - another user,
     kernel.yama.ptrace_scope, or a missing CAP_SYS_PTRACE - and what to run
  5  the process is not a Python process
  6  py-spy not found
  7  the target's Python version cannot be read by this py-spy
  8  py-spy failed during the session (what was collected is still written)
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pids", metavar="PID", type=_pid, nargs="*",
                        help="process ids of the Python programs to watch (one session for all)")
    parser.add_argument("--match", metavar="PATTERN",
                        help="also watch every Python process whose command line matches the regular "
                             "expression PATTERN (rescanned every 2 s: new and restarted processes are picked up)")
    parser.add_argument("--continuous", action="store_true",
                        help="keep watching with no end (a service): export every report interval, memory "
                             "bounded, stop on Ctrl-C or SIGTERM with the final session written")
    parser.add_argument("--duration", metavar="SECONDS", type=positive_float, default=None,
                        help="stop after SECONDS (default: until Ctrl-C or until the targets exit)")
    parser.add_argument("--rate", metavar="HZ", type=positive_float, default=100.0,
                        help="samples per second (py-spy record), default 100")
    parser.add_argument("--window", metavar="SECONDS", type=positive_float, default=0.2,
                        help="observation window (Phase OS phase window), default 0.2 s")
    parser.add_argument("--json", metavar="PATH", help="write the session result (JSON) to PATH")
    parser.add_argument("--subprocesses", action="store_true", help="also watch the target's child Python processes")
    parser.add_argument("--py-spy", dest="py_spy", metavar="PATH", help="the py-spy executable to use")
    from gyroscope.agent.sinks.factory import add_sink_arguments
    add_sink_arguments(parser)


def _pid(text: str) -> int:
    try:
        v = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a process id: {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"not a process id: {text!r}")
    return v




def main(args: argparse.Namespace) -> int:
    from gyroscope.agent.outputs import check_outputs, resolve_outputs
    from gyroscope.bridges import procfs
    from gyroscope.bridges.multi_source import MultiSource
    from gyroscope.bridges.pyspy import (
        EXIT_NO_SUCH_PID,
        EXIT_PYSPY_FAILED,
        AttachError,
        PySpySource,
        check_pid,
        find_py_spy,
    )

    pids: list[int] = list(dict.fromkeys(args.pids))
    quiet = bool(getattr(args, "quiet", False))
    if not pids and not args.match:
        raise GyroscopeError("give at least one PID, or --match PATTERN", 2)
    if args.match:
        import re
        try:
            re.compile(args.match)
        except re.error as e:
            raise GyroscopeError(f"--match: not a regular expression: {e}", 2) from None
        pids += [p for p in procfs.matching_pids(args.match) if p not in pids]
        if not pids and not args.continuous:
            raise GyroscopeError(f"no Python process matches {args.match!r}", EXIT_NO_SUCH_PID)
    # bad output paths (the targets' own scripts included) are refused before py-spy starts
    check_outputs(resolve_outputs(args), [s for p in pids for s in _target_script(p)], ["the target's script"])
    procfs.yield_to_program()   # the target keeps its CPU where gyroscope and py-spy compete with it
    several = len(pids) > 1 or bool(args.match)
    try:
        py_spy = find_py_spy(args.py_spy)
        if len(pids) == 1 and not args.match:
            check_pid(pids[0])

        def make(p: int) -> PySpySource:
            return PySpySource(p, py_spy, rate_hz=args.rate, subprocesses=args.subprocesses,
                               keep_stacks=True, entity_pid=p if several else 0)
        source = MultiSource(pids, make, match=args.match)
        # fails cleanly when py-spy cannot read the target (not Python, permission, unsupported
        # version); sampling starts before the agent's heavier imports
        source.begin()
    except AttachError as e:
        e = _truer_failure(e, pids[0]) if len(pids) == 1 else e
        raise GyroscopeError(_scrub_temp(e.message), e.exit_code) from None
    pid = source.pid or (pids[0] if pids else 0)
    first = source.sources.get(pid)
    version_hint = _version_from_proc(pid) if pid else ""
    json_path = args.json            # absolute: resolve_outputs
    command = procfs.cmdline(pid) if pid else []

    from gyroscope.agent.model import AttachInfo  # after the sampler's start: ~8 ms of dataclasses
    from gyroscope.agent.session import Session
    from gyroscope.agent.sinks.factory import build_sinks, make_session, print_sink_failures

    try:
        sinks = build_sinks(args, "attach")
        # python: the target's, filled in below when py-spy says it (before any sink closes)
        session = make_session(Session, source, sinks, window_s=args.window, command=command,
                               ledger=getattr(args, "ledger", None), pid=pid, python="")
    except BaseException:
        source.stop()   # never leave py-spy attached to the target
        raise

    stop = threading.Event()
    interrupted = []

    def on_sigint(signum: int, frame: Any) -> None:
        interrupted.append(signum)
        stop.set()

    old = {s: signal.signal(s, on_sigint) for s in (signal.SIGINT, signal.SIGTERM)}
    live = LiveView(sys.stderr, enabled=not quiet and _isatty(sys.stderr))
    status = 0
    try:
        session.start()
        deadline = time.monotonic() + args.duration if args.duration else None
        # with --match, `finished` is never set: processes may come later
        while not stop.is_set() and not source.finished.is_set():
            timeout = args.window
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                timeout = min(timeout, left)
            stop.wait(timeout)
            live.update(source)
        # the result is completed first (the target's python, the attach block, py-spy's failure),
        # then the sinks close: the --stream file's closing record and the OTLP session span see it all
        result = session.finish(None)
        result.main.python = (first.python_version if first else "") or version_hint
        if source.failure and not source.target_exited:
            if not any(source.failure in e for e in result.errors):
                result.errors.append(f"py-spy: {_scrub_temp(source.failure)}")
            status = EXIT_PYSPY_FAILED
        srcs = list(source.sources.values())
        result.attach = AttachInfo(
            target_exited=source.target_exited, interrupted=bool(interrupted), samples=source.total_samples,
            rate_hz=args.rate, record_chunks=sum(s.record.chunks for s in srcs),
            record_sampling_errors=sum(s.record.sampling_errors for s in srcs), py_spy=py_spy,
            extra={"pids": source.pids, "match": args.match, "continuous": bool(args.continuous),
                   "record_gap_s": sum(s.gap_ns for s in srcs) / 1e9})
        session.close_sinks(result)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        live.clear()

    if status:
        print(f"gyroscope: error: py-spy stopped working: {_scrub_temp(source.failure or '')} "
              "(results so far are kept)", file=sys.stderr)
    if json_path:
        try:
            result.save(json_path)
        except OSError as e:
            print(f"gyroscope: error: cannot write {json_path}: {e.strerror or e}", file=sys.stderr)
            status = status or 2
    try:
        from gyroscope.agent.summary import print_summary
        print_summary(result, sys.stderr, quiet=quiet)
        if quiet:
            print_sink_failures(result, sys.stderr)   # -q hides the summary, never a lost export
    except Exception as e:
        print(f"gyroscope: error: summary failed: {type(e).__name__}: {e}", file=sys.stderr)
    if source.target_exited and not quiet:
        gone = ", ".join(str(p) for p in source.pids)
        print(f"gyroscope: process {gone} exited", file=sys.stderr)
    return status


def _target_script(pid: int) -> list[str]:
    """The script the target runs (its argv[1], against its working directory), when it is a file."""
    from gyroscope.bridges.procfs import cmdline
    argv = cmdline(pid)
    if len(argv) < 2 or argv[1].startswith("-"):
        return []
    try:
        path = os.path.join(os.readlink(f"/proc/{pid}/cwd"), argv[1])
    except OSError:
        return []
    return [path] if os.path.isfile(path) else []


def _scrub_temp(message: str) -> str:
    """py-spy's own words may name the chunk file it writes in our temporary folder: no message
    names an internal temporary file."""
    import re

    from gyroscope.bridges.tmpdir import base
    return re.sub(re.escape(base()) + r"/gyroscope-[^\s'\":]*", "<py-spy output file>", message)


def _truer_failure(e: Any, pid: int) -> Any:
    """py-spy says "Check that the process is running" when it may not read a process that is
    running (e.g. PID 1 in a container without CAP_SYS_PTRACE): say permission when that is the
    truth. /proc/PID/exe is readable exactly when ptrace-read access is allowed."""
    from gyroscope.bridges.pyspy import EXIT_NO_SUCH_PID, EXIT_PERMISSION, AttachError, is_alive
    if e.exit_code != EXIT_NO_SUCH_PID or not is_alive(pid):
        return e
    try:
        os.readlink(f"/proc/{pid}/exe")
    except PermissionError:
        return AttachError(f"permission denied attaching to process {pid}: run as the same user with ptrace "
                           "allowed (kernel.yama.ptrace_scope = 0), or as root / with CAP_SYS_PTRACE "
                           "(a container may drop it)", EXIT_PERMISSION)
    except OSError:
        pass
    return AttachError(f"py-spy cannot read process {pid}, which is running", e.exit_code)


def _version_from_proc(pid: int) -> str:
    """The target's major.minor from its executable or mapped libpython ("" when unknown)."""
    import re
    try:
        names = [os.readlink(f"/proc/{pid}/exe")]
        with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as f:
            names += [line.rsplit(" ", 1)[-1] for line in f if "python" in line]
    except OSError:
        return ""
    for name in names:
        m = re.search(r"python(\d+\.\d+)", name) or re.search(r"/versions/(\d+\.\d+)", name)
        if m:
            return m.group(1)
    return ""


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class LiveView:
    """One status line on stderr, rewritten once per window: samples, errors, top loop, top wait."""

    def __init__(self, stream: TextIO, enabled: bool) -> None:
        self.stream = stream
        self.enabled = enabled
        self._width = 0
        self._t0 = time.monotonic()

    def update(self, source: Any) -> None:
        if not self.enabled:
            return
        try:
            line = status_line(source, time.monotonic() - self._t0)
            cols = _columns()
            line = line[: cols - 1]
            self.stream.write("\r" + line.ljust(self._width) + "\r")
            self.stream.flush()
            self._width = len(line)
        except Exception:
            self.enabled = False

    def clear(self) -> None:
        if self.enabled and self._width:
            try:
                self.stream.write("\r" + " " * self._width + "\r")
                self.stream.flush()
            except Exception:
                pass


def status_line(source: Any, elapsed_s: float) -> str:
    """The live view's text, from the source's cumulative counts."""
    run = dict(source.run_counts)
    waits = dict(source.wait_ns)
    total = sum(run.values()) or 1
    parts = [f"gyroscope attach {source.pid}: {elapsed_s:5.1f}s", f"{source.total_samples} samples"]
    if source.total_errors:
        parts.append(f"{source.total_errors} errors")
    if run:
        ent, n = max(run.items(), key=lambda kv: kv[1])
        parts.append(f"hot {ent.kind} {ent.function}:{ent.line} {100 * n / total:.0f}%")
    if waits:
        ent, ns = max(waits.items(), key=lambda kv: kv[1])
        parts.append(f"wait {ent.detail} {ent.function}:{ent.line} {ns / 1e9:.2f}s")
    return " | ".join(parts)


def _columns() -> int:
    try:
        return os.get_terminal_size(2).columns
    except OSError:
        return 120
