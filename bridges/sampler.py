"""An in-process, low-rate stack sampler: where threads run and where they wait.

On Python 3.12 a `with lock:` acquire produces no CALL event, so lock waits cannot be seen by
sys.monitoring alone. Instead one agent thread wakes every `interval_s` (default 10 ms; 3x less often while the program has a single
thread, which cannot contend), takes
`sys._current_frames()`, reads each thread's CPU clock (`time.pthread_getcpuclockid` +
`time.clock_gettime_ns`) and decides per thread:

- running  (CPU used >= half of the elapsed time): SAMPLE_RUN on the innermost frame of the
  program's own code: its innermost loop (entity kind "loop", line = the loop header) or the
  function ("function", line = the def line);
- blocked  (little CPU and the stack is in a blocking call): SAMPLE_WAIT on the call site in the
  program's own code, with what it waits in (WaitKind). Locks, RLocks, Conditions and
  Semaphores give "lock" entities; sleeps, sockets, select, queues, events and joins give
  "wait" entities. Consecutive samples of one thread blocked at one site form one wait
  episode, reported as a LOCK_WAIT event with its (sampled) duration when it ends;
- runnable (little CPU, not in a blocking call): SAMPLE_GIL (waiting for the interpreter lock).

Threads appearing and disappearing give THREAD_START / THREAD_END. The agent's own threads
(the sampler, the session, any thread alive before the program started, threads named with
an excluded prefix such as the OpenTelemetry SDK's "Otel...", and threads first seen running
gyroscope's or OpenTelemetry's code) are never sampled.

The sampler's cost is its own thread's CPU time (`cpu_ns()`), reported as agent CPU.
"""
from __future__ import annotations

import ast
import dis
import linecache
import os
import sys
import threading
import time
from collections.abc import Callable
from types import CodeType, FrameType

from gyroscope.bridges.events import Entity, EntityKind, Event, EventKind, ThreadInfo, WaitKind
from gyroscope.bridges.stacks import LIBRARY_WAITS, LOCK_WAITS

EXCLUDED_THREAD_PREFIXES = ("gyroscope", "Otel")
_PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_AGENT_DIRS = tuple(os.path.join(_PROJECT, d, "") for d in ("agent", "bridges", "cyext", "schedulers"))
WOKE_CPU_NS = 20_000   # a blocked thread uses no CPU; more than this between two samples means it woke

# The tables of what a library frame or a lock-like wait means live in bridges/stacks.py (one place).
_LIBRARY_FILE_WAITS = {"selectors.py": WaitKind.SELECT, "socket.py": WaitKind.SOCKET, "ssl.py": WaitKind.SOCKET,
                       "base_events.py": WaitKind.SELECT, "connection.py": WaitKind.OTHER}

# Names of callables that block, when called straight from the program's code.
_CALL_WAITS = {
    "sleep": WaitKind.SLEEP, "acquire": WaitKind.LOCK, "wait": WaitKind.EVENT, "wait_for": WaitKind.CONDITION,
    "join": WaitKind.JOIN, "get": WaitKind.QUEUE, "put": WaitKind.QUEUE, "select": WaitKind.SELECT,
    "poll": WaitKind.SELECT, "epoll": WaitKind.SELECT, "recv": WaitKind.SOCKET, "recv_into": WaitKind.SOCKET,
    "recvfrom": WaitKind.SOCKET, "send": WaitKind.SOCKET, "sendall": WaitKind.SOCKET, "accept": WaitKind.SOCKET,
    "connect": WaitKind.SOCKET, "create_connection": WaitKind.SOCKET, "read": WaitKind.OTHER,
    "readline": WaitKind.OTHER, "input": WaitKind.OTHER, "communicate": WaitKind.OTHER, "run": WaitKind.OTHER,
}
_BEFORE_WITH = dis.opmap.get("BEFORE_WITH", -1)
_CALL_OPS = {dis.opmap[n] for n in ("CALL", "CALL_FUNCTION_EX") if n in dis.opmap}


