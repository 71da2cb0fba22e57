"""Watch a Python process from outside with py-spy: the source of `gyroscope attach` and of
`gyroscope run` (pointed at the child it started, `fresh=True`).

How it samples, and why (py-spy 0.4.3, CPython 3.13 target, 2-core box):

- Stacks: `py-spy record -f chrometrace --idle --threads --nonblocking` in overlapping chunks
  (bridges/pyspy_record.py): every thread at every sample, with time, no gap between chunks
  (measured: 541 samples per thread over a 5.43 s run at 100 Hz, gap 0 ms; py-spy's first sample
  7-33 ms after it starts, also on a process that was just spawned). py-spy record costs ~0.4 ms
  of CPU per sample; the `py-spy dump` the previous design polled at 10 Hz for thread states cost
  ~12 ms of CPU and ~30 ms of wall per call (4-8x the watcher CPU of py-spy record alone), and
  is gone: one `py-spy dump --nonblocking` remains, as the pre-flight check (no such process,
  permission, not Python, unsupported version; it also gives the target's Python version).
- Thread CPU and states: /proc (bridges/procfs.py), polled every `poll_s` (0.2 s) from the
  recorder's own thread: exact per-thread CPU nanoseconds (schedstat). Each thread's CPU time is
  spread over its samples (bridges/cpu_attribution.py): CPU shares are shares of the process's
  CPU time; a thread waiting for the GIL is not running (SAMPLE_GIL); a stack whose leaf is a
  blocking call (bridges.stacks.waiting_leaf) and that used no CPU is a wait (SAMPLE_WAIT, and
  consecutive samples of one thread at one site form one LOCK_WAIT episode).

Every window's Observation carries the events (SAMPLE_RUN with duration = CPU ns, SAMPLE_GIL and
SAMPLE_WAIT with duration = wall ns, LOCK_WAIT episodes, thread starts and ends) and the raw
stacks (`Observation.stacks`: StackSample per thread, stack and state with count, wall and CPU
time) for the profiles. Stacks arrive one chunk late: an event's t_ns
is when it was sampled, not when it was delivered. Chunks grow from 0.5 s to chunk_s (4 s).

Stacks are classified by bridges.stacks.classify. The program's own code is every file outside
the interpreter's standard library and site-packages.
"""
from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

# The exit codes live in the CLI (agent/cli.py EXIT_CODES); these names pick the error class.
from gyroscope.agent.cli import (  # noqa: E402
    EXIT_NO_PYSPY,
    EXIT_NO_SUCH_PID,
    EXIT_NOT_PYTHON,
    EXIT_PERMISSION,
    EXIT_PYSPY_FAILED,
    EXIT_UNSUPPORTED_PYTHON,
)

# One error tree (agent/errors.py): AttachError(message, code) builds the matching subclass.
from gyroscope.agent.errors import AttachError  # noqa: E402
from gyroscope.bridges import codemap, procfs, tmpdir
from gyroscope.bridges.cpu_attribution import CpuHistory, attribute
from gyroscope.bridges.events import (
    Entity,
    EntityKind,
    Event,
    EventKind,
    Observation,
    StackSample,
    StackState,
    ThreadInfo,
    pooled_thread_name,
)
from gyroscope.bridges.owncode import looks_like_program
from gyroscope.bridges.pyspy_record import ChunkedRecorder, Span
from gyroscope.bridges.stacks import (
    NOT_YET,
    Frame,
    calls_nothing,
    classify,
    enclosing_loops,
    library_loop,
    waiting_leaf,
)

SUPPORTED_PYTHONS = "CPython 2.3-2.7 and 3.3-3.14"   # what py-spy 0.4.x can read
DUMP_TIMEOUT_S = 10.0
MAX_ERRORS = 20
STARTUP_GRACE_S = 1.5  # a target younger than this that py-spy calls "not Python" is asked again
MAX_STACKS = 100_000   # distinct (thread, stack) pairs kept for --speedscope; the rest are merged
DEFAULT_RATE_HZ = 100.0
BRIDGE_THREAD = "gyroscope"   # the in-process bridge's native thread (bridges/_inproc.pyx) names itself so
DEFAULT_CHUNK_S = 4.0
HISTORY_KEEP_NS = 3_000_000_000


