"""`gyroscope run`: the program runs as `python app.py args` in its own process; gyroscope watches it
from this one.

The process boundary (spec 002 §12.2's orchestration boundary):
- the program is a child process started as `python app.py args` (or `python -m mod args`, or
  `python - args` reading the script from stdin) with the same interpreter, stdio, environment
  and process group. A bootstrap (bridges/boot/sitecustomize.py, found through PYTHONPATH for
  that process only) starts the lean in-process bridge (bridges/_inproc.pyx) before the first
  line and leaves no trace the program can see. The process is started as soon as the command
  line says what to run, and waits at a gate (agent/launch.py) while this one gets ready;
- this process listens on a Unix socket in a private directory for what the bridge ships once
  per window (bridges/channel.py), samples the program's stacks from outside with py-spy, and
  holds everything else: kernel, measurements, decisions, gate, sinks, summary and files.
Signals: SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to gyroscope are forwarded to the program,
except when the sender evidently signalled the program too (a terminal's Ctrl-C reaches the
whole foreground process group; `timeout` signals its child and then its whole group). When the
program ends, gyroscope writes the session and exits the way the program did: its exit code,
or killed by the same signal. Whatever happens to the program (SIGKILL, os._exit, a crash), the
session up to its last shipped window is written.
"""
from __future__ import annotations

import _signal as signal  # the C module: `signal` and `socket` build enums (~10 ms before the program starts)
import _socket
import os
import sys
import time

from gyroscope.agent.errors import GyroscopeError, UsageError
from gyroscope.bridges.tmpdir import private_dir, remove_dir

TYPE_CHECKING = False   # not typing, argparse nor threading (~3, 7 and 1 ms) before the program starts
if TYPE_CHECKING:
    import argparse
    from typing import Any

DESCRIPTION = """\
Run a Python program under the agent, exactly as `python app.py [args]`,
`python -m package.module [args]` or `python - [args]` (script on stdin) would: the program runs
in its own process, with the same interpreter, argv, __main__, sys.path, stdio, environment,
threads, fork and signal behaviour and exit status. When it ends, print a summary to stderr;
with --json PATH also write the session result.

The program's own code (files under the script's directory, or the current directory for -m,
outside site-packages and the standard library, and always the script or module you name) gets
exact loop and call counters; every thread is sampled from outside with py-spy. --include adds
more code to count. gyroscope and its py-spy run at nice +10 once the program is started: where
they compete with it for a core, the program wins.

gyroscope's own options go before the script (or -m); everything after it is the program's.
Processes the program starts (fork, multiprocessing, python subprocesses) are followed: each is
a process of the same session. --no-subprocesses turns that off.

Exit status: the program's own (killed by a signal: the same signal); 2 if the script does not
exist or an option is wrong, and 2 instead of 0 when the program succeeded but --json could not
be written (an error line says why; a profile file that could not be written is an error line
only).
"""

# Signals sent to gyroscope that go to the program instead: every one whose default would end
# gyroscope and leave the program running without it (USR1, ALRM, the real-time ones, ...), and
# WINCH. Not CONT and TSTP: a shell's `fg`/`bg` and Ctrl-Z signal the whole group, the program
# included, and nothing tells that apart from a signal sent to gyroscope alone.
FORWARDED = tuple(getattr(signal, name) for name in (
    "SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGVTALRM", "SIGPROF",
    "SIGPOLL", "SIGPWR", "SIGWINCH") if hasattr(signal, name)) + tuple(
    range(getattr(signal, "SIGRTMIN", 0), getattr(signal, "SIGRTMAX", -1) + 1))
SI_KERNEL = 0x80