_LOOP_NODES = (ast.For, ast.While, ast.AsyncFor, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


class LoopMap:
    """Source line -> innermost loop header line, from the file's AST (cached per file).
    Loops are for / while / async for statements and comprehensions (inlined in 3.12)."""

    def __init__(self) -> None:
        self._loops: dict[str, list[tuple[int, int]]] = {}

    def loops(self, filename: str) -> list[tuple[int, int]]:
        spans = self._loops.get(filename)
        if spans is None:
            spans = []
            try:
                source = "".join(linecache.getlines(filename))
                if source:
                    for node in ast.walk(ast.parse(source, filename)):
                        if isinstance(node, _LOOP_NODES):
                            spans.append((node.lineno, node.end_lineno or node.lineno))
            except (SyntaxError, ValueError, RecursionError, MemoryError):
                spans = []
            spans.sort()
            self._loops[filename] = spans
        return spans

    def header(self, code: CodeType, *lines: int) -> int:
        """The header line of the innermost loop of `code` containing all `lines`, or 0."""
        best = 0
        best_size = 1 << 30
        first = code.co_firstlineno
        for start, end in self.loops(code.co_filename):
            if start < first and code.co_name != "<module>":
                continue
            if all(start <= ln <= end for ln in lines) and end - start < best_size:
                best, best_size = start, end - start
        return best


class _ThreadState:
    __slots__ = ("ident", "native_id", "name", "clock", "cpu_ns", "t_ns", "wait_entity", "wait_start_ns",
                 "wait_last_ns")

    def __init__(self, ident: int, native_id: int, name: str, clock: int | None) -> None:
        self.ident = ident
        self.native_id = native_id
        self.name = name
        self.clock = clock
        self.cpu_ns = -1
        self.t_ns = 0
        self.wait_entity: Entity | None = None
        self.wait_start_ns = 0
        self.wait_last_ns = 0


class StackSampler:
    """The sampler thread. `take()` returns (events, threads, samples, dropped) since the last call."""

    def __init__(self, is_ours: Callable[[CodeType], bool], interval_s: float = 0.01,
                 loop_map: LoopMap | None = None, exclude_idents: set[int] | None = None,
                 max_keys: int = 50_000, single_thread_factor: float = 3.0) -> None:
        self.is_ours = is_ours
        self.interval_s = interval_s
        self.single_thread_factor = single_thread_factor
        self.loop_map = loop_map or LoopMap()
        self.exclude = set(exclude_idents or ())
        self._main_ident = threading.main_thread().ident
        self.natives: dict[int, int] = {}   # thread ident -> native id of every thread seen (kept after it ends)
        self.max_keys = max_keys
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._cpu_ns = 0
        self._ours_cache: dict[CodeType, int] = {}
        self._site_cache: dict[tuple[CodeType, int], Entity] = {}
        self._wait_entities: dict[tuple[CodeType, int, str], Entity] = {}
        self._canonical: dict[Entity, Entity] = {}
        self._wait_cache: dict[tuple[CodeType, int], str | None] = {}
        self._threads: dict[int, _ThreadState] = {}
        # (id(entity), kind, thread) -> [count, duration, t0, entity]; entities are canonical (cached)
        self._pending: dict[tuple[int, int, int], list] = {}
        self._episodes: list[Event] = []
        self._lifecycle: list[Event] = []
        self._samples = 0
        self._dropped = 0
        self.errors: list[str] = []

    # ---- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="gyroscope-sampler", daemon=True)
        self._thread.start()
        self.exclude.add(self._thread.ident)

    @property
    def ident(self) -> int | None:
        return self._thread.ident if self._thread is not None else None

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)
        with self._lock:
            for st in self._threads.values():
                self._end_episode(st)

    def cpu_ns(self) -> int:
        return self._cpu_ns

    def _run(self) -> None:
        t_cpu0 = time.thread_time_ns()
        sleep = time.sleep
        stop = self._stop
        while True:
            # one GIL release / re-acquire per sample (Event.wait costs several); a program with
            # one thread cannot contend, so it is sampled `single_thread_factor` times less often
            many = len(self._threads) > 1
            nap = self.interval_s if many else self.interval_s * self.single_thread_factor
            if nap <= 0.1:
                sleep(nap)
            else:   # a long interval must not delay the program's exit: wake on stop
                stop.wait(nap)
            if stop.is_set():
                break
            try:
                self.sample_once()
            except Exception as e:  # the sampler never dies silently, never breaks the program
                if len(self.errors) < 20:
                    self.errors.append(f"sampler: {type(e).__name__}: {e}")
            self._cpu_ns = time.thread_time_ns() - t_cpu0

    # ---- one sample -----------------------------------------------------------------------
    def sample_once(self) -> None:
        if self._stop.is_set():
            return
        frames = sys._current_frames()
        now = time.monotonic_ns()
        active = threading._active  # ident -> Thread (read-only use)
        with self._lock:
            self._samples += 1
            seen = set()
            for ident, frame in frames.items():
                if ident in self.exclude:
                    continue
                st = self._threads.get(ident)
                if st is None:
                    th = active.get(ident)
                    name = th.name if th is not None else f"thread-{ident}"
                    if name.startswith(EXCLUDED_THREAD_PREFIXES) or (
                            ident != self._main_ident and _agent_stack(frame)):   # main runs the program
                        self.exclude.add(ident)
                        continue
                    native = (th.native_id if th is not None else None) or ident
                    try:
                        clock = time.pthread_getcpuclockid(ident)
                    except (OSError, OverflowError):
                        clock = None
                    st = self._threads[ident] = _ThreadState(ident, native, name, clock)
                    self.natives[ident] = native
                    self._lifecycle.append(Event(Entity(EntityKind.THREAD, "", name, 0), "life",
                                                 EventKind.THREAD_START, native, now))
                seen.add(ident)
                cpu = -1
                if st.clock is not None:
                    try:
                        cpu = time.clock_gettime_ns(st.clock)
                    except OSError:
                        cpu = -1
                if st.cpu_ns < 0 or cpu < 0:
                    st.cpu_ns, st.t_ns = cpu, now
                    continue
                dt = now - st.t_ns
                frac = (cpu - st.cpu_ns) / dt if dt > 0 else 0.0
                st.cpu_ns, st.t_ns = cpu, now
                self._classify(st, frame, frac, dt, now)
            for ident in [i for i in self._threads if i not in seen]:
                st = self._threads.pop(ident)
                self._end_episode(st)
                self._lifecycle.append(Event(Entity(EntityKind.THREAD, "", st.name, 0), "life",
                                             EventKind.THREAD_END, st.native_id, now))

    def _ours(self, code: CodeType) -> int:
        """1: the program's own code; 0: library code; -1: gyroscope's own code (the agent)."""
        r = self._ours_cache.get(code)
        if r is None:
            if len(self._ours_cache) >= self.max_keys:   # bounded: programs that make code at run time
                self._ours_cache.clear()
            if self.is_ours(code):
                r = 1
            else:
                r = -1 if code.co_filename.startswith(_AGENT_DIRS) else 0
            self._ours_cache[code] = r
        return r

    def _classify(self, st: _ThreadState, frame: FrameType, frac: float, dt: int, now: int) -> None:
        # innermost frame of the program's own code, and the library frame it called (if any)
        f: FrameType | None = frame
        callee: FrameType | None = None
        while f is not None:
            r = self._ours(f.f_code)
            if r > 0:
                break
            if r < 0:   # reached the agent (e.g. the main thread once the program has returned)
                return
            callee = f
            f = f.f_back
        site = f if f is not None else frame
        if frac >= 0.5:
            self._end_episode(st)
            self._add(self._region(site), EventKind.SAMPLE_RUN, st.native_id, dt, now)
            return
        wait = self._wait_kind(site, callee, frame)
        if wait is None:
            self._end_episode(st)
            self._add(self._region(site), EventKind.SAMPLE_GIL, st.native_id, dt, now)
            return
        code = site.f_code
        line = site.f_lineno or code.co_firstlineno
        wkey = (code, line, wait)
        ent = self._wait_entities.get(wkey)
        if ent is None:
            kind = EntityKind.LOCK if wait in LOCK_WAITS else EntityKind.WAIT
            ent = Entity(kind, code.co_filename, code.co_qualname, line, wait)
            ent = self._canonical.setdefault(ent, ent)
            if len(self._wait_entities) < self.max_keys:
                self._wait_entities[wkey] = ent
        # a new episode when the site changed, or when the thread used some CPU since the last
        # sample (it woke up in between: e.g. a loop around a sleep or a lock taken again)
        if st.wait_entity is not ent or frac * dt > WOKE_CPU_NS:
            self._end_episode(st)
            st.wait_entity, st.wait_start_ns = ent, now - dt
        st.wait_last_ns = now
        self._add(ent, EventKind.SAMPLE_WAIT, st.native_id, dt, now)

    def _end_episode(self, st: _ThreadState) -> None:
        if st.wait_entity is not None:
            self._episodes.append(Event(st.wait_entity, "wait", EventKind.LOCK_WAIT, st.native_id,
                                        st.wait_start_ns, 1, max(0, st.wait_last_ns - st.wait_start_ns)))
            st.wait_entity = None

    def _add(self, ent: Entity, kind: EventKind, thread: int, dt: int, now: int) -> None:
        key = (id(ent), kind, thread)
        acc = self._pending.get(key)
        if acc is None:
            if len(self._pending) >= self.max_keys:
                self._dropped += 1
                return
            self._pending[key] = [1, dt, now, ent]
        else:
            acc[0] += 1
            acc[1] += dt

    def _region(self, frame: FrameType) -> Entity:
        code = frame.f_code
        line = frame.f_lineno or code.co_firstlineno
        key = (code, line)
        ent = self._site_cache.get(key)
        if ent is None:
            header = self.loop_map.header(code, line)
            if header:
                ent = Entity(EntityKind.LOOP, code.co_filename, code.co_qualname, header)
            else:
                ent = Entity(EntityKind.FUNCTION, code.co_filename, code.co_qualname, code.co_firstlineno)
            ent = self._canonical.setdefault(ent, ent)
            if len(self._site_cache) < self.max_keys:
                self._site_cache[key] = ent
        return ent

    def _wait_kind(self, site: FrameType, callee: FrameType | None, innermost: FrameType) -> str | None:
        """What `site` is blocked in: the outermost library frame we know between it and the
        innermost frame (Event.wait rather than the Condition.wait inside it), else the
        instruction it (or the innermost frame) is blocked on; None when it is not in a call."""
        if callee is not None:
            found = None
            f: FrameType | None = innermost
            while f is not None:
                c = f.f_code
                base = os.path.basename(c.co_filename)
                w = LIBRARY_WAITS.get((base, c.co_qualname)) or _LIBRARY_FILE_WAITS.get(base)
                if w is not None:
                    found = w
                if f is callee:
                    break
                f = f.f_back
            if found is not None:
                return found
            site = innermost
        code, lasti = site.f_code, site.f_lasti
        key = (code, lasti)
        if key in self._wait_cache:
            return self._wait_cache[key]
        w = _instruction_wait(code, lasti)
        if len(self._wait_cache) < self.max_keys:
            self._wait_cache[key] = w
        return w

    # ---- hand-over to the agent -----------------------------------------------------------
    def take(self) -> tuple[list[Event], dict[int, ThreadInfo], int, int]:
        with self._lock:
            pending, self._pending = self._pending, {}
            episodes, self._episodes = self._episodes, []
            life, self._lifecycle = self._lifecycle, []
            samples, self._samples = self._samples, 0
            dropped, self._dropped = self._dropped, 0
            threads = {st.native_id: ThreadInfo(st.native_id, st.name, max(st.cpu_ns, 0))
                       for st in self._threads.values()}
        role = {EventKind.SAMPLE_RUN: "run", EventKind.SAMPLE_WAIT: "wait", EventKind.SAMPLE_GIL: "run"}
        events = [Event(acc[3], role[kind], kind, thread, acc[2], acc[0], acc[1])
                  for (_, kind, thread), acc in pending.items()]
        return life + events + episodes, threads, samples, dropped


