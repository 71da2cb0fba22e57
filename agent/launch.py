"""Starting the program's process, behind a gate.

`gyroscope run` starts the program as `python app.py args` with the bootstrap
(bridges/boot/sitecustomize.py) on its PYTHONPATH. The bootstrap runs while python's `site`
runs, before the program's first line, and waits there on a pipe (the gate) for the session's
address: gyroscope opens its socket, checks the outputs and reads the options while the
program's interpreter starts, instead of before. When gyroscope writes the address and closes
the pipe, the program goes on; when gyroscope closes the pipe without writing (a bad option, a
missing script, gyroscope killed), the program's process exits at once, silently, before its
first line.

To start that early, the command line is read here without argparse (whose import costs ~7
ms: re, enum, gettext): `program_argv` finds python's arguments (`run [OPTIONS] app.py ARGS`,
`run [OPTIONS] -m mod ARGS`, `run [OPTIONS] - ARGS`) and gives up on anything else (help,
unknown options, errors), which argparse then reads as always. It is also the reading the
program gets: argparse drops a `--` among the program's arguments, python does not (`python
app.py -- x` has argv ['app.py', '--', 'x']). `run_options` reads the options the same way, so
that a plain command line opens the gate without argparse at all: the program used to wait
~5 ms at its gate for that import. tests/agent/test_launch.py keeps the option tables equal to
the parser's and the two readings equal.

The `gyroscope` command .ci/setup installs is agent/launcher.c: for a command line it can read
(a strict subset of program_argv's) it starts the program behind the gate itself, before
gyroscope's python starts, and `adopt` takes that process over.

Imports only `os`, `sys` and `time` (and agent/options.py once a number is read): this runs
before anything else of gyroscope's is imported.
"""
from __future__ import annotations

import os
import sys
import time

BOOT_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bridges", "boot")

# `gyroscope run`'s options (agent/run_command.py, agent/sinks/factory.py) by what follows them:
# option -> (dest, default, how its values are read). tests/agent/test_launch.py keeps these
# tables equal to the parser's.
VALUE_TABLE: dict[str, tuple[str, object, str]] = {
    "--json": ("json", None, "str"), "--window": ("window", 0.2, "positive"), "--rate": ("rate", None, "positive"),
    "--include": ("include", [], "append"), "--act": ("act", [], "act"),
    "--otlp": ("otlp", None, "str"), "--stream": ("stream", None, "str"), "--trace": ("trace", None, "str"),
    "--ledger": ("ledger", None, "str"), "--pprof": ("pprof", None, "str"),
    "--speedscope": ("speedscope", None, "str"), "--collapsed": ("collapsed", None, "str"),
}
FLAG_TABLE: dict[str, tuple[str, bool]] = {   # option -> (dest, the value it sets; the default is the other)
    "-q": ("quiet", True), "--quiet": ("quiet", True), "--all-code": ("all_code", True),
    "--no-subprocesses": ("subprocesses", False), "--no-sampling": ("sampling", False),
    "--no-otlp-profiles": ("no_otlp_profiles", True),
}
VALUE_OPTIONS = frozenset(VALUE_TABLE)
FLAG_OPTIONS = frozenset(FLAG_TABLE)
ACT_CHOICES = ("priorities",)


def program_argv(run_args: list[str]) -> list[str] | None:
    """python's arguments for `gyroscope run RUN_ARGS`: everything from the script (or -m) on,
    exactly as given; None when only argparse can tell (help, errors, grouped short options).
    Long options may be abbreviated, as argparse allows."""
    reading = _read(run_args)
    return None if reading is None else reading[0]


