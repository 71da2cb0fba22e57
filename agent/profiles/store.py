"""The stack store: every sampled call stack of a session, interned and aggregated, in bounded memory.

Input: `bridges.events.StackSample` (pid, thread, thread_name, frames innermost-first, state, count,
wall_ns, cpu_ns), fed once per window with `add_many(obs.stacks)`; lock wait / hold time per stack
comes from the exact lock profiler through `add_lock_time(pid, thread, frames, wait_ns, hold_ns)`.

Interning: a frame (file, function, line, first_line) gets an integer id once; a stack is a tuple of
frame ids (innermost first) and gets an integer id once. Per (pid, thread, stack id, state) the store
keeps five sums, the sample types of every writer: samples, wall_ns, cpu_ns, lock_wait_ns,
lock_hold_ns. Repeated stacks (the common case: a hot loop is sampled thousands of times with the
same stack) cost one dict update.

A sample without frames (a thread in native code only, or starting / ending) gets the one frame
"(no Python frames)", so that every writer has a leaf to show.

Bounds (constructor arguments; defaults below), and what happens when one is hit:
  - max_depth (256) frames per stack: deeper stacks keep their innermost max_depth - 1 frames and
    gain one outermost frame "(N outer frames truncated)"; counted in dropped["truncated_stacks"].
  - max_stacks (20,000) distinct stacks, max_frames (50,000) distinct frames, max_frame_refs
    (1,000,000) frame ids summed over all distinct stacks: a sample whose stack would need a new
    stack beyond these goes into the one "(other stacks)" stack of its thread (its time is kept,
    its call path is not); counted in dropped["samples_merged"] (samples) and dropped["stacks"]
    (distinct stacks refused).
  - max_threads (4,096) distinct (pid, thread): samples of further threads are attributed to
    thread 0 "(other threads)"; counted in dropped["threads"].
  - max_rows (200,000) aggregation rows: a new (pid, thread, stack, state) beyond it is merged
    into its thread's "(other stacks)" row.
Worst case memory with the defaults is therefore about: 1,000,000 frame refs x 8 bytes (tuple
slots) + 50,000 frames x ~250 bytes + 20,000 stacks x ~150 bytes + 200,000 rows x ~200 bytes,
i.e. ~65 MB; benchmarks/stack_store_memory.py measures the real peak with tracemalloc.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from gyroscope.bridges.events import Frame, StackSample, pooled_thread_name

FORMAT = "gyroscope.profile/1"
OTHER_STACKS = Frame("", "(other stacks)", 0)
NO_PYTHON_FRAMES = Frame("", "(no Python frames)", 0)   # a sample of a thread in native code only
OTHER_THREADS_ID = 0
POOLED_THREAD_BASE = 1 << 40   # ids of the kinds of numbered threads (events.pooled_thread_name)
OTHER_THREADS_NAME = "(other threads)"
STATES = ("run", "gil", "wait")

# the sample types, in the order of the five sums of a row (pprof and OTLP use these names)
SAMPLE_TYPES = (("samples", "count"), ("wall", "nanoseconds"), ("cpu", "nanoseconds"),
                ("lock_wait", "nanoseconds"), ("lock_hold", "nanoseconds"))


@dataclass(frozen=True, slots=True)
class Row:
    """One aggregated row of the store, as writers see it."""
    pid: int
    thread: int
    thread_name: str
    frames: tuple[Frame, ...]   # innermost first
    state: str
    samples: int
    wall_ns: int
    cpu_ns: int
    lock_wait_ns: int
    lock_hold_ns: int


class StackStore:
    """Bounded, interned store of sampled stacks. Not thread-safe: the session feeds it from one thread."""

    def __init__(self, max_stacks: int = 20_000, max_frames: int = 50_000, max_frame_refs: int = 1_000_000,
                 max_depth: int = 256, max_threads: int = 4_096, max_rows: int = 200_000) -> None:
        self.bounds = {"max_stacks": int(max_stacks), "max_frames": int(max_frames),
                       "max_frame_refs": int(max_frame_refs), "max_depth": max(2, int(max_depth)),
                       "max_threads": int(max_threads), "max_rows": int(max_rows)}
        self.frames: list[Frame] = []
        self._frame_ids: dict[Frame, int] = {}
        self.stacks: list[tuple[int, ...]] = []
        self._stack_ids: dict[tuple[int, ...], int] = {}
        self.frame_refs = 0
        self.threads: dict[tuple[int, int], str] = {}
        self._pooled: dict[tuple[int, str], int] = {}   # (pid, pooled name) -> its thread id
        # (pid, thread, stack id, state) -> [samples, wall_ns, cpu_ns, lock_wait_ns, lock_hold_ns]
        self.rows: dict[tuple[int, int, int, str], list[int]] = {}
        self.dropped = {"samples_merged": 0, "stacks": 0, "truncated_stacks": 0, "threads": 0, "rows": 0}
        self._other_stack = self._intern_stack((self._intern_frame(OTHER_STACKS),), force=True)

    # ---- interning -----------------------------------------------------------------------------
    def _intern_frame(self, f: Frame) -> int:
        i = self._frame_ids.get(f)
        if i is None:
            i = self._frame_ids[f] = len(self.frames)
            self.frames.append(f)
        return i

    def _intern_stack(self, ids: tuple[int, ...], force: bool = False) -> int:
        i = self._stack_ids.get(ids)
        if i is None:
            if not force and (len(self.stacks) >= self.bounds["max_stacks"]
                              or self.frame_refs + len(ids) > self.bounds["max_frame_refs"]):
                return -1
            i = self._stack_ids[ids] = len(self.stacks)
            self.stacks.append(ids)
            self.frame_refs += len(ids)
        return i

    def stack_id(self, frames: Iterable[Frame]) -> int:
        """The id of a stack (innermost first), interning it if the bounds allow; -1 when they do not."""
        frames = tuple(frames) or (NO_PYTHON_FRAMES,)
        depth = self.bounds["max_depth"]
        if len(frames) > depth:
            cut = len(frames) - (depth - 1)
            frames = frames[:depth - 1] + (Frame("", f"({cut} outer frames truncated)", 0),)
            self.dropped["truncated_stacks"] += 1
        ids = []
        get = self._frame_ids.get
        max_frames = self.bounds["max_frames"]
        for f in frames:   # one hash per frame: ~0.5 us per frame, most of the cost of a new stack
            i = get(f)
            if i is None:
                if len(self.frames) >= max_frames:
                    return -1
                i = self._intern_frame(f if isinstance(f, Frame) else Frame(f.file, f.function, f.line))
            ids.append(i)
        return self._intern_stack(tuple(ids))

    def thread_label(self, pid: int, tid: int, pid_too: bool = False) -> str:
        """"NAME (tid N)" ("NAME (tid N, pid P)"); a kind of numbered thread, which stands for
        every thread of that kind, is "NAME (threads)" ("NAME (threads, pid P)")."""
        name = self.threads.get((pid, tid), "") or "thread"
        which = "threads" if tid >= POOLED_THREAD_BASE else f"tid {tid}"
        return f"{name} ({which}, pid {pid})" if pid_too else f"{name} ({which})"

    def _thread(self, pid: int, thread: int, name: str) -> int:
        pooled = pooled_thread_name(name)
        if pooled is not None:   # one row set per kind of numbered thread, not per thread
            thread = self._pooled.setdefault((pid, pooled), POOLED_THREAD_BASE + len(self._pooled))
            name = pooled
        key = (pid, thread)
        if key in self.threads:
            if name and not self.threads[key]:
                self.threads[key] = name
            return thread
        if len(self.threads) >= self.bounds["max_threads"]:
            self.dropped["threads"] += 1
            self.threads.setdefault((pid, OTHER_THREADS_ID), OTHER_THREADS_NAME)
            return OTHER_THREADS_ID
        self.threads[key] = name
        return thread

    def _row(self, pid: int, thread: int, stack: int, state: str, samples: int) -> list[int]:
        if stack < 0:
            self.dropped["stacks"] += 1
            self.dropped["samples_merged"] += samples
            stack = self._other_stack
        key = (pid, thread, stack, state)
        row = self.rows.get(key)
        if row is None:
            if len(self.rows) >= self.bounds["max_rows"] and stack != self._other_stack:
                self.dropped["rows"] += 1
                self.dropped["samples_merged"] += samples
                key = (pid, thread, self._other_stack, state)
                row = self.rows.get(key)
            if row is None:
                row = self.rows[key] = [0, 0, 0, 0, 0]
        return row

    # ---- input ---------------------------------------------------------------------------------
    def add(self, s: StackSample) -> None:
        """Add one StackSample (a window's aggregate for one thread, stack and state)."""
        thread = self._thread(int(s.pid), int(s.thread), str(s.thread_name or ""))
        row = self._row(int(s.pid), thread, self.stack_id(s.frames), str(s.state), int(s.count))
        row[0] += int(s.count)
        row[1] += int(s.wall_ns)
        row[2] += int(s.cpu_ns)

    def add_many(self, samples: Iterable[StackSample]) -> None:
        """Add every StackSample of one window (Observation.stacks). Never raises on odd input."""
        for s in samples or ():
            try:
                self.add(s)
            except (TypeError, ValueError, AttributeError):
                self.dropped["samples_merged"] += 1

    def add_lock_time(self, pid: int, thread: int, frames: Iterable[Frame], wait_ns: int, hold_ns: int,
                      thread_name: str = "") -> None:
        """Lock wait and hold time of one thread at one stack (the exact lock profiler's input).
        Kept in the "wait" state row of that stack for wait time, the "run" row for hold time."""
        thread = self._thread(int(pid), int(thread), thread_name)
        sid = self.stack_id(frames)
        if wait_ns:
            self._row(int(pid), thread, sid, "wait", 0)[3] += int(wait_ns)
        if hold_ns:
            self._row(int(pid), thread, sid, "run", 0)[4] += int(hold_ns)

    # ---- output --------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.rows)

    def total_samples(self) -> int:
        return sum(r[0] for r in self.rows.values())

    def frames_of(self, stack: int) -> tuple[Frame, ...]:
        return tuple(self.frames[i] for i in self.stacks[stack])

    def iter_rows(self) -> Iterator[Row]:
        """Every row, grouped by (pid, thread), most samples first within a thread."""
        keys = sorted(self.rows, key=lambda k: (k[0], k[1], -self.rows[k][0], -self.rows[k][1], k[2], k[3]))
        for pid, thread, stack, state in keys:
            v = self.rows[(pid, thread, stack, state)]
            yield Row(pid, thread, self.threads.get((pid, thread), ""), self.frames_of(stack), state, *v)

    def totals(self) -> dict[str, int]:
        sums = [0, 0, 0, 0, 0]
        for v in self.rows.values():
            for i in range(5):
                sums[i] += v[i]
        return {name: sums[i] for i, (name, _unit) in enumerate(SAMPLE_TYPES)}

    def to_json(self) -> dict[str, Any]:
        """A compact JSON document (the session result's "profile" key)."""
        return {"format": FORMAT,
                "sample_types": [list(t) for t in SAMPLE_TYPES],
                "frames": [[f.file, f.function, f.line, f.first_line] for f in self.frames],
                "stacks": [list(s) for s in self.stacks],
                "threads": [[pid, tid, name] for (pid, tid), name in self.threads.items()],
                "rows": [[pid, tid, stack, state, *v] for (pid, tid, stack, state), v in self.rows.items()],
                "totals": self.totals(), "dropped": dict(self.dropped), "bounds": dict(self.bounds),
                "distinct": {"frames": len(self.frames), "stacks": len(self.stacks), "rows": len(self.rows),
                             "frame_refs": self.frame_refs}}

    @classmethod
    def from_json(cls, doc: Any) -> StackStore:
        """The store back from `to_json()`. Tolerant: a missing or malformed profile gives an empty store,
        malformed entries are skipped; ValueError only when `doc` is a profile of another format."""
        if not isinstance(doc, dict):
            return cls()
        if doc.get("format", FORMAT) != FORMAT:
            raise ValueError(f"unknown profile format {doc.get('format')!r} (expected {FORMAT})")
        bounds = doc.get("bounds") if isinstance(doc.get("bounds"), dict) else {}
        store = cls(**{k: int(v) for k, v in bounds.items() if k in
                       ("max_stacks", "max_frames", "max_frame_refs", "max_depth", "max_threads", "max_rows")})
        frames: list[Frame] = []
        for f in doc.get("frames") or []:
            try:
                frames.append(Frame(str(f[0]), str(f[1]), int(f[2]), int(f[3]) if len(f) > 3 else 0))
            except (TypeError, ValueError, IndexError):
                frames.append(Frame("", "(unreadable frame)", 0))
        stack_map: dict[int, int] = {}
        for i, s in enumerate(doc.get("stacks") or []):
            try:
                fr = [frames[int(j)] for j in s]
            except (TypeError, ValueError, IndexError):
                continue
            ids = tuple(store._intern_frame(f) for f in fr)
            stack_map[i] = store._intern_stack(ids, force=True)
        for t in doc.get("threads") or []:
            try:
                store.threads[(int(t[0]), int(t[1]))] = str(t[2])
            except (TypeError, ValueError, IndexError):
                continue
        for r in doc.get("rows") or []:
            try:
                pid, tid, stack, state = int(r[0]), int(r[1]), stack_map.get(int(r[2]), store._other_stack), str(r[3])
                vals = [int(x) for x in r[4:9]] + [0] * (5 - len(r[4:9]))
            except (TypeError, ValueError, IndexError):
                continue
            row = store.rows.setdefault((pid, tid, stack, state), [0, 0, 0, 0, 0])
            for i in range(5):
                row[i] += vals[i]
        dropped = doc.get("dropped")
        if isinstance(dropped, dict):
            for k, v in dropped.items():
                if isinstance(v, int):
                    store.dropped[k] = v
        return store


def store_from_result(result: dict[str, Any]) -> StackStore:
    """The stack store carried by a session result (empty when the session kept no stacks)."""
    return StackStore.from_json((result or {}).get("profile"))