def add_arguments(parser: argparse.ArgumentParser) -> None:
    import argparse

    from gyroscope.agent.launch import ACT_CHOICES, VALUE_TABLE  # the defaults: one place
    from gyroscope.agent.options import positive_float
    parser.add_argument("-m", dest="module", nargs=argparse.REMAINDER, metavar="MODULE [ARG]",
                        help="run a library module as a script; like python, everything after it goes "
                             "to the module")
    parser.add_argument("script", nargs="?", help="the script to run (like `python script.py`; - reads stdin)")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the program")
    parser.add_argument("--json", metavar="PATH", help="write the session result (JSON) to PATH")
    parser.add_argument("--window", metavar="SECONDS", type=positive_float, default=VALUE_TABLE["--window"][1],
                        help="observation window (Phase OS phase window), default 0.2 s")
    parser.add_argument("--rate", metavar="HZ", type=positive_float, default=None,
                        help="stack sampling rate of py-spy, default: the sampler's")
    parser.add_argument("--include", metavar="PATTERN", action="append", default=[],
                        help="also count loops of code whose file matches PATTERN (fnmatch; repeatable)")
    parser.add_argument("--act", metavar="ACTUATOR", action="append", default=[], choices=list(ACT_CHOICES),
                        help="act on the program (opt-in, restored at exit): 'priorities' lowers the nice "
                             "value of threads competing with a hot loop or piling onto a contended lock")
    parser.add_argument("--all-code", action="store_true",
                        help="count loops of all Python code (libraries and stdlib too), not only the program's")
    parser.add_argument("--no-subprocesses", dest="subprocesses", action="store_false",
                        help="watch only the program's first process, not the processes it starts")
    parser.add_argument("--no-sampling", dest="sampling", action="store_false",
                        help="do not sample stacks with py-spy (counters only)")
    from gyroscope.agent.sinks.factory import add_sink_arguments
    add_sink_arguments(parser)


class Program:
    """What to start and which code is the program's own."""

    def __init__(self, argv: list[str], command: list[str], roots: list[str], extra: list[str],
                 inputs: list[str]) -> None:
        self.argv = argv            # python's arguments (after the interpreter)
        self.command = command      # as the user gave it (for the result)
        self.roots = roots
        self.extra = extra
        self.inputs = inputs        # files that no output may replace


def program_of(args: argparse.Namespace) -> Program:
    """What to run. The program's arguments are the command line's own (agent/launch.py reads
    them; argparse would drop a `--` among them), or argparse's when that cannot tell."""
    raw = getattr(args, "_program_argv", None)
    prog_args = list(args.args or []) if raw is None else raw[1:]
    if args.module is not None:
        if not args.module:
            raise UsageError("argument -m: expected a module name")
        module = args.module[0]
        prog_args = list(args.module[1:]) if raw is None else raw[2:]
        origin = _module_origin(module)
        extra = [origin] if origin else []
        return Program(["-m", module, *prog_args], ["-m", module, *prog_args], [os.getcwd()], extra, extra)
    if args.script is None:
        raise GyroscopeError("nothing to run: give a script (gyroscope run app.py), - for stdin, or -m module", 2)
    script = args.script
    if script == "-":
        return Program(["-", *prog_args], ["-", *prog_args], [os.getcwd()], ["<stdin>"], [])
    if not os.path.exists(script):
        raise GyroscopeError(f"can't open file {os.path.abspath(script)!r}: no such file", 2)
    if os.path.isdir(script):
        root = os.path.realpath(script)
        extra = [os.path.join(root, "__main__.py")]
    else:
        root = os.path.dirname(os.path.realpath(script))
        extra = [os.path.realpath(script)]
    return Program([script, *prog_args], [script, *prog_args], [root], extra, [os.path.realpath(script)])


def _module_origin(module: str) -> str | None:
    """The file of `module` (its __main__ for a package), found without importing anything."""
    from importlib.machinery import PathFinder
    path: list[str] | None = [os.getcwd(), *sys.path[1:]]
    spec = None
    for part in module.split("."):
        try:
            spec = PathFinder.find_spec(part, path)
        except (ImportError, ValueError):
            return None
        if spec is None:
            return None
        path = list(spec.submodule_search_locations or []) or None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            main = os.path.join(loc, "__main__.py")
            if os.path.exists(main):
                return main
        return None
    return spec.origin if spec.origin and os.path.exists(spec.origin) else None