# kept under their old names for the callers of this module
process_state = procfs.process_state
process_age_s = procfs.process_age_s
is_alive = procfs.is_alive
_children = procfs.children
_exe = procfs.exe
target_cmdline = procfs.cmdline


def find_py_spy(explicit: str | None = None) -> str:
    """The py-spy executable: `explicit`, else next to sys.executable, in the venv's bin, on PATH."""
    if explicit:
        if os.path.isfile(explicit) and os.access(explicit, os.X_OK):
            return explicit
        raise AttachError(f"py-spy not found at {explicit} (give the path of an executable py-spy)",
                          EXIT_NO_PYSPY)
    # beside this python, in its prefix, then on PATH (shutil.which's rule, without shutil)
    dirs = [os.path.dirname(sys.executable), os.path.join(sys.prefix, "bin"),
            *os.environ.get("PATH", os.defpath).split(os.pathsep)]
    for d in dirs:
        c = os.path.join(d or ".", "py-spy")
        if os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    raise AttachError("py-spy not found (install it: pip install py-spy, or pass --py-spy PATH)", EXIT_NO_PYSPY)


# the one rule for a file name alone (bridges/owncode.py)
is_own_code = looks_like_program


def explain_failure(pid: int, text: str) -> AttachError:
    """Map py-spy's error output for `pid` to one clear line and an exit code."""
    low = text.lower()
    if not is_alive(pid) or "check that the process is running" in low or "no such process" in low:
        return AttachError(f"no such process: {pid}", EXIT_NO_SUCH_PID)
    if "permission denied" in low or "operation not permitted" in low:
        return AttachError(f"permission denied attaching to process {pid} (ptrace): "
                           f"{procfs.ptrace_denied_reason(pid)}", EXIT_PERMISSION)
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


def check_pid(pid: int) -> None:
    if pid <= 0 or not is_alive(pid):
        raise AttachError(f"no such process: {pid}", EXIT_NO_SUCH_PID)


def python_version(py_spy: str, pid: int) -> str:
    """The target's Python version as py-spy reports it ("" if it cannot say); raises AttachError
    (no such process, permission, not Python, unsupported version) when py-spy cannot read it."""
    try:
        # --nonblocking: the target is not paused
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




@dataclasses.dataclass(slots=True)
class _Thread:
    pid: int
    tid: int
    name: str
    wait_entity: Entity | None = None
    wait_start_ns: int = 0
    wait_last_ns: int = 0


_ROLE = {EventKind.SAMPLE_RUN: "run", EventKind.SAMPLE_GIL: "run", EventKind.SAMPLE_WAIT: "wait"}
# roles of running samples whose leaf is library code (bridges/stacks.py library_loop): "via" on
# the program's frame (its time is in what it calls), "lib" on the library's loop
ROLE_VIA, ROLE_LIB = "via", "lib"


MEMO_MAX = 50_000   # stacks remembered per memo (classification, library loop); then forgotten
LIBRARY_FILE_MIN_SAMPLES = 3   # running samples in a library file before its loops are looked for


def _memo(cache: dict, key: Any, compute: Callable[[], Any]) -> Any:
    """cache[key], computed once; the cache is cleared when it reaches MEMO_MAX entries."""
    if key in cache:
        return cache[key]
    if len(cache) >= MEMO_MAX:
        cache.clear()
    got = cache[key] = compute()
    return got


