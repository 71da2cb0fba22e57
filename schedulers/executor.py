"""CoherenceExecutor: a ThreadPoolExecutor whose queue is ordered coherence-first (seed 003, Phase 2),
with co-resonant batching (spec 002 §20.2), deferral instead of dropping, and aging.

Policy (PolicyQueue, pure and deterministic; the executor only adds threads around it):
  base(task)  = round(coherence, 2)             coherence in 0..1 (given, or coherence_score(data),
                                                or default_coherence); bands of 0.01 so that
                                                urgency decides between near-equal coherences
                - 1.0 if coherence < defer_below  DEFERRED, never dropped (the seed's filter drops)
  score(task) = base + aging_step * (dispatches since the task was submitted)
  next task   = max by (score, urgency, -submission sequence)
  batch       = the next task, then the pending tasks co-resonant with it (same resonance key,
                or chirality distance(chi6) <= 2, spec §20.2), in policy order, up to
                max_batch_size tasks; a batch runs back to back on one worker.
Aging is counted in dispatches (a logical clock), so the order is reproducible.

Starvation bound. base lies in [-1, 1], so the spread of bases is at most S = 2. A task U
submitted K >= S / aging_step dispatches after task T can never rank above T (T's score is
then higher by aging_step * K >= S >= base_U - base_T; ties go to the older task). So T is
preceded only by the N0 tasks pending when it was submitted and the tasks A submitted during
the next ceil(S / aging_step) dispatches, plus up to (max_batch_size - 1) batch members per head
dispatched before it: T runs within max_batch_size * (N0 + A + 1) dispatches. With
aging_step = 0 there is no bound (pure priority), which the tests use to check the ordering.
"""
from __future__ import annotations

import atexit
import heapq
import itertools
import threading
import weakref
from collections.abc import Callable, Hashable
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from gyroscope.schedulers.coherence import coherence_score

DEFAULT_COHERENCE = 0.5
DEFER_BELOW = 0.3
AGING_STEP = 0.01
BASE_SPREAD = 2.0


@dataclass(slots=True)
class Task:
    """A unit of work with its scheduling hints."""
    fn: Callable[..., Any]
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    coherence: float = DEFAULT_COHERENCE
    urgency: int = 0
    key: Hashable | None = None
    chi6: int | None = None
    future: Future = field(default_factory=Future)
    seq: int = 0
    submitted_at: int = 0   # dispatch counter at submission
    deferred: bool = False

    def run(self) -> None:
        if not self.future.set_running_or_notify_cancel():
            return
        try:
            result = self.fn(*self.args, **self.kwargs)
        except BaseException as exc:  # noqa: BLE001 - delivered through the future
            self.future.set_exception(exc)
        else:
            self.future.set_result(result)


class PolicyQueue:
    """The scheduling policy over pending tasks (not thread-safe; the executor holds a lock).

    Because every pending task ages by the same aging_step per dispatch, the ranking
    score = base + aging_step * (D - submitted_at) differs between tasks only by the static
    part base - aging_step * submitted_at: the queue is a heap on that key (O(log n) per task),
    plus per-resonance-key and per-chi6 heaps to find co-resonant batch members.
    """

    def __init__(self, *, defer_below: float = DEFER_BELOW, aging_step: float = AGING_STEP,
                 max_batch_size: int = 8) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        if aging_step < 0:
            raise ValueError("aging_step must be >= 0")
        self.defer_below = defer_below
        self.aging_step = aging_step
        self.max_batch_size = max_batch_size
        self._step = Fraction(aging_step)  # exact arithmetic: ties are real ties, decided by urgency
        self.dispatched = 0
        self.deferred_total = 0
        self._seq = itertools.count()
        self._n = 0
        self._heap: list[tuple[Fraction, int, int, Task]] = []
        self._by_key: dict[Hashable, list] = {}
        self._by_chi: dict[int, list] = {}
        self._taken: set[int] = set()

    def __len__(self) -> int:
        return self._n

    def push(self, task: Task) -> None:
        task.seq = next(self._seq)
        task.submitted_at = self.dispatched
        task.deferred = task.coherence < self.defer_below
        self.deferred_total += task.deferred
        entry = (-(self.base(task) - self._step * task.submitted_at), -task.urgency, task.seq, task)
        heapq.heappush(self._heap, entry)
        if task.key is not None:
            heapq.heappush(self._by_key.setdefault(task.key, []), entry)
        if task.chi6 is not None:
            heapq.heappush(self._by_chi.setdefault(int(task.chi6) & 0x3F, []), entry)
        self._n += 1

    def base(self, task: Task) -> Fraction:
        return Fraction(round(task.coherence * 100) - (100 if task.deferred else 0), 100)

    def rank(self, task: Task) -> tuple[Fraction, int, int]:
        """The policy's ranking of a pending task now (higher runs first)."""
        score = self.base(task) + self._step * (self.dispatched - task.submitted_at)
        return (score, task.urgency, -task.seq)

    def _top(self, heap: list) -> tuple | None:
        while heap and heap[0][2] in self._taken:
            heapq.heappop(heap)
        return heap[0] if heap else None

    def _take(self, entry: tuple) -> Task:
        self._taken.add(entry[2])
        self._n -= 1
        return entry[3]

    def pop_batch(self) -> list[Task]:
        """Remove and return the next batch (empty if nothing is pending)."""
        head_entry = self._top(self._heap)
        if head_entry is None:
            return []
        head = self._take(head_entry)
        batch = [head]
        heaps = []
        if head.key is not None:
            heaps.append(self._by_key.get(head.key, []))
        if head.chi6 is not None:
            c = int(head.chi6) & 0x3F
            near = {c} | {c ^ (1 << i) for i in range(6)} | {c ^ (1 << i) ^ (1 << j) for i in range(6)
                                                              for j in range(i + 1, 6)}
            heaps.extend(self._by_chi[x] for x in near if x in self._by_chi)
        while heaps and len(batch) < self.max_batch_size:
            tops = [t for t in (self._top(h) for h in heaps) if t is not None]
            if not tops:
                break
            batch.append(self._take(min(tops)))
        self.dispatched += len(batch)
        if not self._n:  # all pending tasks taken: reset the indexes
            self._heap.clear()
            self._by_key.clear()
            self._by_chi.clear()
            self._taken.clear()
        return batch

    def drain(self) -> list[Task]:
        out = [e[3] for e in self._heap if e[2] not in self._taken]
        self._heap, self._n = [], 0
        self._by_key.clear()
        self._by_chi.clear()
        self._taken.clear()
        return out