def _bridge_config(socket_path: str, args: argparse.Namespace, own_config: str, pythonpath: str | None) -> str:
    """The session's address, as the bootstrap reads it (bridges/boot/sitecustomize.py)."""
    fields = ["1", socket_path, repr(float(args.window)), "320", "1" if args.subprocesses else "0", str(os.getpid()),
              "u" if pythonpath is None else "s" + pythonpath, own_config]
    return "\x1d".join(fields)


def main(args: argparse.Namespace) -> int:
    # Until the program is started, import nothing that python does not have loaded already:
    # the time to the program's first line is the user's start-up cost (benchmarks/startup.py).
    # The program's interpreter is usually starting already (agent/cli.py: agent/launch.py's
    # early launch), and waits at its gate until everything below is ready.
    from gyroscope.agent.launch import Launch
    launch: Launch | None = getattr(args, "_launch", None)
    from gyroscope.bridges.owncode import OwnCode
    prog = program_of(args)
    own = OwnCode.for_program(prog.roots, extra=prog.extra, include=args.include, all_code=args.all_code)
    from gyroscope.agent.outputs import check_outputs, resolve_outputs
    # outputs: absolute against the start directory, and never the script, an input or each other
    check_outputs(resolve_outputs(args), prog.inputs, ["the module" if args.module is not None else "the script"])
    if getattr(args, "ledger", None):   # opt-in: pays the kernel's import before the program starts
        _check_ledger(args.ledger)
    from gyroscope.agent.sinks.factory import build_sinks
    file_sinks = build_sinks(args, "run", otlp_too=False)   # opened now: the program may remove their folder
    tmp = _private_dir()
    sock_path = os.path.join(tmp, "s")
    listener = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    listener.bind(sock_path)
    listener.listen(64)
    if launch is not None and launch.argv != prog.argv:   # never expected: argparse read it otherwise
        launch.abort()
        launch = None
    try:
        if launch is None:
            launch = Launch(prog.argv)
    except OSError as e:
        listener.close()
        remove_dir(tmp)
        raise GyroscopeError(f"cannot start {sys.executable}: {e.strerror or e}", 2) from None
    launch.go(_bridge_config(sock_path, args, own.to_config(), launch.pythonpath))
    pid = launch.pid
    signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)   # after the spawn: the child keeps python's mask
    from gyroscope.bridges.procfs import yield_to_program
    yield_to_program()   # after the spawn too: the program keeps its priority, gyroscope takes a lower one
    child = _Child(pid, launch.t0_ns)
    import threading
    threading.Thread(target=_forward_signals, args=(child,), name="gyroscope-signals", daemon=True).start()
    try:
        # the sampler first: every millisecond between the program's start and py-spy's is a
        # millisecond of the program nobody samples
        from gyroscope.bridges.run_source import RunSource
        source = RunSource(None, pid, own, rate_hz=args.rate, sampling=args.sampling, subprocesses=args.subprocesses,
                           ready_fd=listener.fileno())
        source.start()
        source.wait_sampler(0.3)   # the program's bytes wait in the socket meanwhile
        from gyroscope.bridges.channel import ChannelServer
        server = ChannelServer(listener, sock_path, main_pid_getter=lambda: pid)
        source.channel = server
        server.on_main_exiting = source.program_exiting
        server.start()
        return _watch(args, prog, child, server, source, file_sinks)
    finally:
        remove_dir(tmp)


def _check_ledger(path: str) -> None:
    """Refuse, before the program starts, a ledger the session's pool could not append to."""
    from gyroscope.agent.session import POOL_CAPACITY, POOL_PROFILE
    from gyroscope.cyext import law
    from gyroscope.cyext.errors import LedgerError
    from gyroscope.cyext.ledger import check_appendable
    try:
        check_appendable(path, POOL_CAPACITY, law.PROFILES[POOL_PROFILE])
    except LedgerError as e:
        raise GyroscopeError(str(e), 2) from None


