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
import collections
import heapq
import itertools
import threading
import time
import weakref
from collections.abc import Callable, Hashable
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from gyroscope.schedulers import live
from gyroscope.schedulers.coherence import coherence_score
from gyroscope.schedulers.matching import Classifier, Rule, real_path, rules_from, unwrap

DEFAULT_COHERENCE = 0.5
DEFER_BELOW = 0.3
AGING_STEP = 0.01
BASE_SPREAD = 2.0
LANE_BONUS = 100   # hundredths: a lane head ranks 1.0 above its base
_T0 = time.monotonic()
_OWN_FILE = real_path(__file__)


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
        # heap keys in integers (base in hundredths x q - 100 p x submitted_at, step = p/q): exact like
        # Fractions, ~10x cheaper to compare (Fraction keys cost ~2% of a 1 ms task pool's wall time)
        self._p, self._q = self._step.numerator, self._step.denominator
        self.dispatched = 0
        self.deferred_total = 0
        self._seq = itertools.count()
        self._n = 0
        self._heap: list[tuple[int, int, int, Task]] = []
        self._by_key: dict[Hashable, list] = {}
        self._by_chi: dict[int, list] = {}
        self._taken: set[int] = set()

    def __len__(self) -> int:
        return self._n

    def entry_for(self, task: Task, *, bonus: int = 0, keep_age: bool = False) -> tuple:
        """Stamp a task (sequence, submission time, deferral) and return its heap entry.

        `bonus` (hundredths) is added to its base (lane heads, see CoherenceExecutor);
        keep_age keeps the stamps of a task that is only being moved between queues."""
        if not keep_age:
            task.seq = next(self._seq)
            task.submitted_at = self.dispatched
            task.deferred = task.coherence < self.defer_below
            self.deferred_total += task.deferred
        base_h = round(task.coherence * 100) - (100 if task.deferred else 0) + bonus
        return (100 * self._p * task.submitted_at - base_h * self._q, -task.urgency, task.seq, task)

    def push(self, task: Task, *, keep_age: bool = False) -> None:
        entry = self.entry_for(task, keep_age=keep_age)
        heapq.heappush(self._heap, entry)
        if task.key is not None:
            heapq.heappush(self._by_key.setdefault(task.key, []), entry)
        if task.chi6 is not None:
            heapq.heappush(self._by_chi.setdefault(int(task.chi6) & 0x3F, []), entry)
        self._n += 1

    def peek(self) -> tuple | None:
        """The heap entry of the task pop_batch would start with (None if nothing is pending)."""
        return self._top(self._heap)

    def extract(self, pred: Callable[[Task], bool]) -> list[Task]:
        """Remove and return the pending tasks for which pred(task) is true (O(n), rare)."""
        keep, out = [], []
        for t in self.drain():
            (out if pred(t) else keep).append(t)
        for t in sorted(keep, key=lambda t: t.seq):
            self.push(t, keep_age=True)
        return out

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
_executors = itertools.count(1)
_exiting = False


def _at_exit() -> None:
    global _exiting
    _exiting = True
    for ex in list(_live):
        ex.shutdown(wait=True)


atexit.register(_at_exit)


@dataclass(slots=True)
class Lane:
    """Tasks that wait on one decided lock: at most `limit` of them run at once. Also used for
    the tasks of a protected hot loop: `only` = the native thread ids allowed to run them."""
    key: tuple
    limit: int
    action: dict[str, Any]
    heap: list = field(default_factory=list)
    running: int = 0
    only: frozenset[int] | None = None
    last_fn: Any = None   # the callable last routed here (its name is in the Action's "tasks")


