"""The event model shared by every source (in-process sys.monitoring, py-spy attach).

A source watches the program and, once per observation window, hands the agent an
`Observation`: the events it saw since the last one, already aggregated per
(entity, role, kind, thread). The agent turns each event into kernel words with the
serializer (bridges/serializer.py) and into direct measurements (agent/measure.py).

Entities are code regions (a loop header, a function) and synchronisation points (a lock's
creation site or, when the object is unknown, the call site that waits). One (entity, role)
owns one kernel cell (spec 002 §25.1).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, NamedTuple, Protocol


class EntityKind:
    """What an entity is, in the user's words. Values are the strings used in the session JSON."""
    LOOP = "loop"          # a loop region: the header line of a loop in some function
    FUNCTION = "function"  # a function (or generator / coroutine) as a whole
    LOCK = "lock"          # a synchronisation object or the call site that waits on one
    WAIT = "wait"          # a non-lock wait: sleep, socket, select, queue get, join
    GC = "gc"              # the garbage collector
    THREAD = "thread"      # a thread's life
    EVENT_LOOP = "event_loop"  # an asyncio event loop, at the coroutine whose steps block it


class WaitKind:
    """What a thread was blocked in (the `detail` of LOCK and WAIT entities)."""
    LOCK = "lock"
    RLOCK = "rlock"
    CONDITION = "condition"
    SEMAPHORE = "semaphore"
    EVENT = "event"
    QUEUE = "queue"
    SLEEP = "sleep"
    SOCKET = "socket"
    SELECT = "select"
    JOIN = "join"
    OTHER = "other"
    # kinds only the profiled locks (bridges/_locks.pyx) tell apart
    BOUNDED_SEMAPHORE = "bounded_semaphore"
    BARRIER = "barrier"
    ASYNCIO_LOCK = "asyncio.lock"
    ASYNCIO_SEMAPHORE = "asyncio.semaphore"
    ASYNCIO_BOUNDED_SEMAPHORE = "asyncio.bounded_semaphore"
    ASYNCIO_CONDITION = "asyncio.condition"
    ASYNCIO_EVENT = "asyncio.event"


@dataclass(frozen=True, slots=True)
class Entity:
    """A place in the program. `function` is the qualified name (e.g. ``Grid.relax``); `pid` is the
    process of the session it was seen in (0 when the session has one process)."""
    kind: str
    file: str
    function: str
    line: int
    detail: str = ""
    pid: int = 0

    def label(self) -> str:
        extra = f" [{self.detail}]" if self.detail else ""
        return f"{self.kind} {self.function} ({self.file}:{self.line}){extra}"


class EventKind(IntEnum):
    """Every kind of event a source can report. The serializer has one word row per kind."""
    LOOP_ITER = 1       # backward jumps at a loop header (count = iterations seen)
    CALL = 2            # function entries (PY_START)
    RESUME = 3          # generator / coroutine resumed (PY_RESUME)
    YIELD = 4           # generator / coroutine suspended (PY_YIELD)
    SAMPLE_RUN = 5      # a sample found the thread running here on the CPU
    SAMPLE_WAIT = 6     # a sample found the thread blocked here (detail says in what)
    SAMPLE_GIL = 7      # a sample found the thread runnable but not holding the GIL
    LOCK_WAIT = 8       # a measured blocking acquire (duration_ns = time blocked)
    LOCK_ACQUIRE = 9    # an uncontended acquire
    GC = 10             # a garbage collection (duration_ns = pause)
    THREAD_START = 11
    THREAD_END = 12
    LOOP_BLOCK = 13     # coroutine steps that held the event loop's thread >= 100 ms (count, total)


class Frame(NamedTuple):
    """One frame of a sampled stack. `function` is the qualname when known (co_qualname, py-spy's
    name), else co_name; `first_line` is co_firstlineno when known (0 otherwise). A named tuple,
    not a dataclass: stacks (tuples of frames) are dictionary keys in every chunk, and a
    dataclass's hash and equality are Python calls (~40,000 per chunk of a library-heavy
    program; a tuple's are C)."""
    file: str
    function: str
    line: int
    first_line: int = 0


class StackState:
    """What a sampled thread was doing (the `state` of a StackSample)."""
    RUN = "run"        # on a CPU (Python or native code)
    GIL = "gil"        # runnable, waiting for the interpreter lock
    WAIT = "wait"      # blocked (lock, sleep, I/O, ...)


@dataclass(slots=True)
class StackSample:
    """Sampled call stacks of one thread in one window, aggregated: `count` samples of `frames`
    (innermost first) in `state`. `wall_ns` is the wall time the samples stand for; `cpu_ns` the
    thread's CPU time attributed to them (0 when unknown). The profiles (pprof, speedscope,
    collapsed, OTLP profiles) are built from these."""
    pid: int
    thread: int                  # native thread id
    thread_name: str
    frames: tuple[Frame, ...]    # innermost first
    state: str                   # StackState
    count: int = 1
    wall_ns: int = 0
    cpu_ns: int = 0