def _agent_stack(frame: FrameType | None) -> bool:
    """A thread started by the agent or its exporters: gyroscope's or OpenTelemetry's code on its stack."""
    while frame is not None:
        fn = frame.f_code.co_filename
        if fn.startswith(_AGENT_DIRS) or f"{os.sep}opentelemetry{os.sep}" in fn:
            return True
        frame = frame.f_back
    return False


def _instruction_wait(code: CodeType, lasti: int) -> str | None:
    """The wait kind of the instruction at `lasti` when a thread is blocked on it, or None."""
    try:
        op = code.co_code[lasti] if 0 <= lasti < len(code.co_code) else -1
    except Exception:
        return None
    if op == _BEFORE_WITH:
        return WaitKind.LOCK
    if op not in _CALL_OPS:
        return None
    name = _called_name(code, lasti)
    return _CALL_WAITS.get(name, WaitKind.OTHER) if name else WaitKind.OTHER


def _called_name(code: CodeType, lasti: int) -> str:
    """The name of the callable of the CALL at `lasti` (``sleep`` for ``time.sleep(x)``), from the
    source span of the call expression."""
    try:
        positions = list(code.co_positions())
        lineno, end_lineno, col, end_col = positions[lasti // 2]
        if lineno is None or col is None:
            return ""
        lines = linecache.getlines(code.co_filename)
        text = "".join(lines[lineno - 1:end_lineno])
        if end_lineno == lineno:
            snippet = lines[lineno - 1].encode()[col:end_col].decode(errors="replace")
        else:
            snippet = text.encode()[col:].decode(errors="replace")
        node = ast.parse(snippet.strip(), mode="eval").body if end_lineno == lineno else None
        if isinstance(node, ast.Call):
            fn = node.func
            if isinstance(fn, ast.Attribute):
                return fn.attr
            if isinstance(fn, ast.Name):
                return fn.id
    except (SyntaxError, ValueError, IndexError, UnicodeError, RecursionError):
        return ""
    return ""