def _private_dir() -> str:
    """A new 0700 directory for the session's socket."""
    try:
        return private_dir()
    except OSError as e:
        raise GyroscopeError(str(e), 2) from None


class _Child:
    """The program's process: pid and, once it has ended, its wait status and the CPU time it
    and the processes it waited for used (not gyroscope's: see _watch)."""

    def __init__(self, pid: int, t0_ns: int = 0) -> None:
        self.pid = pid
        self.t0_ns = t0_ns or time.monotonic_ns()   # when it was spawned
        self.returncode: int | None = None
        self.cpu_ns = 0

    def wait(self) -> int:
        while self.returncode is None:
            try:
                _, status, usage = os.wait4(self.pid, 0)
            except ChildProcessError:
                self.returncode = 0
                break
            except InterruptedError:
                continue
            self.returncode = os.waitstatus_to_exitcode(status)
            self.cpu_ns = int((usage.ru_utime + usage.ru_stime) * 1e9)
        return self.returncode



def _watch(args: argparse.Namespace, prog: Program, child: _Child, server, source, sinks: list) -> int:
    """Everything after the spawn: the session runs while the program does. From here on nothing
    gyroscope does may stop the program: a failure is one line and the session goes on without
    what failed."""
    session = result = None
    err = sys.stderr
    import threading
    if not getattr(args, "quiet", False):   # the summary's imports while the program runs, not after it
        threading.Thread(target=_warm_summary, name="gyroscope-warm", daemon=True).start()
    try:
        from gyroscope.agent.session import Session
        from gyroscope.agent.sinks.factory import build_otlp_sink, make_session
        try:
            sinks = sinks + build_otlp_sink(args)
        except GyroscopeError as e:
            print(f"gyroscope: error: {e.message}; exporting nothing over OTLP", file=err)
        session = make_session(Session, source, sinks, window_s=args.window, command=prog.command,
                               ledger=getattr(args, "ledger", None), act_priorities="priorities" in args.act,
                               all_code=bool(args.all_code or args.include), pid=child.pid, python=sys.version.split()[0],
                               t0_ns=child.t0_ns)
        session.start()
    except GyroscopeError as e:
        print(f"gyroscope: error: {e.message}", file=err)
    except Exception as e:   # the agent failing must not change what the program does
        print(f"gyroscope: error: the agent failed to start: {type(e).__name__}: {e}", file=err)
    returncode = child.wait()
    source.program_cpu_ns = child.cpu_ns   # reaped: in this process's children's CPU, which is py-spy's
    exit_code, sig = (128 - returncode, -returncode) if returncode < 0 else (returncode, 0)
    server.drain(0.5)
    status = exit_code
    if session is not None:
        try:
            result = session.finish(exit_code, sig or None)
            _add_processes(result, server, child.pid)
            session.close_sinks(result)
        except Exception as e:
            print(f"gyroscope: error: the agent failed while stopping: {type(e).__name__}: {e}", file=err)
            result = None
    if result is not None:
        status = _write_outputs(args, result, status)
    if sig:
        _die_of(sig)
    return status


def _warm_summary() -> None:
    try:
        import gyroscope.agent.summary  # noqa: F401
        import rich.console  # noqa: F401
        import rich.table  # noqa: F401
        import rich.text  # noqa: F401
    except Exception:
        pass


def _add_processes(result: Any, server: Any, main_pid: int) -> None:
    """Every other process of the program that its bridge reported (forks, multiprocessing
    workers, python subprocesses), with the process that started it."""
    from gyroscope.agent.model import ProcessRecord
    for info in sorted(server.processes.values(), key=lambda p: p.connected_unix_s):
        if info.pid == main_pid:
            continue
        result.processes.append(ProcessRecord(pid=info.pid, command=info.command, python=info.python,
                                              parent=info.ppid, extra={"forked": info.forked,
                                                                       "ended_normally": info.ended}))