class CoherenceExecutor(Executor):
    """concurrent.futures.Executor with ThreadPoolExecutor semantics, the coherence policy and
    gyroscope's live decisions (schedulers/live.py).

    submit(fn, *args, **kwargs) passes every keyword to fn (default hints). Scheduling hints go
    through submit_with(fn, *args, coherence=, data=, urgency=, key=, chi6=, **kwargs) or
    submit_task(Task(...)), so they never clash with fn's own keywords.

    Live decisions (read at every submit and dispatch through live.version(), an int compare when
    nothing changed; schedulers/matching.py says which decisions concern a task):
      mitigate_contention on a lock: the task goes to that lock's lane; at most lane_limit
        (default 1) tasks of a lane run at once, so workers stop queueing on the lock while the
        other workers run the rest. A lane's head ranks LANE_BONUS above its base (the lock is
        the serial part of the workload: keep it busy), and only while the lane has room.
      specialize_hot_loop: the task's coherence becomes 1.0 (coherence-first, runs before the
        others) unless the caller gave a hint. When the decision carries "protected_threads"
        (the threads the priority actuator of `gyroscope run --act priorities` left at normal
        priority while lowering the others), its tasks run only on workers among them, as long
        as at least one worker is among them (else anywhere: never stranded).
    Tasks already pending when a new set of decisions arrives are re-routed, keeping their age.
    A lane stays once created (a decision that disappears between report cycles does not undo
    it). Each lane created appends an Action to `actions` ("route_to_lane" for a lock's lane,
    "run_on_protected_threads" for a protected hot loop; see _action_locked); its "tasks" and
    "routed" grow as tasks are routed. Under `gyroscope run` the same Actions go into the
    session (schedulers/live.py report()).
    Cost: submits append to an inbox without the policy lock; workers move it into the policy
    before each pick. While only submit() was used and no live rule exists ("plain mode"), every
    task has the same base and no key, chi6 or urgency, so the policy's order is the submission
    order and workers take the inbox's head without the lock, as ThreadPoolExecutor does
    (~8 us per trivial task, the same); the first hint or live rule switches to the policy for
    good (~20 us per trivial task when four workers queue on its lock; negligible next to tasks
    of a millisecond).
    Nothing is dropped; the starvation bound of the module docstring holds with the spread of
    bases S = 2 + LANE_BONUS (a lane task also waits for its lane's room, which its own lane's
    earlier tasks free up in FIFO-by-rank order).
    """

    def __init__(self, max_workers: int | None = None, *, thread_name_prefix: str = "CoherenceExecutor",
                 defer_below: float = DEFER_BELOW, aging_step: float = AGING_STEP, max_batch_size: int = 8,
                 default_coherence: float = DEFAULT_COHERENCE, lane_limit: int = 1,
                 use_live_decisions: bool = True) -> None:
        if max_workers is None:
            import os
            max_workers = min(32, (os.cpu_count() or 1) + 4)
        if max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        if lane_limit < 1:
            raise ValueError("lane_limit must be >= 1")
        self._max_workers = max_workers
        self._prefix = thread_name_prefix
        self._default = default_coherence
        self._queue = PolicyQueue(defer_below=defer_below, aging_step=aging_step, max_batch_size=max_batch_size)
        self._mu = threading.Lock()     # the policy state; `with self._mu` (not the Condition) saves a call
        self._cond = threading.Condition(self._mu)
        self._submit_mu = threading.Lock()   # submitters and shutdown only: never held by a worker
        self._inbox: collections.deque[tuple[Task, bool]] = collections.deque()
        # plain mode: only submit() so far and no live rule: every task has the same base, no key,
        # no chi6, no urgency, so the policy's order is the submission order; the workers then
        # take the inbox's head without the policy lock (ThreadPoolExecutor's cost). Left for
        # good at the first submit_with / submit_task or the first live rule.
        self._fifo = True
        self._fifo_dispatched: dict[int, int] = {}   # per worker (each writes only its own count)
        self._threads: list[threading.Thread] = []
        self._idle = 0                  # workers waiting that no notify has signalled yet (_wake_locked)
        self._shutdown = False
        self.batches_run = 0
        self.tasks_batched = 0
        self.lane_limit = lane_limit
        self._use_live = use_live_decisions
        self._lanes: dict[tuple[str, str, int], Lane] = {}
        self._version = -1
        self._classifier = Classifier([])
        self._hinted: set[int] = set()   # seq of tasks whose coherence the caller chose
        self.actions: list[dict[str, Any]] = []
        self.routed = 0
        self.hot_tasks = 0
        self.protected = 0
        self._natives: set[int] = set()   # native ids of the worker threads
        self._index = next(_executors)
        _live.add(self)

    @property
    def stats(self) -> dict[str, int]:
        with self._mu:
            fifo = sum(self._fifo_dispatched.values())
            return {"dispatched": self._queue.dispatched + fifo, "deferred": self._queue.deferred_total,
                    "batches": self.batches_run + fifo, "tasks_in_multi_batches": self.tasks_batched,
                    "pending": self._pending_locked(), "lanes": len(self._lanes), "routed": self.routed,
                    "hot_tasks": self.hot_tasks, "protected": self.protected}

    def _pending_locked(self) -> int:
        return len(self._queue) + len(self._inbox) + sum(len(lane.heap) for lane in self._lanes.values())

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        return self._submit(Task(fn, args, kwargs, coherence=self._default), hinted=False, plain=True)

    def submit_with(self, fn: Callable[..., Any], /, *args: Any, coherence: float | None = None,
                    data: Any = None, urgency: int = 0, key: Hashable | None = None,
                    chi6: int | None = None, **kwargs: Any) -> Future:
        """Submit with hints. coherence defaults to coherence_score(data), else default_coherence."""
        if coherence is None and data is not None:
            coherence = coherence_score(data)
        c = self._default if coherence is None else float(coherence)
        return self._submit(Task(fn, args, kwargs, coherence=min(1.0, max(0.0, c)), urgency=int(urgency),
                                 key=key, chi6=chi6), hinted=coherence is not None)

    def submit_task(self, task: Task) -> Future:
        return self._submit(task, hinted=True)

    def _submit(self, task: Task, hinted: bool, plain: bool = False) -> Future:
        """Append to the inbox without taking the policy lock (workers move the inbox into the
        policy before every pick, so the order is the one the lock would give: no pick happens
        between a submit and the move, and the stamps are taken then). The policy lock is taken
        only to wake an idle worker (the wake-up rules of _flush_locked). A worker re-checks the
        inbox after counting itself idle, so a submit that read _idle == 0 loses no wake-up.
        (Taking the policy lock per submit made the submitter and the workers queue on it: ~0.5
        context switches per trivial task, against ~0.02 for ThreadPoolExecutor.)"""
        with self._submit_mu:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if _exiting:
                raise RuntimeError("cannot schedule new futures after interpreter shutdown")
            if not plain:
                self._fifo = False   # a hint: the order is the policy's from now on
            self._inbox.append((task, hinted))
            if self._idle == 0 and len(self._threads) < self._max_workers:
                t = threading.Thread(target=self._worker, name=f"{self._prefix}_{len(self._threads)}", daemon=True)
                self._threads.append(t)
                t.start()
                return task.future
        if self._idle:
            with self._mu:
                self._flush_locked(wake=True)
        return task.future

    def _flush_locked(self, wake: bool) -> None:
        """Move the inbox into the policy (live decisions refreshed first). wake: wake idle workers
        for what was placed: one per task, all of them for a task only some workers may run, none
        for a task of a full lane (the lane's next free slot takes it)."""
        self._refresh_locked()
        inbox = self._inbox
        if self._fifo:   # plain mode: the workers take the inbox in order; nothing goes to the policy
            if wake and self._idle and inbox:
                self._wake_locked()
            return
        while inbox:
            task, hinted = inbox.popleft()
            lane = self._place_locked(task, hinted, new=True)
            if not (wake and self._idle):
                continue
            if lane is not None and lane.only is not None:
                self._wake_locked(all_=True)   # only some workers may run it: wake them all, the others sleep again
            elif lane is None or lane.running < lane.limit:
                self._wake_locked()

    def _wake_locked(self, all_: bool = False) -> None:
        """Signal one idle worker (all of them) and count it as no longer idle at once, so that
        the submits that follow before it runs do not signal it again (each of those took the
        policy lock and woke a worker that then queued on it)."""
        if all_:
            self._cond.notify_all()
            self._idle = 0
        elif self._idle:
            self._cond.notify()
            self._idle -= 1

    # ---- live decisions -------------------------------------------------------------------
    def _refresh_locked(self) -> None:
        """Pick up a new set of live decisions; re-route the pending tasks it concerns."""
        if not self._use_live:
            return
        v = live.version()
        if v == self._version:
            return
        self._version = v
        try:
            # a decision on this module's own code (its policy lock, contended by its workers) is
            # nothing a task can be routed for: it would only take the pool out of plain mode
            self._classifier = Classifier([r for r in rules_from(live.decisions()) if r.file != _OWN_FILE])
        except Exception:  # noqa: BLE001 - malformed decisions: schedule as a plain pool
            self._classifier = Classifier([])
        if self._classifier.rules:
            self._fifo = False
        if not self._classifier.rules or not len(self._queue):
            return
        hinted = self._hinted
        moved = self._queue.extract(self._concerned)
        for t in moved:
            self._place_locked(t, t.seq in hinted, new=False)
        if moved and self._idle:
            self._wake_locked(all_=True)

    def _concerned(self, task: Task) -> bool:
        try:
            return any(self._classifier.classify(task.fn, task.args))
        except Exception:  # noqa: BLE001
            return False

    def _place_locked(self, task: Task, hinted: bool, new: bool) -> Lane | None:
        """Queue a task where the live decisions say; return its lane (None: the main queue)."""
        lock = hot = None
        if self._classifier.rules:
            try:
                lock, hot = self._classifier.classify(task.fn, task.args)
            except Exception:  # noqa: BLE001 - an odd callable is scheduled as a plain task, never refused
                pass
        if hot is not None and not hinted:
            task.coherence = 1.0
            self.hot_tasks += new
            if not new:   # its base changes: re-stamp its deferral, keep its age
                task.deferred = False
        protect = lock is None and hot is not None and bool(hot.protected)
        if lock is None and not protect:
            self._queue.push(task, keep_age=not new)
            if hinted and new:
                self._hinted.add(task.seq)
            return None
        if protect:
            lane = self._lanes.get(("protected", *hot.key)) or self._new_protected(hot)
            entry = self._queue.entry_for(task, keep_age=not new)
            self.protected += 1
        else:
            lane = self._lanes.get(lock.key) or self._new_lane(lock)
            entry = self._queue.entry_for(task, bonus=LANE_BONUS, keep_age=not new)
            self.routed += 1
        heapq.heappush(lane.heap, entry)
        if hinted and new:
            self._hinted.add(task.seq)
        lane.action["routed"] += 1
        if task.fn is not lane.last_fn:   # the same callable again (the common case): named already
            lane.last_fn = task.fn
            name = task_name(task.fn)
            if name not in lane.action["tasks"] and len(lane.action["tasks"]) < 32:
                lane.action["tasks"].append(name)
        return lane

    def _action_locked(self, name: str, rule: Rule, limit: int, **more: Any) -> dict[str, Any]:
        """The Action of a new lane (agent/model.py Action/LaneInfo, as a plain dict):
        {"action": name, "entity": {kind, file, function, line, detail}, "limit", "workers",
         "tasks": [qualified names routed, first 32], "routed": n, "executor", "decision_version",
         "reason", "t_s" (since this module's import), "t_unix", **more}. It is also reported to
        the session (live.report: nothing when not under gyroscope); "tasks" and "routed" grow as
        tasks are routed, and the session gets their last values."""
        d = rule.decision
        kind = str(d.get("kind") or d.get("entity_kind") or "")
        action = {"action": name,
                  "entity": {"kind": kind, "file": rule.file, "function": rule.function, "line": rule.key[2],
                             "detail": rule.detail},
                  "limit": limit, "workers": self._max_workers, "tasks": [], "routed": 0, "executor": self._index,
                  "decision_version": self._version,
                  "reason": f"{rule.action} on {kind or 'entity'} {rule.function} ({rule.file}:{rule.key[2]})",
                  "t_s": round(time.monotonic() - _T0, 6), "t_unix": time.time(), **more}
        self.actions.append(action)
        live.report(action)
        return action

    def _new_lane(self, rule: Rule) -> Lane:
        """Create the lane of a decided lock; its Action is "route_to_lane" (_action_locked)."""
        action = self._action_locked("route_to_lane", rule, self.lane_limit)
        lane = self._lanes[rule.key] = Lane(rule.key, self.lane_limit, action)
        return lane

    def _new_protected(self, rule: Rule) -> Lane:
        """The lane of a protected hot loop's tasks; its Action is "run_on_protected_threads" with
        "threads": the native ids its tasks may run on (_action_locked)."""
        action = self._action_locked("run_on_protected_threads", rule, self._max_workers,
                                     threads=sorted(rule.protected))
        lane = self._lanes[("protected", *rule.key)] = Lane(("protected", *rule.key), self._max_workers, action,
                                                            only=rule.protected)
        return lane

    # ---- workers --------------------------------------------------------------------------
    def _may_run(self, lane: Lane, me: int) -> bool:
        return lane.only is None or me in lane.only or not (lane.only & self._natives)

    def _pick_locked(self, me: int = 0) -> tuple[Lane | None, list[Task]] | None:
        best, best_lane = self._queue.peek(), None
        for lane in self._lanes.values():
            if (lane.heap and lane.running < lane.limit and (best is None or lane.heap[0] < best)
                    and self._may_run(lane, me)):
                best, best_lane = lane.heap[0], lane
        if best is None:
            return None
        if best_lane is None:
            return None, self._queue.pop_batch()
        heapq.heappop(best_lane.heap)
        best_lane.running += 1
        self._queue.dispatched += 1
        return best_lane, [best[3]]

    def _worker(self) -> None:
        """Finish-and-pick in one critical section: a worker that frees a lane slot takes the
        lane's next task itself (its head ranks first), so no other worker is woken for it; an
        idle worker is woken only when something it could run is left behind. (Waking one per
        lane completion cost ~25% more context switches than ThreadPoolExecutor.)"""
        lane: Lane | None = None
        me = threading.get_native_id()
        counts = self._fifo_dispatched
        with self._mu:
            self._natives.add(me)
            counts.setdefault(me, 0)
        while True:
            if self._fifo and (not self._use_live or live.version() == self._version):
                try:   # plain mode: the oldest task, no policy lock (a deque's popleft is atomic)
                    task = self._inbox.popleft()[0]
                except IndexError:
                    pass
                else:
                    counts[me] += 1
                    task.run()
                    del task
                    continue
            with self._mu:
                freed, lane = lane, None
                if freed is not None:
                    freed.running -= 1
                while True:
                    self._flush_locked(wake=False)
                    if self._fifo:
                        pick = (None, [self._inbox.popleft()[0]]) if self._inbox else None
                    else:
                        pick = self._pick_locked(me)
                    if pick is not None:
                        break
                    if self._shutdown and not self._pending_locked():
                        self._wake_locked(all_=True)
                        return
                    self._idle += 1
                    if self._inbox:   # a submit that saw no idle worker: no wait, take it
                        self._idle -= 1
                        continue
                    self._cond.wait()   # whoever signals it has taken it off _idle
                lane, batch = pick
                if (freed is not None and freed is not lane and freed.heap and freed.running < freed.limit
                        and self._idle):
                    self._wake_locked()
                if self._fifo:
                    counts[me] += 1
                    hinted = None
                else:
                    self.batches_run += 1
                    hinted = self._hinted
                if len(batch) > 1:
                    self.tasks_batched += len(batch)
            for task in batch:
                if hinted is not None:
                    hinted.discard(task.seq)
                task.run()
            del batch, task, pick

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._submit_mu, self._mu:
            self._shutdown = True
            if cancel_futures:
                while self._inbox:
                    self._inbox.popleft()[0].future.cancel()
                for t in self._queue.drain():
                    t.future.cancel()
                for lane in self._lanes.values():
                    for e in lane.heap:
                        e[3].future.cancel()
                    lane.heap.clear()
                self._hinted.clear()
            self._wake_locked(all_=True)
            threads = list(self._threads)
        if wait:
            for t in threads:
                if t is not threading.current_thread():
                    t.join()


def task_name(fn: Any) -> str:
    """"qualname (file:first line)" of a callable, for Actions."""
    code = unwrap(fn)[0]
    if code is not None:
        return f"{code.co_qualname} ({code.co_filename}:{code.co_firstlineno})"
    return getattr(fn, "__qualname__", None) or type(fn).__qualname__