class PySpySource:
    """The Source (bridges/events.py) that samples a process from outside: py-spy record stacks
    (bridges/pyspy_record.py) + /proc CPU times (bridges/cpu_attribution.py).

        src = PySpySource(pid, rate_hz=100)            # attach: begin() checks the target first
        src = PySpySource(child_pid, fresh=True)       # run: the target was just started by us
        src.start(); ...; obs = src.poll(); ...; obs = src.stop()

    `fresh`: no pre-flight (it would fail on an interpreter still starting); py-spy is retried
    quietly until it finds the interpreter, and start() never blocks. stop() ends the py-spy
    running now and delivers its samples (a 0.15 s program keeps them); when the target exits,
    `finished` is set and `target_exited` is True. `failure` holds py-spy's error when it stopped
    working mid-run (what was collected is kept). `entity_pid` puts a PID on every Entity (set it
    when one session watches several processes). `name` is the session's "source" field. The
    first 1.75 s are sampled faster (bridges/pyspy_record.py RAMP_X)."""

    name = "attach"

    def __init__(self, pid: int, py_spy: str | None = None, rate_hz: float = DEFAULT_RATE_HZ,
                 subprocesses: bool = False, own_code: Callable[[str], bool] = is_own_code,
                 fresh: bool = False, keep_stacks: bool = False, chunk_s: float = DEFAULT_CHUNK_S,
                 overlap_s: float | None = None, poll_s: float = 0.2, entity_pid: int = 0,
                 name: str = "attach") -> None:
        self.name = name           # the session's "source": "attach", or "run" for run's child
        self.pid = pid
        self.py_spy = py_spy or find_py_spy()
        self.rate_hz = rate_hz
        self.interval_ns = int(1e9 / rate_hz)
        self.own_code = own_code
        self.fresh = fresh
        self.entity_pid = entity_pid
        self.python_version = ""
        self._tmpdir = tmpdir.private_dir("gyroscope-pyspy")
        self.record = ChunkedRecorder(self.py_spy, pid, rate_hz, self._on_spans, self._error, self._tmpdir,
                                      chunk_s=chunk_s, overlap_s=overlap_s, subprocesses=subprocesses,
                                      fresh=fresh, explain=explain_failure, on_tick=self._poll_proc,
                                      tick_s=poll_s)
        self._exited = False
        self.finished = self.record.finished   # set when sampling ended on its own (exit or failure)
        self._lock = threading.Lock()
        self._started = False
        self._stopped = False
        self._pids = {pid}
        self._history = CpuHistory()
        self._proc_threads: dict[int, procfs.ThreadStat] = {}
        self._bridge_tids: set[int] = set()   # gyroscope's own shipper thread in a `run` program
        self._threads: dict[int, _Thread] = {}
        self._gone: dict[int, int] = {}      # threads no longer in /proc -> when they were missed
        self._events: dict[tuple[Entity, EventKind, int, str], list] = {}
        self._lib_loops: dict[tuple[Frame, ...], Entity | None] = {}
        self._lib_file_samples: dict[str, int] = {}   # running samples seen per library file not read yet
        self._stacks: dict[tuple[int, int, tuple[Frame, ...], str], list] = {}
        self._classified: dict[tuple[tuple[Frame, ...], str], tuple[Entity, EventKind] | None] = {}
        self._outer: dict[tuple[Frame, ...], list[Entity]] = {}    # stacks -> their enclosing_loops
        self._enclosing: dict[Entity, int] = {}
        self._episodes: list[Event] = []
        self._lifecycle: list[Event] = []
        self._errors: list[str] = []
        self._n_errors = 0
        self._samples = 0.0
        self._raw = 0
        self._t_last = time.monotonic_ns()
        # cumulative, for the live view and the attach block of the result
        self.total_samples = 0
        self.total_errors = 0
        self.run_counts: dict[Entity, int] = {}
        self.wait_ns: dict[Entity, int] = {}
        self.cpu_ns_total = 0
        # with keep_stacks: seconds per (thread label, whole stack innermost-first), every thread and
        # every frame, for a speedscope flame graph (bounded: MAX_STACKS, then merged)
        self.stacks: dict[tuple[str, tuple[Frame, ...]], float] | None = {} if keep_stacks else None
        self.stacks_merged = 0

    # ---- lifecycle ------------------------------------------------------------------------
    def begin(self) -> None:
        """Check the target (not when `fresh`: raises AttachError when py-spy cannot read it: no
        such process, permission, not Python, unsupported version), then sample it from a
        background thread. The first window counts from here."""
        if self._started:
            return
        if not self.fresh:
            check_pid(self.pid)
        self._started = True
        self._t_last = time.monotonic_ns()
        self._poll_proc()
        if not self.fresh:
            # before the recorder, not beside it: two py-spy at once count its 5 MiB of RSS twice
            # (4 of them its binary's shared pages); the ~30 ms this adds to attach's start does
            # not matter to a running target
            try:
                self.python_version = self._preflight()
            except BaseException:
                self.discard()
                raise
        self.record.start()

    def start(self) -> None:
        self.begin()

    def _preflight(self) -> str:
        """A process that has just started has no interpreter state py-spy can find yet: a young
        target reported as "not Python" is asked again until it is STARTUP_GRACE_S old."""
        check_pid(self.pid)
        transient = 0
        while True:
            try:
                return python_version(self.py_spy, self.pid)
            except AttachError as e:
                # --nonblocking reads can catch the interpreter mid-update ("Failed to get stack
                # traces"): only a repeated failure of that kind is one
                if e.exit_code == EXIT_PYSPY_FAILED and transient < 4:
                    transient += 1
                elif e.exit_code != EXIT_NOT_PYTHON or procfs.process_age_s(self.pid) > STARTUP_GRACE_S:
                    raise
            time.sleep(0.05)

    def poll(self) -> Observation:
        return self._take()

    def stop(self) -> Observation:
        if self._started and not self._stopped:
            self._stopped = True
            self.record.stop()     # the chunks running now are parsed before it returns
            tmpdir.remove_dir(self._tmpdir)
        self._exited = not procfs.is_alive(self.pid)
        now = time.monotonic_ns()
        with self._lock:
            for st in self._threads.values():
                self._end_episode(st)
                if self.target_exited:
                    self._lifecycle.append(Event(self._thread_entity(st), "life", EventKind.THREAD_END, st.tid, now))
            if self.target_exited:
                self._threads.clear()
        return self._take()

    def finish_soon(self) -> None:
        """The target is ending (its interpreter's exit began): end py-spy's last chunk now, while
        the target finalises, instead of after it (stop() still ends the session)."""
        if self._started and not self._stopped:
            self.record.finish_soon()

    @property
    def target_exited(self) -> bool:
        """The target ended while watched (known once sampling ended)."""
        return self._exited or (self.record.finished.is_set() and not procfs.is_alive(self.pid))

    @property
    def failure(self) -> str | None:
        """py-spy's error when it stopped working mid-run (None otherwise)."""
        return self.record.failure

    def discard(self) -> None:
        """Stop without delivering anything (a failed start)."""
        self._stopped = True
        self.record.on_error = lambda msg: None
        self.record.stop(discard=True)
        tmpdir.remove_dir(self._tmpdir)

    def agent_cpu_ns(self) -> int:
        """CPU spent by the processes this one ran and reaped: the py-spy processes that ended
        (under `gyroscope run` also the program, which RunSource takes off). The recorder's
        thread is in this process's own CPU time."""
        return procfs.reaped_children_cpu_ns()

    @property
    def gap_ns(self) -> int:
        return self.record.gap_ns

    # ---- /proc ----------------------------------------------------------------------------
    def _poll_proc(self) -> None:
        """One reading of every watched thread's CPU time (the recorder's thread, every poll_s)."""
        now = time.monotonic_ns()
        seen: dict[int, procfs.ThreadStat] = {}
        reading: dict[int, tuple[int, int]] = {}
        for pid in list(self._pids):
            got = procfs.threads(pid)
            total = procfs.process_cpu_ns(pid)
            if total is not None:
                reading[-pid] = (total, 0)
            if not got and pid != self.pid:
                self._pids.discard(pid)
            seen.update(got)
        reading.update((tid, (st.cpu_ns, st.runq_ns)) for tid, st in seen.items())
        bridge = {tid for tid, st in seen.items() if st.comm == BRIDGE_THREAD}
        with self._lock:
            self._bridge_tids |= bridge
            self._history.add(now, reading)
            self._proc_threads = seen
            for tid in self._threads:
                if tid not in seen and tid not in self._gone:
                    self._gone[tid] = now     # ended once the stacks up to `now` are in

    def _end_threads(self, until_ns: int) -> None:
        for tid, t in list(self._gone.items()):
            if t <= until_ns:
                del self._gone[tid]
                st = self._threads.pop(tid, None)
                if st is not None:
                    self._end_episode(st)
                    self._lifecycle.append(Event(self._thread_entity(st), "life", EventKind.THREAD_END, tid, t))

    # ---- stacks -> events -----------------------------------------------------------------
    def _on_spans(self, spans: list[Span], t_end_ns: int) -> None:
        """One chunk of py-spy stacks (recorder's thread): attribute CPU, fold into the window."""
        for s in spans:
            if s.pid and s.pid not in self._pids:
                self._pids.add(s.pid)
        self._poll_proc()      # a reading at the end of the chunk: every span is inside the history
        with self._lock:
            spans = [s for s in self._clip_ended(spans) if s.tid not in self._bridge_tids]
            portions = attribute(spans, self._history, waiting_leaf, self._bridge_tids, calls_nothing)
            self._raw += len(spans)
            for p in portions:
                self._fold(p.span, p.t0_ns, p.t1_ns, p.run_ns, p.gil_ns, p.wait_ns, p.cpu_ns)
            self._end_threads(t_end_ns)
            self._history.trim(t_end_ns - HISTORY_KEEP_NS)

    def _clip_ended(self, spans: list[Span]) -> list[Span]:
        """py-spy's chrometrace keeps a thread's last stack open until the chunk is written, even
        when the thread ended long before: a thread that was crunching looked busy for the rest of
        the chunk (measured: 0.35 s of a 0.4 s thread). A span of a thread that /proc saw end is
        cut at the first reading without it."""
        out = []
        for s in spans:
            end = self._history.ended_by(s.tid)
            if end is not None and s.t1_ns > end:
                if s.t0_ns >= end:
                    continue
                s.t1_ns = end
            out.append(s)
        return out

    def _thread_entity(self, st: _Thread) -> Entity:
        # one entity per kind of thread, not per thread: a server that starts a thread per request
        # ("Thread-8121 (process_request_thread)") must not grow the session by one entity each
        return Entity(EntityKind.THREAD, "", pooled_thread_name(st.name) or st.name, 0,
                      pid=self.entity_pid and st.pid)

    def _fold(self, span: Span, t0: int, t1: int, run: int, gil: int, wait: int, cpu: int) -> None:
        st = self._threads.get(span.tid)
        if st is None:
            name = span.thread_name or ("MainThread" if span.tid == span.pid else f"thread-{span.tid}")
            st = self._threads[span.tid] = _Thread(span.pid or self.pid, span.tid, name)
            self._lifecycle.append(Event(self._thread_entity(st), "life", EventKind.THREAD_START, span.tid, t0))
        elif span.thread_name and st.name != span.thread_name and st.name.startswith("thread-"):
            st.name = span.thread_name
        wall = run + gil + wait      # a part after the thread's end may have been dropped
        if wall <= 0:
            return
        n = wall / self.interval_ns
        self._samples += n
        self.cpu_ns_total += cpu
        waiting = None
        for state, ns in ((StackState.RUN, run), (StackState.GIL, gil), (StackState.WAIT, wait)):
            if ns <= 0:
                continue
            frac = n * ns / wall
            key = (st.pid, st.tid, span.frames, state)
            acc = self._stacks.get(key)
            if acc is None:
                self._stacks[key] = [frac, ns, cpu if state == StackState.RUN else 0, st.name]
            else:
                acc[0] += frac
                acc[1] += ns
                if state == StackState.RUN:
                    acc[2] += cpu
            if self.stacks is not None:
                self._keep_stack(st.name, st.tid, span.frames, ns / 1e9)
            got = self._classify(span.frames, state)
            if got is None:
                continue
            ent, kind = got
            if kind == EventKind.SAMPLE_RUN:
                for outer in self._enclosing_loops(span.frames):
                    self._enclosing[outer] = self._enclosing.get(outer, 0) + cpu
            dur = cpu if state == StackState.RUN else ns
            role = _ROLE[kind]
            if kind == EventKind.SAMPLE_RUN and span.frames and not self.own_code(span.frames[0].file):
                role = ROLE_VIA     # running in library code the program's frame called
                lib = self._library_loop(span.frames)
                if lib is not None:
                    self._add_event((lib, kind, st.tid, ROLE_LIB), frac, dur, t0)
            self._add_event((ent, kind, st.tid, role), frac, dur, t0)
            if kind == EventKind.SAMPLE_WAIT:
                self.wait_ns[ent] = self.wait_ns.get(ent, 0) + ns
                if ns * 2 >= wall:
                    waiting = ent
            elif kind == EventKind.SAMPLE_RUN:
                self.run_counts[ent] = self.run_counts.get(ent, 0) + max(1, round(frac))
        # wait episodes: consecutive samples of one thread waiting at one site
        if waiting is not None:
            if st.wait_entity != waiting or t0 - st.wait_last_ns > 2 * self.interval_ns:
                self._end_episode(st)
                st.wait_entity, st.wait_start_ns = waiting, t0
            st.wait_last_ns = t1
        else:
            self._end_episode(st)

    def _add_event(self, key: tuple[Entity, EventKind, int, str], frac: float, dur: int, t0: int) -> None:
        acc = self._events.get(key)
        if acc is None:
            self._events[key] = [frac, dur, t0]
        else:
            acc[0] += frac
            acc[1] += dur

    def _library_loop(self, frames: tuple[Frame, ...]) -> Entity | None:
        if frames in self._lib_loops:
            return self._lib_loops[frames]
        ent = library_loop(list(frames), self.own_code, ready=self._library_file_ready)
        if ent is NOT_YET:
            return None     # not remembered: asked again at the stack's next sample
        if ent is not None and self.entity_pid:
            ent = dataclasses.replace(ent, pid=self.entity_pid)
        return _memo(self._lib_loops, frames, lambda: ent)

    def _library_file_ready(self, path: str) -> bool:
        """A library file is read (and parsed, ~10 ms for a large module) for its loops once it
        has been under LIBRARY_FILE_MIN_SAMPLES running samples: a module seen once or twice (an
        import, a call at start-up) has no loop worth naming, and parsing every such module of
        a library-heavy program cost ~0.1 s after the program had ended."""
        n = self._lib_file_samples.get(path, 0) + 1
        if len(self._lib_file_samples) >= MEMO_MAX:
            self._lib_file_samples.clear()
        self._lib_file_samples[path] = n
        return n >= LIBRARY_FILE_MIN_SAMPLES or codemap.has_map(path)

    def _classify(self, frames: tuple[Frame, ...], state: str) -> tuple[Entity, EventKind] | None:
        def compute() -> tuple[Entity, EventKind] | None:
            got = classify(list(frames), idle=state == StackState.WAIT, gil=state != StackState.GIL,
                           is_own_code=self.own_code)
            if got is not None and self.entity_pid:
                got = (dataclasses.replace(got[0], pid=self.entity_pid), got[1])
            return got
        return _memo(self._classified, (frames, state), compute)

    def _enclosing_loops(self, frames: tuple[Frame, ...]) -> list[Entity]:
        def compute() -> list[Entity]:
            got = enclosing_loops(frames, self.own_code)
            return [dataclasses.replace(e, pid=self.entity_pid) for e in got] if self.entity_pid else got
        return _memo(self._outer, frames, compute)

    def _keep_stack(self, thread_name: str, tid: int, frames: tuple[Frame, ...], seconds: float) -> None:
        assert self.stacks is not None
        # a kind of numbered thread is one profile, not one per thread (bounded memory)
        key = (pooled_thread_name(thread_name) or f"{thread_name} ({tid})", frames)
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
            events_acc, self._events = self._events, {}
            stacks_acc, self._stacks = self._stacks, {}
            episodes, self._episodes = self._episodes, []
            life, self._lifecycle = self._lifecycle, []
            errors, self._errors = self._errors, []
            samples, self._samples = self._samples, 0.0
            raw, self._raw = self._raw, 0
            enclosing, self._enclosing = self._enclosing, {}
            names = {st.tid: st.name for st in self._threads.values()}
            threads = {tid: ThreadInfo(tid, names[tid], ps.cpu_ns)
                       for tid, ps in self._proc_threads.items() if tid in names}
        n_samples = int(round(samples))
        self.total_samples += n_samples
        events = [Event(ent, role, kind, tid, acc[2], max(1, round(acc[0])), acc[1])
                  for (ent, kind, tid, role), acc in events_acc.items()]
        stacks = [StackSample(pid, tid, acc[3], frames, state, max(1, round(acc[0])), acc[1], acc[2])
                  for (pid, tid, frames, state), acc in stacks_acc.items()]
        obs = Observation(self._t_last, now, life + events + episodes, threads, n_samples, raw, 0, errors,
                          stacks, self.entity_pid, enclosing=enclosing)
        self._t_last = now
        return obs