def _die_of(sig: int) -> None:
    """Die of the program's signal, as its parent would have seen python die, without a core
    file of gyroscope's own: where the program dumped one (SIGSEGV, SIGABRT, ...), it would be
    replaced by gyroscope's (same folder, same name)."""
    _flush()
    try:
        import resource
        resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))
    except (ImportError, OSError, ValueError):
        pass
    if sig in (signal.SIGKILL, signal.SIGSTOP):
        os.kill(os.getpid(), signal.SIGKILL)
    import threading
    try:
        signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [sig])
        signal.pthread_kill(threading.main_thread().ident, sig)   # not the process: the forwarder waits for it
    except (OSError, ValueError):
        pass


def _write_outputs(args: argparse.Namespace, result: Any, status: int) -> int:
    from gyroscope.agent.sinks.factory import print_sink_failures
    err = sys.stderr
    if args.json:
        try:
            result.save(args.json)
        except (OSError, TypeError, ValueError) as e:
            print(f"gyroscope: error: cannot write {args.json}: {getattr(e, 'strerror', None) or e}", file=err)
            status = status or 2
    if status != 0 and not result.errors and all(e.kind in ("gc", "thread") for e in result.entities):
        return status   # the program failed before doing anything (python said why): nothing to add
    try:
        if getattr(args, "quiet", False):
            print_sink_failures(result, err)   # -q hides the summary, never a lost export
        else:
            from gyroscope.agent.summary import print_summary
            print_summary(result, err)
    except Exception as e:  # the summary must never hide the program's exit code
        print(f"gyroscope: error: summary failed: {type(e).__name__}: {e}", file=err)
    return status


def _forward_signals(child: _Child) -> None:
    """Waits for the FORWARDED signals (blocked in every thread of this process) and forwards them
    to the program unless it got them too."""
    while True:
        try:
            info = signal.sigwaitinfo(FORWARDED)
        except Exception:
            return
        if child.returncode is not None:
            continue
        if info.si_code == SI_KERNEL:   # the terminal signalled the whole foreground group
            continue
        if _from_group_signalling_parent(info):
            continue    # the program got it from the same sender
        if _from_the_program(info.si_pid, child.pid):
            continue    # its own killpg(0, ...) reached it already; a signal to its parent is not for it
        try:
            os.kill(child.pid, info.si_signo)
        except OSError:
            pass


GROUP_SIGNALLERS = ("timeout",)   # parents that signal their child, then their whole group


def _from_the_program(sender: int, program: int) -> bool:
    """The sender is the program or a process it started (its parent chain reaches the program):
    its signal to its whole group (`os.killpg(0, SIGTERM)`) reached the program already (it was
    forwarded a second time until stop 26), and one to its parent, here gyroscope, was never
    meant for it."""
    from gyroscope.bridges.procfs import parent_pid
    pid = sender
    for _ in range(64):
        if pid == program:
            return True
        if pid <= 1:
            return False
        pid = parent_pid(pid)
    return False


def _from_group_signalling_parent(info: Any) -> bool:
    """The signal came from our parent, it leads our process group, and it is a program known to
    signal its group too (`timeout`: its child, then the group). A script or supervisor that
    leads the group and kills gyroscope by pid is not one: the program gets the signal from us.
    (Telling the two apart by a second signal does not work: two SIGTERMs sent back to back
    merge into one.)"""
    from gyroscope.bridges.procfs import comm  # after the spawn: nothing extra before the program starts
    try:
        ppid = os.getppid()
        if not (info.si_pid == ppid and os.getpgid(ppid) == ppid == os.getpgrp()):
            return False
    except OSError:
        return False
    return comm(ppid) in GROUP_SIGNALLERS


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except Exception:
            pass