_live: weakref.WeakSet = weakref.WeakSet()
_exiting = False


def _at_exit() -> None:
    global _exiting
    _exiting = True
    for ex in list(_live):
        ex.shutdown(wait=True)


atexit.register(_at_exit)


class CoherenceExecutor(Executor):
    """concurrent.futures.Executor with ThreadPoolExecutor semantics and the coherence policy.

    submit(fn, *args, **kwargs) passes every keyword to fn (default hints). Scheduling hints go
    through submit_with(fn, *args, coherence=, data=, urgency=, key=, chi6=, **kwargs) or
    submit_task(Task(...)), so they never clash with fn's own keywords.
    """

    def __init__(self, max_workers: int | None = None, *, thread_name_prefix: str = "CoherenceExecutor",
                 defer_below: float = DEFER_BELOW, aging_step: float = AGING_STEP, max_batch_size: int = 8,
                 default_coherence: float = DEFAULT_COHERENCE) -> None:
        if max_workers is None:
            import os
            max_workers = min(32, (os.cpu_count() or 1) + 4)
        if max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        self._max_workers = max_workers
        self._prefix = thread_name_prefix
        self._default = default_coherence
        self._queue = PolicyQueue(defer_below=defer_below, aging_step=aging_step, max_batch_size=max_batch_size)
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._shutdown = False
        self.batches_run = 0
        self.tasks_batched = 0
        _live.add(self)

    @property
    def stats(self) -> dict[str, int]:
        with self._cond:
            return {"dispatched": self._queue.dispatched, "deferred": self._queue.deferred_total,
                    "batches": self.batches_run, "tasks_in_multi_batches": self.tasks_batched,
                    "pending": len(self._queue)}

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        return self.submit_task(Task(fn, args, kwargs, coherence=self._default))

    def submit_with(self, fn: Callable[..., Any], /, *args: Any, coherence: float | None = None,
                    data: Any = None, urgency: int = 0, key: Hashable | None = None,
                    chi6: int | None = None, **kwargs: Any) -> Future:
        """Submit with hints. coherence defaults to coherence_score(data), else default_coherence."""
        if coherence is None and data is not None:
            coherence = coherence_score(data)
        c = self._default if coherence is None else float(coherence)
        return self.submit_task(Task(fn, args, kwargs, coherence=min(1.0, max(0.0, c)), urgency=int(urgency),
                                     key=key, chi6=chi6))

    def submit_task(self, task: Task) -> Future:
        with self._cond:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if _exiting:
                raise RuntimeError("cannot schedule new futures after interpreter shutdown")
            self._queue.push(task)
            if self._idle == 0 and len(self._threads) < self._max_workers:
                t = threading.Thread(target=self._worker, name=f"{self._prefix}_{len(self._threads)}", daemon=True)
                self._threads.append(t)
                t.start()
            else:
                self._cond.notify()
        return task.future

    def _worker(self) -> None:
        while True:
            with self._cond:
                while not len(self._queue) and not self._shutdown:
                    self._idle += 1
                    self._cond.wait()
                    self._idle -= 1
                batch = self._queue.pop_batch()
                if not batch:  # shut down and nothing left
                    return
                self.batches_run += 1
                if len(batch) > 1:
                    self.tasks_batched += len(batch)
            for task in batch:
                task.run()
            del batch, task

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._cond:
            self._shutdown = True
            if cancel_futures:
                for t in self._queue.drain():
                    t.future.cancel()
            self._cond.notify_all()
            threads = list(self._threads)
        if wait:
            for t in threads:
                if t is not threading.current_thread():
                    t.join()
