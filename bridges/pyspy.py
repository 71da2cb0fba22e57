"""Attach to a running Python process with py-spy: the `attach` source.

How it samples, and why (py-spy 0.4.3, Python 3.12 target, 2-core box; numbers measured with
the commands in benchmarks/attach_overhead.py and the attach report):

- `py-spy dump --json` gives, per sample and per thread, `active` (the OS thread state),
  `owns_gil`, `os_thread_id`, `thread_name` and frames with qualified names (``Grid.relax``):
  exactly what wait attribution needs. But every sample is a new py-spy process: ~12 ms of
  py-spy CPU and ~30 ms wall per sample, so at most ~30 samples/s, and ~0.25 CPU s per second
  at 20 Hz. Too coarse for short hot phases (a 0.3 s hot thread gets ~6 samples).
- `py-spy record` samples at 100 Hz for ~0.4 ms of py-spy CPU per sample, but aggregates until
  it ends (it writes its file on exit or SIGINT) and none of its formats (raw/collapsed,
  speedscope, chrometrace) keeps the per-sample thread state: with `--idle` blocked stacks are
  mixed with running ones (a blocked `with lock:` looks like a running one); `--gil` keeps only
  the thread holding the GIL.

So attach runs both, each for what it is good at (a hybrid):
- running code: `py-spy record --gil --nonblocking -f raw --threads` at `rate_hz` (default
  100), in chunks of `chunk_s` (1 s; stopped with SIGINT, parsed, restarted at once: ~70 ms of
  startup per chunk is not sampled). `--gil` means a sample is the thread running Python code
  (what CPU share means here); `--nonblocking` means record never pauses the target and never
  conflicts with dump's ptrace. Stacks -> SAMPLE_RUN on the innermost loop or function.
- thread states and waits: `py-spy dump --json` at `wait_rate_hz` (default 10; blocking: the
  target is paused only while its stacks are read, so the stacks are consistent). Idle threads
  -> SAMPLE_WAIT at the call site in the program's code, with what they wait in; active without
  the GIL -> SAMPLE_GIL. Each sample weighs the real time since the previous one, so wait times
  stay honest when dump falls behind. Consecutive idle samples of one thread at one site form
  one wait episode (LOCK_WAIT with its sampled duration). Its running samples are used only when
  record is unavailable (it failed) and for the very first dump (taken before record runs).
The first dump is taken synchronously by `begin()` (it is the pre-flight: no such process,
permission, not Python, unsupported version) while record starts in parallel.

Stacks are classified by bridges.stacks.classify, as for the in-process sampler. The program's
own code is every file outside the interpreter's standard library and site-packages.
"""
from __future__ import annotations

import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

# The exit codes live in the CLI (agent/cli.py EXIT_CODES); these names stay until this module's
# raises use the error classes of agent/errors.py directly.
from gyroscope.agent.cli import (
    EXIT_NO_PYSPY,
    EXIT_NO_SUCH_PID,
    EXIT_NOT_PYTHON,
    EXIT_PERMISSION,
    EXIT_PYSPY_FAILED,
    EXIT_UNSUPPORTED_PYTHON,
)
from gyroscope.bridges.events import (
    Entity,
    EntityKind,
    Event,
    EventKind,
    Observation,
    StackSample,
    ThreadInfo,
)
from gyroscope.bridges.stacks import Frame, classify

SUPPORTED_PYTHONS = "CPython 2.3-2.7 and 3.3-3.14"   # what py-spy 0.4.x can read
DUMP_TIMEOUT_S = 10.0
MAX_CONSECUTIVE_FAILURES = 5
MAX_ERRORS = 20
STARTUP_GRACE_S = 1.5  # a target younger than this that py-spy calls "not Python" is asked again
MAX_STACKS = 100_000   # distinct (thread, stack) pairs kept for --speedscope; the rest are merged

_STDLIB = re.compile(r"[/\\]lib(64)?[/\\]python\d+(\.\d+)?t?[/\\]|[/\\]Lib[/\\]")


# One error tree (agent/errors.py): AttachError(message, code) builds the matching subclass.
from gyroscope.agent.errors import AttachError  # noqa: E402