@dataclass(slots=True)
class Event:
    """One aggregated observation: `count` occurrences covering `duration_ns` in one thread."""
    entity: Entity
    role: str
    kind: EventKind
    thread: int          # native thread id (0 when not tied to a thread)
    t_ns: int            # time.monotonic_ns() of the first occurrence in the window
    count: int = 1
    duration_ns: int = 0
    # a counter that saturated in the window (the bridge's K hits, then disarmed): `count` is a
    # lower bound; so is any LOOP_ITER / CALL count with a duration (its timed gaps)
    saturated: bool = False


@dataclass(slots=True)
class LoopRead:
    """What the in-process bridge read from one loop's iterator in one window (bridges/_inproc.pyx,
    "spans"): `iterations` the loop ran that no hit counted, exact; of the iterations it ran with
    no callback at all, `free_iterations` in `free_ns` of its thread's CPU time, where the end of
    that stretch is known: the loop's own rate, measured. `gap`: the loop may have run uncounted
    in this window ("coverage"); a loop never flagged was counted whole. `induction`: part of
    `iterations` was read from a local that stepped alike at every timed hit ("induction"), not
    from an iterator: right while it kept that step, which nothing proves. `lost`: iterations ran
    that no hit counted even if no window saturated (the process's last window never arrived; a
    forked child's loop began disarmed, as its parent left it)."""
    entity: Entity
    iterations: int = 0
    free_iterations: int = 0
    free_ns: int = 0
    gap: bool = False
    induction: bool = False
    lost: bool = False


@dataclass(slots=True)
class ThreadInfo:
    native_id: int
    name: str
    cpu_ns: int = 0      # thread CPU time consumed so far (0 when unknown)
    alive: bool = True


@dataclass(slots=True)
class LockWindow:
    """Exact figures of one profiled synchronisation object (its creation site) over one window,
    from the in-process bridge's profiled locks (bridges/_locks.pyx, bridges/lockstats.py).
    `threads`: native id -> (contended waits, wait ns); `callsites`: (file, line) -> (waits, wait ns)
    of the first frame outside threading/queue/asyncio that waited."""
    entity: Entity
    acquires: int = 0
    contended: int = 0
    wait_ns: int = 0
    wait_max_ns: int = 0
    hold_ns: int = 0
    threads: dict[int, tuple[int, int]] = field(default_factory=dict)
    callsites: dict[tuple[str, int], tuple[int, int]] = field(default_factory=dict)


@dataclass(slots=True)
class Observation:
    """Everything one source saw in one window."""
    t_start_ns: int
    t_end_ns: int
    events: list[Event] = field(default_factory=list)
    threads: dict[int, ThreadInfo] = field(default_factory=dict)
    samples: int = 0          # stack samples taken (samplers), 0 otherwise
    raw_events: int = 0       # callbacks / records seen before aggregation
    dropped: int = 0          # events or samples lost (bounded queues); never silent
    errors: list[str] = field(default_factory=list)
    stacks: list[StackSample] = field(default_factory=list)   # sampled call stacks (profiles)
    pid: int = 0              # the process observed (0: the session's only process)
    locks: list[LockWindow] = field(default_factory=list)     # exact lock figures (profiled locks)
    # what the program changed because of live decisions (schedulers/live.py report()):
    # (pid, index in that process, the action dict as last shipped)
    actions: list[tuple[int, int, dict[str, Any]]] = field(default_factory=list)
    loop_reads: list[LoopRead] = field(default_factory=list)   # iterator readings (bridges/_inproc.pyx)
    # loops seen running other code of the program (an outer program frame of a running sample:
    # bridges/stacks.py enclosing_loops), with the CPU time (ns) of those samples: a loop's time
    # includes its callees' and its inner loops' (the span of its timed hits does too)
    enclosing: dict[Entity, int] = field(default_factory=dict)

    def add_enclosing(self, other: dict[Entity, int]) -> None:
        for ent, ns in other.items():
            self.enclosing[ent] = self.enclosing.get(ent, 0) + ns


class Source(Protocol):
    """What the agent needs from a bridge."""
    name: str                 # "run" or "attach"

    def start(self) -> None: ...

    def poll(self) -> Observation:
        """Everything seen since the previous poll. Called by one agent thread, once per window."""
        ...

    def stop(self) -> Observation:
        """Stop watching, release every hook, return what was left."""
        ...


_THREAD_NUMBER = re.compile(r"^(Thread|thread|Dummy|ThreadPoolExecutor-\d+|asyncio)[-_]\d+")


def pooled_thread_name(name: str) -> str | None:
    """The name shared by a kind of numbered thread ("Thread-8121 (process_request_thread)" ->
    "Thread-* (process_request_thread)", "ThreadPoolExecutor-0_3" -> "ThreadPoolExecutor-0-*"),
    None for a thread with a name of its own. A server that starts a thread per request must not
    grow a session, or a profile, by one thread each."""
    if not name or not _THREAD_NUMBER.match(name):
        return None
    return _THREAD_NUMBER.sub(r"\1-*", name)