def run_options(run_args: list[str]) -> object | None:
    """`gyroscope run RUN_ARGS` read as argparse would read it (the same attributes and values),
    without importing argparse (~7 ms before the program may start: re, enum, gettext); None
    when anything needs argparse: help, an error, a value it might read otherwise (empty, or
    starting with '-'). The namespace is a types.SimpleNamespace, found without importing
    `types`."""
    reading = _read(run_args)
    if reading is None:
        return None
    argv, given = reading
    ns = {dest: (list(default) if isinstance(default, list) else default)
          for dest, default, _ in VALUE_TABLE.values()}
    ns.update((dest, not value) for dest, value in FLAG_TABLE.values())
    for name, value in given:
        if name in FLAG_TABLE:
            dest, flag = FLAG_TABLE[name]
            ns[dest] = flag
            continue
        dest, _, how = VALUE_TABLE[name]
        if not value or value.startswith("-"):
            return None
        if how == "positive":
            from gyroscope.agent.options import finite_positive
            number = finite_positive(value)
            if number is None:
                return None
            ns[dest] = number
        elif how == "act":
            if value not in ACT_CHOICES:
                return None
            ns[dest].append(value)
        elif how == "append":
            ns[dest].append(value)
        else:
            ns[dest] = value
    if argv[0] == "-m":
        ns.update(module=argv[1:], script=None, args=[])
    else:
        ns.update(module=None, script=argv[0], args=argv[1:])
    return type(sys.implementation)(command="run", **ns)


def _read(run_args: list[str]) -> tuple[list[str], list[tuple[str, str | None]]] | None:
    """(python's arguments, the options before them as (canonical name, value or None)), or None."""
    given: list[tuple[str, str | None]] = []
    i = 0
    while i < len(run_args):
        arg = run_args[i]
        if arg == "-m":
            rest = run_args[i + 1:]
            return (["-m", *rest], given) if rest and not rest[0].startswith("-") else None
        if arg == "-" or not arg.startswith("-"):
            return run_args[i:], given
        name, eq, value = arg.partition("=")
        name = _long_option(name) if name.startswith("--") else name
        if name in VALUE_OPTIONS:
            if not eq:
                if i + 1 >= len(run_args):
                    return None
                value = run_args[i + 1]
            given.append((name, value))
            i += 1 if eq else 2
        elif name in FLAG_OPTIONS and not eq:
            given.append((name, None))
            i += 1
        else:
            return None
    return None


def _long_option(name: str) -> str | None:
    """The long option `name` stands for (itself, or the one option it is a prefix of)."""
    if name in VALUE_OPTIONS or name in FLAG_OPTIONS or name == "--help":
        return name
    found = [o for o in (*VALUE_OPTIONS, *FLAG_OPTIONS, "--help") if o.startswith(name)]
    return found[0] if len(found) == 1 else None


class Launch:
    """The program's process, waiting at the gate until `go` (or leaving at `abort`)."""

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        # a standard descriptor gyroscope was started without (`>&-`) must be missing in the
        # program too, not be the first descriptor gyroscope opens (the gate's pipe, then
        # whatever the program opens: its print() went into its own log file): it is held by
        # /dev/null here, so that nothing else takes it, and closed in the program's process
        self._held = _hold_closed_std_fds()
        read_end, self._gate = os.pipe()   # both ends close-on-exec; the program's end is opened below
        env = dict(os.environ)
        self.pythonpath = env.get("PYTHONPATH")   # the program's own, which the bootstrap restores
        env["PYTHONPATH"] = BOOT_DIR if not self.pythonpath else BOOT_DIR + os.pathsep + self.pythonpath
        env["GYROSCOPE_BRIDGE"] = f"gate\x1d{read_end}"
        self.t0_ns = time.monotonic_ns()
        try:
            os.set_inheritable(read_end, True)
            self.pid = os.posix_spawn(sys.executable, [sys.executable, *argv], env,
                                      file_actions=[(os.POSIX_SPAWN_CLOSE, fd) for fd in self._held])
        except BaseException:
            os.close(self._gate)
            self._gate = -1
            raise
        finally:
            os.close(read_end)
        self.went = False

    @classmethod
    def adopted(cls, argv: list[str], pid: int, gate: int, t0_ns: int) -> Launch:
        """The process another launcher (agent/launcher.c) started as Launch(argv) would have."""
        self = cls.__new__(cls)
        self.argv, self.pid, self._gate, self.t0_ns, self.went = argv, pid, gate, t0_ns, False
        self.pythonpath = os.environ.get("PYTHONPATH")
        return self

    def go(self, config: str) -> bool:
        """Let the program run with this bridge configuration; False if its process is gone."""
        self.went = True
        try:
            data = os.fsencode(config)
            while data:
                data = data[os.write(self._gate, data):]
            return True
        except OSError:   # the program died at its start (killed): gyroscope reports its status
            return False
        finally:
            self._close()

    def abort(self) -> None:
        """Make the program's process leave before its first line, and reap it (no-op after go)."""
        if self.went:
            return
        self.went = True
        self._close()
        try:
            os.waitpid(self.pid, 0)   # retried by python when a signal interrupts it (PEP 475)
        except ChildProcessError:
            pass

    def _close(self) -> None:
        if self._gate >= 0:
            os.close(self._gate)
            self._gate = -1