def find_py_spy(explicit: str | None = None) -> str:
    """The py-spy executable: `explicit`, else next to sys.executable, in the venv's bin, on PATH."""
    if explicit:
        if os.path.isfile(explicit) and os.access(explicit, os.X_OK):
            return explicit
        raise AttachError(f"py-spy not found at {explicit} (give the path of an executable py-spy)",
                          EXIT_NO_PYSPY)
    candidates = [os.path.join(os.path.dirname(sys.executable), "py-spy"),
                  os.path.join(sys.prefix, "bin", "py-spy")]
    for c in candidates:
        if os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    found = shutil.which("py-spy")
    if found:
        return found
    raise AttachError("py-spy not found (install it: pip install py-spy, or pass --py-spy PATH)", EXIT_NO_PYSPY)


def is_own_code(path: str) -> bool:
    """For a remote target: the program's own code is anything outside the interpreter's standard
    library and site-packages (and not a frozen or generated module)."""
    if not path or path.startswith("<"):
        return False
    if "site-packages" in path or "dist-packages" in path:
        return False
    return _STDLIB.search(path) is None


def _stat_fields(path: str) -> list[bytes]:
    """The fields of a /proc/.../stat file after the command name (fields[0] is the state letter,
    fields[11:13] utime and stime, fields[19] the start time, in clock ticks; man 5 proc)."""
    with open(path, "rb") as f:
        return f.read().rsplit(b")", 1)[1].split()


def process_state(pid: int) -> str:
    """The kernel's state letter for `pid` ("R", "S", "Z", ...), "" when there is no such process."""
    try:
        return _stat_fields(f"/proc/{pid}/stat")[0][:1].decode()
    except (OSError, ValueError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return ""
        except PermissionError:
            return "?"
        return "?"


def process_age_s(pid: int) -> float:
    """Seconds since `pid` started (a large number when unknown)."""
    try:
        start_ticks = int(_stat_fields(f"/proc/{pid}/stat")[19])
        with open("/proc/uptime", "rb") as f:
            uptime = float(f.read().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 1e9


def is_alive(pid: int) -> bool:
    return process_state(pid) not in ("", "Z", "X")


def explain_failure(pid: int, text: str) -> AttachError:
    """Map py-spy's error output for `pid` to one clear line and an exit code."""
    low = text.lower()
    if not is_alive(pid) or "check that the process is running" in low or "no such process" in low:
        return AttachError(f"no such process: {pid}", EXIT_NO_SUCH_PID)
    if "permission denied" in low or "operation not permitted" in low:
        return AttachError(
            f"permission denied attaching to process {pid}: run as the same user with ptrace allowed "
            "(kernel.yama.ptrace_scope = 0), or as root / with CAP_SYS_PTRACE", EXIT_PERMISSION)
    m = re.search(r"unsupported version of python:?\s*([0-9][0-9.a-z+]*)", low)
    if m:
        return AttachError(f"process {pid} runs Python {m.group(1)}, which this py-spy cannot read "
                           f"(it reads {SUPPORTED_PYTHONS})", EXIT_UNSUPPORTED_PYTHON)
    if "failed to find python version" in low or "failed to find a python interpreter" in low \
            or "failed to get python version" in low or "doesn't look like a python" in low:
        kids = [c for c in _children(pid) if "python" in os.path.basename(_exe(c))]
        hint = f"; its child process {kids[0]} is Python: attach to that one" if kids else ""
        return AttachError(f"process {pid} is not a Python process (py-spy found no Python interpreter in it){hint}",
                           EXIT_NOT_PYTHON)
    first = next((ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith(" ")), "")
    return AttachError(f"py-spy failed on process {pid}: {first or 'no output'}", EXIT_PYSPY_FAILED)


def _children(pid: int) -> list[int]:
    """Direct children of `pid` (a wrapper such as a pyenv shim or `bash -c` runs Python as one)."""
    kids: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                kids += [int(k) for k in f.read().split()]
    except (OSError, ValueError):
        pass
    return kids


def _exe(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""


def check_pid(pid: int) -> None:
    if pid <= 0 or not is_alive(pid):
        raise AttachError(f"no such process: {pid}", EXIT_NO_SUCH_PID)


def target_cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def _thread_cpu_ns(pid: int, tid: int) -> int:
    try:
        fields = _stat_fields(f"/proc/{pid}/task/{tid}/stat")
        ticks = int(fields[11]) + int(fields[12])   # utime + stime
        return ticks * 1_000_000_000 // os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0


@dataclass(slots=True)
class _Thread:
    pid: int
    tid: int
    name: str
    last_ns: int = 0
    wait_entity: Entity | None = None
    wait_start_ns: int = 0
    wait_last_ns: int = 0


class PySpyDump:
    """One `py-spy dump --json` call."""

    def __init__(self, py_spy: str, pid: int, subprocesses: bool = False) -> None:
        self.cmd = [py_spy, "dump", "--json", "-p", str(pid)] + (["--subprocesses"] if subprocesses else [])
        self.pid = pid

    def __call__(self) -> list[dict]:
        try:
            # own session: a Ctrl-C in the terminal is for gyroscope, not for py-spy
            p = subprocess.run(self.cmd, capture_output=True, timeout=DUMP_TIMEOUT_S, start_new_session=True)
        except subprocess.TimeoutExpired:
            raise AttachError(f"py-spy dump did not answer within {DUMP_TIMEOUT_S:g} s", EXIT_PYSPY_FAILED) from None
        except OSError as e:
            raise AttachError(f"cannot run py-spy: {e.strerror or e}", EXIT_NO_PYSPY) from None
        if p.returncode != 0:
            raise explain_failure(self.pid, p.stderr.decode(errors="replace") + p.stdout.decode(errors="replace"))
        try:
            traces = json.loads(p.stdout or b"[]")
        except json.JSONDecodeError as e:
            raise AttachError(f"py-spy dump printed something that is not JSON ({e})", EXIT_PYSPY_FAILED) from None
        return traces if isinstance(traces, list) else []


def python_version(py_spy: str, pid: int) -> str:
    """The target's Python version as py-spy reports it ("" if it cannot say); raises AttachError
    (no such process, permission, not Python, unsupported version) when py-spy cannot read it."""
    try:
        # --nonblocking: no ptrace stop, so it never collides with the sampling dumps
        p = subprocess.run([py_spy, "dump", "--nonblocking", "-p", str(pid)], capture_output=True,
                           timeout=DUMP_TIMEOUT_S, start_new_session=True)
    except subprocess.TimeoutExpired:
        raise AttachError(f"py-spy dump did not answer within {DUMP_TIMEOUT_S:g} s", EXIT_PYSPY_FAILED) from None
    except OSError as e:
        raise AttachError(f"cannot run py-spy: {e.strerror or e}", EXIT_NO_PYSPY) from None
    out = p.stdout.decode(errors="replace")
    if p.returncode != 0:
        raise explain_failure(pid, p.stderr.decode(errors="replace") + out)
    m = re.search(r"^Python v(\S+)", out, re.MULTILINE)
    return m.group(1) if m else ""


_RAW_FRAME = re.compile(r"^(.*) \((.*):(\d+)\)$")
_RAW_THREAD = re.compile(r"^thread \((\w+)\)(?::\s?(.*))?$")


def parse_raw(text: str) -> list[tuple[int, str, list[Frame], int]]:
    """py-spy's raw (collapsed) output with --threads -> (thread id, thread name, frames innermost-first,
    count) per line."""
    out = []
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        tid, name, frames = 0, "", []
        for part in stack.split(";"):
            m = _RAW_FRAME.match(part)
            if m and not part.startswith("thread ("):
                frames.append(Frame(m.group(2), m.group(1), int(m.group(3))))
                continue
            t = _RAW_THREAD.match(part)
            if t:
                raw_id = t.group(1)
                try:
                    tid = int(raw_id, 16) if raw_id.lower().startswith("0x") else int(raw_id)
                except ValueError:
                    tid = 0
                name = t.group(2) or ""
        frames.reverse()
        out.append((tid, name, frames, int(count)))
    return out


class RecordStream:
    """`py-spy record --gil --nonblocking -f raw -t` in chunks of `chunk_s`: each chunk is stopped with
    SIGINT (py-spy then writes its file) and parsed; the next one starts at once (~70 ms of py-spy
    startup during which nothing is recorded). `on_chunk(samples, interval_ns)` gets every chunk."""

    def __init__(self, py_spy: str, pid: int, rate_hz: float, chunk_s: float, subprocesses: bool,
                 on_chunk: Callable[[list[tuple[int, str, list[Frame], int]], int], None],
                 on_error: Callable[[str], None], tmpdir: str) -> None:
        self.py_spy, self.pid, self.rate_hz, self.chunk_s = py_spy, pid, rate_hz, chunk_s
        self.subprocesses = subprocesses
        self.on_chunk, self.on_error = on_chunk, on_error
        self.tmpdir = tmpdir
        self.gil = True
        self.failed = False
        self.chunks = 0
        self.sampling_errors = 0      # samples py-spy record could not read (its "Errors: N")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="gyroscope-pyspy-record", daemon=True)
        self._thread.start()

    def stop(self, discard: bool = False) -> None:
        if discard:
            self.on_chunk = lambda samples, interval_ns: None
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=DUMP_TIMEOUT_S)

    def _cmd(self, out: str) -> list[str]:
        cmd = [self.py_spy, "record", "-p", str(self.pid), "-r", str(int(round(self.rate_hz))), "-f", "raw", "-t",
               "--nonblocking", "--full-filenames", "-o", out]
        if self.gil:
            cmd.append("--gil")
        if self.subprocesses:
            cmd.append("--subprocesses")
        return cmd

    def _run(self) -> None:
        failures = 0
        n = 0
        while not self._stop.is_set():
            n += 1
            out = os.path.join(self.tmpdir, f"chunk{n}.txt")
            try:
                proc = subprocess.Popen(self._cmd(out), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        start_new_session=True)
            except OSError as e:
                self.on_error(f"py-spy record: {e.strerror or e}")
                self.failed = True
                return
            self._stop.wait(self.chunk_s)
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
            try:
                said, err = proc.communicate(timeout=DUMP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                said, err = proc.communicate()
            m = re.search(rb"Samples: (\d+) Errors: (\d+)", said or b"")
            if m and int(m.group(2)):
                self.sampling_errors += int(m.group(2))
            text = ""
            try:
                with open(out, encoding="utf-8", errors="replace") as f:
                    text = f.read()
                os.unlink(out)
            except OSError:
                pass
            if text or proc.returncode == 0:
                failures = 0
                self.chunks += 1
                self.on_chunk(parse_raw(text), int(1e9 / self.rate_hz))
            if not is_alive(self.pid):
                return
            if proc.returncode != 0 and not text:
                msg = err.decode(errors="replace")
                if self.gil and "gil" in msg.lower():     # this interpreter's GIL state cannot be read
                    self.gil = False
                    continue
                failures += 1
                if _exits_soon(self.pid):
                    return
                first = next((ln for ln in msg.splitlines() if ln.strip()), "no output")
                self.on_error(f"py-spy record: {first}")
                if failures >= 3:
                    self.failed = True
                    return


class PySpySource:
    """The attach Source (bridges/events.py): py-spy record (running code) + py-spy dump (states, waits).

    After the session, `target_exited` says whether the target ended while watched and `failure`
    holds py-spy's error when it stopped working mid-run (what was collected is kept)."""

    name = "attach"

    def __init__(self, pid: int, py_spy: str, rate_hz: float = 100.0, wait_rate_hz: float = 10.0,
                 subprocesses: bool = False, own_code: Callable[[str], bool] = is_own_code,
                 dump: Callable[[], list[dict]] | None = None, record: bool = True, chunk_s: float = 1.0,
                 keep_stacks: bool = False) -> None:
        self.pid = pid
        self.interval_s = 1.0 / wait_rate_hz
        self.own_code = own_code
        self.dump = dump or PySpyDump(py_spy, pid, subprocesses)
        self._tmpdir = tempfile.mkdtemp(prefix="gyroscope-attach-") if record else ""
        self.record = RecordStream(py_spy, pid, rate_hz, chunk_s, subprocesses, self.ingest_running, self._error,
                                   self._tmpdir) if record else None
        self.target_exited = False
        self.failure: str | None = None
        self.finished = threading.Event()   # set when sampling ended on its own (exit or failure)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._threads: dict[int, _Thread] = {}
        self._pending: dict[tuple[Entity, EventKind, int], list[int]] = {}
        # dump's running samples since record's last chunk: used only if that chunk comes back empty
        self._dump_runs: dict[tuple[Entity, EventKind, int], list[int]] = {}
        self._dump_run_stacks: list[tuple[str, int, list[Frame], float]] = []   # the same, for keep_stacks
        self._run_scale = max(1, round(rate_hz / wait_rate_hz))
        self.empty_chunks = 0
        self._episodes: list[Event] = []
        self._lifecycle: list[Event] = []
        self._errors: list[str] = []
        self._n_errors = 0
        self._samples = 0
        self._raw = 0
        self._t_last = time.monotonic_ns()
        self._cpu0 = 0.0
        self._own_cpu_ns = 0
        # cumulative, for the live view
        self.total_samples = 0
        self.total_errors = 0
        self.run_counts: dict[Entity, int] = {}
        self.wait_ns: dict[Entity, int] = {}
        # with keep_stacks: seconds per (thread label, whole stack innermost-first), every thread and
        # every frame (not only the program's own code), for a speedscope flame graph
        self.stacks: dict[tuple[str, tuple[Frame, ...]], float] | None = {} if keep_stacks else None
        self.stacks_merged = 0   # samples folded into one "(other stacks)" entry beyond MAX_STACKS
        self._stack_samples: list[StackSample] = []   # with keep_stacks: Observation.stacks of the window

    # ---- lifecycle ------------------------------------------------------------------------
    def begin(self) -> None:
        """Take the first sample now, in the caller's thread (raises AttachError when py-spy cannot
        read the target: no such process, permission, not Python, unsupported version), then keep
        sampling from the agent thread. Call it early: the first window counts from here."""
        if self._thread is not None:
            return
        self._t_last = time.monotonic_ns()
        self._cpu0 = _children_cpu_s()
        if self.record is not None:
            self.record.start()      # py-spy record needs ~70 ms to start: overlap it with the first dump
        try:
            self.ingest(self._first_dump(), time.monotonic_ns(), first=True)
        except BaseException:
            if self.record is not None:
                self.record.stop(discard=True)
                shutil.rmtree(self._tmpdir, ignore_errors=True)
            raise
        self._thread = threading.Thread(target=self._run, name="gyroscope-pyspy", daemon=True)
        self._thread.start()

    def _first_dump(self) -> list[dict]:
        """A process that has just started has no interpreter state py-spy can find yet: a young
        target reported as "not Python" is asked again until it is STARTUP_GRACE_S old."""
        while True:
            try:
                return self.dump()
            except AttachError as e:
                if e.exit_code != EXIT_NOT_PYTHON or process_age_s(self.pid) > STARTUP_GRACE_S:
                    raise
            time.sleep(0.05)

    def start(self) -> None:
        self.begin()

    def poll(self) -> Observation:
        return self._take()

    def stop(self) -> Observation:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=DUMP_TIMEOUT_S + 2)
        if self.record is not None:
            self.record.stop()     # the last chunk is parsed before it returns
            shutil.rmtree(self._tmpdir, ignore_errors=True)
        now = time.monotonic_ns()
        with self._lock:
            for st in self._threads.values():
                self._end_episode(st)
                if self.target_exited:
                    self._lifecycle.append(Event(Entity(EntityKind.THREAD, "", st.name, 0), "life",
                                                 EventKind.THREAD_END, st.tid, now))
        return self._take()

    def agent_cpu_ns(self) -> int:
        """CPU spent by py-spy (the dump processes) and by the sampling thread."""
        return int((_children_cpu_s() - self._cpu0) * 1e9) + self._own_cpu_ns

    # ---- sampling -------------------------------------------------------------------------
    def _run(self) -> None:
        cpu0 = time.thread_time_ns()
        failures = 0
        next_t = time.monotonic()
        if self._stop.wait(self.interval_s):   # begin() took the first sample
            self.finished.set()
            return
        while not self._stop.is_set():
            try:
                traces = self.dump()
                failures = 0
                self.ingest(traces, time.monotonic_ns())
            except AttachError as e:
                # a target that is exiting makes py-spy fail (permission denied, no interpreter)
                # before it is gone: give it a moment before calling it a failure
                if _exits_soon(self.pid):
                    self.target_exited = True
                    break
                failures += 1
                self._error(f"py-spy: {e.message}")
                if failures >= MAX_CONSECUTIVE_FAILURES:
                    self.failure = e.message
                    break
            except Exception as e:  # never die silently
                failures += 1
                self._error(f"attach: {type(e).__name__}: {e}")
                if failures >= MAX_CONSECUTIVE_FAILURES:
                    self.failure = f"{type(e).__name__}: {e}"
                    break
            self._own_cpu_ns = time.thread_time_ns() - cpu0
            next_t += self.interval_s
            delay = next_t - time.monotonic()
            if delay < 0:          # dump is slower than the rate: sample back to back
                next_t = time.monotonic()
                delay = 0.0
            if self._stop.wait(delay):
                break
            if not is_alive(self.pid):
                self.target_exited = True
                break
        self._own_cpu_ns = time.thread_time_ns() - cpu0
        self.finished.set()

    def ingest(self, traces: list[dict], now: int, first: bool = False) -> None:
        """Fold one dump (py-spy's JSON: one entry per thread) into the pending events. Its running
        samples count only when py-spy record is not there (or, for the first dump, not started yet)."""
        with self._lock:
            self._samples += 1
            self.total_samples += 1
            seen = set()
            for tr in traces:
                self._raw += 1
                tid = int(tr.get("os_thread_id") or tr.get("thread_id") or 0)
                pid = int(tr.get("pid") or self.pid)
                st = self._threads.get(tid)
                if st is None:
                    name = tr.get("thread_name") or ("MainThread" if tid == pid else f"thread-{tid}")
                    st = self._threads[tid] = _Thread(pid, tid, name, now - int(self.interval_s * 1e9))
                    self._lifecycle.append(Event(Entity(EntityKind.THREAD, "", name, 0), "life",
                                                 EventKind.THREAD_START, tid, now))
                seen.add(tid)
                dt = max(0, now - st.last_ns)
                st.last_ns = now
                frames = [Frame(f.get("filename") or "", f.get("name") or "?", int(f.get("line") or 0))
                          for f in tr.get("frames") or ()]
                idle = not tr.get("active", True)
                if self.stacks is not None:
                    if idle or first or not tr.get("owns_gil") or self.record is None or self.record.failed:
                        self._keep_stack(st.name, tid, frames, dt / 1e9, "wait" if idle else "run")
                    else:   # the thread holding the GIL is py-spy record's, at its higher rate
                        self._dump_run_stacks.append((st.name, tid, frames, dt / 1e9))
                got = classify(frames, idle=idle, gil=tr.get("owns_gil"), is_own_code=self.own_code)
                if got is None:
                    self._end_episode(st)
                    continue
                ent, kind = got
                if kind == EventKind.SAMPLE_WAIT:
                    if st.wait_entity != ent:
                        self._end_episode(st)
                        st.wait_entity, st.wait_start_ns = ent, now - dt
                    st.wait_last_ns = now
                    self.wait_ns[ent] = self.wait_ns.get(ent, 0) + dt
                else:
                    self._end_episode(st)
                    if kind == EventKind.SAMPLE_RUN:
                        if not first and self.record is not None and not self.record.failed:
                            # running samples come from py-spy record, at its higher rate; kept aside
                            # in case record's chunk comes back empty
                            acc = self._dump_runs.setdefault((ent, kind, tid), [0, 0, now])
                            acc[0] += 1
                            acc[1] += dt
                            continue
                        self.run_counts[ent] = self.run_counts.get(ent, 0) + 1
                key = (ent, kind, tid)
                acc = self._pending.get(key)
                if acc is None:
                    self._pending[key] = [1, dt, now]
                else:
                    acc[0] += 1
                    acc[1] += dt
            for tid in [t for t in self._threads if t not in seen]:
                st = self._threads.pop(tid)
                self._end_episode(st)
                self._lifecycle.append(Event(Entity(EntityKind.THREAD, "", st.name, 0), "life",
                                             EventKind.THREAD_END, tid, now))

    def ingest_running(self, samples: list[tuple[int, str, list[Frame], int]], interval_ns: int) -> None:
        """Fold one chunk of py-spy record (GIL-holding stacks, `count` samples each) in as SAMPLE_RUN."""
        now = time.monotonic_ns()
        with self._lock:
            kept, self._dump_runs = self._dump_runs, {}
            kept_stacks, self._dump_run_stacks = self._dump_run_stacks, []
            recorded = sum(row[3] for row in samples)
            if kept and recorded < sum(v[0] for v in kept.values()):
                # record saw less running code than dump did at a tenth of its rate: it missed the GIL
                # holder (seen when it starts on a busy target). Count dump's samples for this chunk
                # instead, each worth rate/wait_rate record samples.
                self.empty_chunks += 1
                samples = []
                for name, tid, frames, seconds in kept_stacks:
                    self._keep_stack(name, tid, frames, seconds)
                for (ent, kind, tid), (count, dur, t0) in kept.items():
                    n = count * self._run_scale
                    self.run_counts[ent] = self.run_counts.get(ent, 0) + n
                    acc = self._pending.get((ent, kind, tid))
                    if acc is None:
                        self._pending[(ent, kind, tid)] = [n, dur, t0]
                    else:
                        acc[0] += n
                        acc[1] += dur
            for tid, name, frames, count in samples:
                if self.stacks is not None:
                    st = self._threads.get(tid)
                    self._keep_stack(st.name if st else (name or f"thread-{tid}"), tid, frames,
                                     count * interval_ns / 1e9, "run", count)
                self._raw += count
                self._samples += count
                self.total_samples += count
                got = classify(frames, idle=False, gil=True, is_own_code=self.own_code)
                if got is None:
                    continue
                ent, kind = got
                self.run_counts[ent] = self.run_counts.get(ent, 0) + count
                key = (ent, kind, tid)
                acc = self._pending.get(key)
                if acc is None:
                    self._pending[key] = [count, count * interval_ns, now]
                else:
                    acc[0] += count
                    acc[1] += count * interval_ns

    def _keep_stack(self, thread_name: str, tid: int, frames: list[Frame], seconds: float, state: str = "run",
                    count: int = 1) -> None:
        assert self.stacks is not None
        self._stack_samples.append(StackSample(self.pid, tid, thread_name, tuple(frames), state, count,
                                               int(seconds * 1e9)))
        key = (f"{thread_name} ({tid})", tuple(frames))
        if key not in self.stacks and len(self.stacks) >= MAX_STACKS:
            key = (key[0], (Frame("", "(other stacks)", 0),))
            self.stacks_merged += 1
        self.stacks[key] = self.stacks.get(key, 0.0) + seconds

    def _end_episode(self, st: _Thread) -> None:
        if st.wait_entity is not None:
            self._episodes.append(Event(st.wait_entity, "wait", EventKind.LOCK_WAIT, st.tid, st.wait_start_ns, 1,
                                        max(0, st.wait_last_ns - st.wait_start_ns)))
            st.wait_entity = None

    def _error(self, msg: str) -> None:
        with self._lock:
            self.total_errors += 1
            self._n_errors += 1
            if self._n_errors <= MAX_ERRORS:
                self._errors.append(msg)
            elif self._n_errors == MAX_ERRORS + 1:
                self._errors.append("py-spy: more errors not shown")

    def _take(self) -> Observation:
        now = time.monotonic_ns()
        with self._lock:
            pending, self._pending = self._pending, {}
            episodes, self._episodes = self._episodes, []
            life, self._lifecycle = self._lifecycle, []
            errors, self._errors = self._errors, []
            samples, self._samples = self._samples, 0
            raw, self._raw = self._raw, 0
            stacks, self._stack_samples = self._stack_samples, []
            threads = {st.tid: ThreadInfo(st.tid, st.name, _thread_cpu_ns(st.pid, st.tid))
                       for st in self._threads.values()}
        role = {EventKind.SAMPLE_RUN: "run", EventKind.SAMPLE_GIL: "run", EventKind.SAMPLE_WAIT: "wait"}
        events = [Event(ent, role[kind], kind, tid, acc[2], acc[0], acc[1])
                  for (ent, kind, tid), acc in pending.items()]
        obs = Observation(self._t_last, now, life + events + episodes, threads, samples, raw, 0, errors, stacks)
        self._t_last = now
        return obs


def _exits_soon(pid: int, within_s: float = 0.3) -> bool:
    deadline = time.monotonic() + within_s
    while is_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def _children_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def sampler_for_child(pid: int, own_code: Callable[[str], bool], rate_hz: float | None = None,
                      subprocesses: bool = True) -> PySpySource:
    """A started-ready sampler for a program `gyroscope run` just started (its interpreter is up)."""
    src = PySpySource(pid, find_py_spy(), rate_hz=rate_hz or 100.0, subprocesses=subprocesses, own_code=own_code)
    src.name = "run"
    src.begin()
    return src