_HELD: list[int] | None = None   # once per process: a second launch must close the same ones


def _hold_closed_std_fds() -> list[int]:
    """Of descriptors 0, 1 and 2, those gyroscope was started without, held open on /dev/null."""
    global _HELD
    if _HELD is None:
        closed = []
        for fd in (0, 1, 2):
            try:
                os.fstat(fd)
            except OSError:
                closed.append(fd)
        _HELD = []
        for fd in closed:
            got = os.open(os.devnull, os.O_RDWR)   # the lowest free descriptor: `fd`, in order
            if got != fd:
                os.close(got)
                break
            _HELD.append(fd)
    return _HELD


def adopt(program: list[str] | None, argv: list[str]) -> Launch | None:
    """The program's process the native launcher (agent/launcher.c) already started behind its
    gate, when it started it with the arguments program_argv reads (`program`; `argv`: gyroscope's
    own, from "run" on), or None. Started otherwise (never expected: the launcher's reading is a
    strict subset of this one), it is made to leave before its first line."""
    word = os.environ.pop("GYROSCOPE_LAUNCHED", None)
    if word is None:
        return None
    try:
        pid, gate, t0_ns, start, held = (int(x) for x in word.split(","))
    except ValueError:
        return None
    global _HELD
    _HELD = [fd for fd in (0, 1, 2) if held & (1 << fd)]   # held on /dev/null by the launcher
    launch = Launch.adopted(argv[start:], pid, gate, t0_ns)
    if launch.argv != program:
        launch.abort()
        return None
    return launch


def c_header(entry: str) -> str:
    """agent/launcher.c's configuration: this python, the script it runs with -S (`entry`), the
    bootstrap's folder and the option tables above, as C (.ci/setup writes it when it compiles the
    launcher)."""
    def c(text: str) -> str:   # a C string literal; a path C would need escapes for is refused
        if not text.isprintable() or '"' in text or "\\" in text or "?" in text:
            raise ValueError(f"cannot write {text!r} as a C string")
        return f'"{text}"'

    def table(items: frozenset[str]) -> str:
        return "{" + ", ".join(c(o) for o in sorted(items)) + ", 0}"
    return "\n".join([
        f"#define GYROSCOPE_PYTHON {c(sys.executable)}",
        f"#define GYROSCOPE_ENTRY {c(entry)}",
        f"#define GYROSCOPE_BOOT {c(BOOT_DIR)}",
        f"static const char *const VALUE_OPTIONS[] = {table(VALUE_OPTIONS)};",
        f"static const char *const FLAG_OPTIONS[] = {table(FLAG_OPTIONS)};",
        ""])


def early_launch(argv: list[str] | None) -> Launch | None:
    """The program's process started before gyroscope parses its own options (argv: python's
    arguments, from program_argv), or None (argparse reads the command line first)."""
    if argv is None:
        return None
    try:
        return Launch(argv)
    except OSError:
        return None   # run_command starts it again, and reports the failure in one line
