"""Direct measurements per entity, the numbers a user can check next to the structural scores.

Fed once per window with the Observation of a source (see the event conventions in
bridges/channel.py): loop iterations and iterations/s (from the duty-cycled backward-jump
counts), calls, samples running / waiting, CPU share, wait time, wait episodes and the
distinct threads that waited.

What the numbers are (and are not):
- iterations_per_s: a loop's rate per second of its running (CPU) time, from one of two sources
  (`iterations_per_s_source`):
  - "uninstrumented": a for-loop over a range, a list, a tuple, a dict or an enumerate of one
    (CPython 3.12 and 3.13). The bridge reads the loop's own iterator where the interpreter
    keeps it, at the end of each window's burst of hits and again when the loop ends (or at the
    next re-arm while it still runs); the items it handed out in between are the iterations the
    loop ran with no callback at all, and the thread's CPU clock gives their time
    (bridges/_inproc.pyx, "spans"). A loop with no iterator to read (a while loop, a generator)
    is read the same way from a local int that stepped alike at every timed hit ("induction").
    A measurement, not a correction: benchmarks/accuracy.py, single runs of 0.3-0.5 s programs:
    -6.0% .. +6.7% (-27% in runs where the machine was busy with other work during the
    stretches it read).
  - "timed hits", for the other loops (neither an iterator the bridge may hold, nor a stepping
    local: `for x in sorted(a): total += f(x)`): the median over
    windows of the timed hits: after each re-arm (at a random moment of the window) and WARM + a
    random skip of hits, the gaps between K - WARM consecutive hits of one frame, each from the
    return of one callback to the start of the next, less the dispatch cost of a callback that
    the process measured on itself (bridges/channel.py). An estimate: -10% .. +30% in single
    runs on tight loops of ~40-55 ns per iteration, where the dispatch cost (~35 ns) is as large
    as the body; loops with heavier bodies are less affected.
- iterations: exact (`iterations_exact`) when the loop never ran K times in a window and no
  iteration was lost (LoopRead.lost: the process's last window never arrived, or a forked child's
  loop began disarmed, as its parent left it: tests/e2e/test_loop_spans.py's fork, called exact
  in ~1 of 20 runs before), or when it was counted whole: a loop over a range, list, tuple, dict or enumerate of one, counted on one
  thread, none of whose windows the bridge flagged
  (nor the channel: a process that ended without its last window)
  (every run counted by hits or read from its iterator; a run that ends while the slot is
  disarmed re-arms the code at once when it took >= 200x the re-arm's cost, 0.4-1 ms: bridges/
  _inproc.pyx "coverage"). A loop counted in all its runs, part of it by a stepping local, has
  that count but is not called exact (INDUCTION_ERROR). Else `iterations_counted` were counted
  exactly and the count is that or, when more, the rate times the loop's sampled time, its
  callees' and inner loops' included (Observation.enclosing: the rate is of whole iterations
  too; see _extrapolate), with the sampled running time's error (_estimate_error; the time
  before py-spy's first sample, 10-20 ms after the program's first line, is shared by the loops
  counted since before it: bridges/run_source.py). benchmarks/accuracy.py, single runs: whole counts on hot_loop,
  two_loops and stat_loop (-2.4% .. +0.2% where a run was missed); runs of 1.4 ms: -1.8% .. +8.5%;
  four threads on one loop: -4.5% .. +10%; runs of 0.45 ms with a quarter of the CPU: -16% .. +32%.
- cpu_share: the entity's CPU time over the process's CPU time (while sampled: from about the
  program's first line; the interpreter's start-up has no Python frame). From outside (py-spy +
  /proc, bridges/pyspy.py) a SAMPLE_RUN's duration is the CPU time the kernel counted for that
  thread, spread over its running samples, and the denominator is the CPU time of every sampled
  stack (library-only threads included): a share of the process's CPU. A thread waiting for the
  interpreter lock (SAMPLE_GIL) is not running (samples_gil counts it). Sources without stacks
  (the in-process sampler) fall back to the entity's share of the running samples' time.
  `cpu_share_source` says which: "samples", or, in the session's result, "iterations / rate"
  for a loop counted whole at an uninstrumented rate that no sample saw running other code of
  the program, nor another loop of its function (Observation.enclosing): its exact count over
  its measured rate is its CPU time, free of the sampling noise (two loops alternating every
  ~10 ms in a 0.3 s program: -0.7 .. +1.1 points over three runs, against -9.2 .. +8.8 from the
  samples). Inclusive of what it calls in libraries, as the samples are (role "via").
- wait_s_total: sampled blocked time; waits: sampled episodes (a thread blocked at one site in
  consecutive samples without using CPU in between is one episode).
- exact lock figures: for a lock (or Event / Barrier / Queue "wait") entity fed by the profiled
  locks (Observation.locks, see
  bridges/lockstats.py) the measurements are exact and say so (`exact: True`): waits = every
  contended acquire or blocking wait, wait_s_total / wait_s_max / wait_s_mean from their measured
  durations (CLOCK_MONOTONIC around the blocking call), hold_s_total (acquire -> release),
  acquires, waiting_threads = the distinct native threads that waited, call_sites = the lines that
  waited (most waited first; at most MAX_CALL_SITES kept per entity, the rest counted in
  call_sites_dropped). Measured on programs that time themselves (tests/test_locks.py): wait
  totals within 1% of the truth for ~0.1 ms and ~10 ms holds, thread counts exact.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

from gyroscope.agent.model import Measurements as MeasurementsRecord
from gyroscope.bridges.events import Entity, EventKind, LockWindow, Observation

_COUNTED = (EventKind.LOOP_ITER, EventKind.CALL, EventKind.RESUME)
_RECORD_FIELDS = tuple(f.name for f in fields(MeasurementsRecord) if f.name != "extra")
MAX_CALL_SITES = 32     # waiting call sites kept per lock entity


@dataclass(slots=True)
class EntityStats:
    exact_hits: int = 0          # loop iterations (or calls) counted in windows that did not saturate
    via_ns: int = 0              # running time whose leaf was library code this entity called
    library: bool = False        # a library's loop, seen through the program's calls (stacks.library_loop)
    saturated_hits: int = 0      # hits counted in windows that saturated (K each): a lower bound
    rates: list[tuple[int, float]] = field(default_factory=list)   # (when, rate) of each timed burst
    iter_read: int = 0           # iterations no hit counted, read from the loop's iterator: exact
    free_iters: int = 0          # iterations run with no callback, in free_ns of thread CPU time
    free_ns: int = 0
    gaps: int = 0                # windows in which the loop may have run uncounted (bridges: "coverage")
    induction: int = 0           # windows in which a stepping local counted part of it ("induction")
    lost: int = 0                # reads saying iterations ran that no hit counted (LoopRead.lost)
    read_windows: int = 0        # windows with iterator readings
    counting_threads: set[int] = field(default_factory=set)   # threads the bridge counted its iterations on
    encloses: bool = False       # a loop seen running other code of the program (Observation.enclosing)
    inner_ns: int = 0            # ... and its sampled CPU time there (its run_ns leaves it out)
    call_exact: int = 0
    call_saturated: int = 0
    call_rates: list[tuple[int, float]] = field(default_factory=list)
    samples_running: int = 0
    samples_waiting: int = 0
    samples_gil: int = 0
    run_ns: int = 0
    wait_ns: int = 0
    waits: int = 0
    threads: set[int] = field(default_factory=set)
    waiting_threads: set[int] = field(default_factory=set)
    lock: ExactLock | None = None     # exact figures from the profiled locks


@dataclass(slots=True)
class ExactLock:
    acquires: int = 0
    contended: int = 0
    wait_ns: int = 0
    wait_max_ns: int = 0
    hold_ns: int = 0
    threads: set[int] = field(default_factory=set)
    call_sites: dict[tuple[str, int], list[int]] = field(default_factory=dict)   # -> [waits, wait ns]
    call_sites_dropped: int = 0

    def add(self, lw: LockWindow) -> None:
        self.acquires += lw.acquires
        self.contended += lw.contended
        self.wait_ns += lw.wait_ns
        self.wait_max_ns = max(self.wait_max_ns, lw.wait_max_ns)
        self.hold_ns += lw.hold_ns
        self.threads.update(lw.threads)
        for key, (waits, wait_ns) in lw.callsites.items():
            rec = self.call_sites.get(key)
            if rec is not None:
                rec[0] += waits
                rec[1] += wait_ns
            elif len(self.call_sites) < MAX_CALL_SITES:
                self.call_sites[key] = [waits, wait_ns]
            else:
                self.call_sites_dropped += 1

    def as_dict(self) -> dict[str, Any]:
        sites = sorted(self.call_sites.items(), key=lambda kv: (-kv[1][1], kv[0]))
        return {
            "exact": True,
            "waits": self.contended,
            "wait_s_total": self.wait_ns / 1e9,
            "wait_s_mean": (self.wait_ns / 1e9 / self.contended) if self.contended else 0.0,
            "wait_s_max": self.wait_max_ns / 1e9,
            "hold_s_total": self.hold_ns / 1e9,
            "acquires": self.acquires,
            "waiting_threads": len(self.threads),
            "call_sites": [{"file": f, "line": ln, "function": _function_at(f, ln), "waits": w, "wait_s": ns / 1e9}
                           for (f, ln), (w, ns) in sites],
            "call_sites_dropped": self.call_sites_dropped,
        }


def _burst_median(rates: list[tuple[int, float]]) -> float:
    """The median of the bursts' rates but the first one's (when there are others): a loop that
    runs from the program's start has its first burst beside gyroscope's own start-up on the
    other core, ~2x slower, and a 0.4 s program has only 2-4 bursts. (Weighting the bursts by
    the time each stands for was tried: the last one's weight made single long loops +61%.)"""
    pts = [r for _, r in sorted(rates)]
    pts = sorted(pts[1:] if len(pts) > 1 else pts)   # (not `statistics`: ~1 MiB of the watcher's RSS)
    mid = len(pts) // 2
    return pts[mid] if len(pts) % 2 else (pts[mid - 1] + pts[mid]) / 2


MIN_FREE_NS = 200_000   # a loop's own rate once it ran >= 0.2 ms with no callback (else the bursts')


def _rate(rates: list[tuple[int, float]], free_iters: int, free_ns: int) -> tuple[float, str]:
    """A saturated loop's rate and where it comes from: "uninstrumented" (its iterator's items
    over its thread's CPU time while no callback ran: bridges/_inproc.pyx "spans"), else "timed
    hits" (the bursts, less the calibrated dispatch cost)."""
    if free_ns >= MIN_FREE_NS and free_iters:
        return free_iters * 1e9 / free_ns, "uninstrumented"
    return (_burst_median(rates), "timed hits") if rates else (0.0, "")


def _extrapolate(exact: int, saturated: int, rates: list[tuple[int, float]], run_ns: int,
                 read: int = 0, free_iters: int = 0, free_ns: int = 0) -> tuple[float, float, str]:
    """(count, rate, rate source) of a duty-cycled counter: exact when no window saturated; else
    what was counted exactly (the hits, and what the loop's iterator says ran between them:
    `read`) and the loop's sampled running time beyond the time those stand for, at its rate
    (_rate; the counts and the sampled time are joined over the whole session, not per window:
    samples reach the session a chunk late). Never less than what was counted."""
    counted = exact + saturated + read
    if not saturated:
        return float(counted), (exact * 1e9 / run_ns if exact and run_ns else 0.0), ""
    rate, source = _rate(rates, free_iters, free_ns)
    if rate <= 0:
        return float(counted), 0.0, ""
    rest_s = max(0.0, run_ns / 1e9 - counted / rate)
    return counted + rate * rest_s, rate, source


# What an estimated count or rate may be off by, relative, by the rate's source (benchmarks/
# accuracy.py on 0.3-0.5 s programs of tight loops, 2026-12-02, single runs; the module docstring
# says where they come from).
ESTIMATE_ERROR = {"uninstrumented": {"iterations_per_s": 0.07, "iterations": 0.10},
                  "timed hits": {"iterations_per_s": 0.30, "iterations": 0.30}}
# a loop counted in all its runs, part of it by a stepping local (bridges/_inproc.pyx "induction"):
# exact while the local kept the step it had at the timed hits (6,000,000 of 6,000,000 on a while
# loop and 3,000,000 of 3,000,000 on a loop over a generator); a branch that steps it otherwise
# later is not seen
INDUCTION_ERROR = 0.05

MAX_THREADS_KEPT = 256   # an entity's distinct threads kept (a thread per request must not grow a session)

BYTECODE_NS_PER_ITERATION = 2_000   # at most this much of a loop body's own bytecode per iteration
BYTECODE_NS_PER_CALL = 10_000       # ... and of a function's own lines (outside its loops) per call


def _estimate_error(iterations: float, counted: int, st: EntityStats, source: str) -> float:
    """The expected relative error of an estimated count: its rate's (ESTIMATE_ERROR), or, when
    more, that of the sampled time the uncounted part was extrapolated over: two standard errors
    of its running samples (two threads of a 70 ms loop, 17 samples: +71% in one run), times the
    share of the count that is extrapolated (at most 1.0, as for a count no counter made)."""
    base = ESTIMATE_ERROR[source or "timed hits"]["iterations"]
    samples = st.samples_running + st.samples_gil
    if iterations <= 0 or samples <= 0:
        return base
    extrapolated = max(0.0, 1.0 - counted / iterations)
    return round(min(1.0, max(base, extrapolated * 2.0 / math.sqrt(samples))), 3)   # 1.0: unknown


def _native_share(iterations: float, saturated: int, run_ns: int,
                  per_ns: int = BYTECODE_NS_PER_ITERATION) -> float:
    """Estimated share of a loop's running time spent in calls to native code (or library code it
    calls), not in its own bytecode: a loop whose iterations were all counted exactly and each took
    far longer than a loop body's bytecode can (BYTECODE_NS_PER_ITERATION) is waiting on what it
    calls (the samples of Python callees of the program's own code go to those callees). 0 for a
    loop that saturated the counters (fast iterations: its own bytecode). For a function entity the
    same with its exactly counted calls (ast.parse: milliseconds per call in the C parser)."""
    if saturated or iterations <= 0 or run_ns <= 0:
        return 0.0
    return max(0.0, 1.0 - iterations * per_ns / run_ns)


def _function_at(file: str, line: int) -> str:
    """The qualified name of the function at file:line (from the source; "" when unknown)."""
    from gyroscope.bridges import codemap
    try:
        return codemap.qualname_at(file, line) or ""
    except Exception:   # an unreadable file only loses the name
        return ""


class Measurements:
    def __init__(self) -> None:
        self.stats: dict[Entity, EntityStats] = {}
        self.total_running = 0
        self.total_run_ns = 0
        self.total_cpu_ns = 0      # CPU time of every sampled stack (sources that send stacks)
        self.duration_ns = 0
        # every window is in (the session's end): the samples, a chunk behind the counts while the
        # program runs, have caught up, and a loop's CPU time may be put over the process's
        self.complete = False

    def get(self, ent: Entity) -> EntityStats:
        st = self.stats.get(ent)
        if st is None:
            st = self.stats[ent] = EntityStats()
        return st

    def update(self, obs: Observation) -> set[Entity]:
        """Fold one window in; return the entities touched."""
        touched: set[Entity] = set()
        window_ns = max(obs.t_end_ns - obs.t_start_ns, 1)
        self.duration_ns += window_ns
        self.total_cpu_ns += sum(s.cpu_ns for s in obs.stacks)
        for ev in obs.events:
            st = self.get(ev.entity)
            touched.add(ev.entity)
            if ev.thread and len(st.threads) < MAX_THREADS_KEPT:
                st.threads.add(ev.thread)
            k = ev.kind
            if k in _COUNTED:
                timed = ev.duration_ns > 0 and ev.count > 1   # its rate: the timed gaps
                saturated = ev.saturated or timed
                if k == EventKind.LOOP_ITER:
                    if ev.thread and len(st.counting_threads) < 2:
                        st.counting_threads.add(ev.thread)
                    if saturated:
                        st.saturated_hits += ev.count
                        if timed:
                            st.rates.append((ev.t_ns, (ev.count - 1) * 1e9 / ev.duration_ns))
                    else:
                        st.exact_hits += ev.count
                elif saturated:
                    st.call_saturated += ev.count
                    if timed:
                        st.call_rates.append((ev.t_ns, (ev.count - 1) * 1e9 / ev.duration_ns))
                else:
                    st.call_exact += ev.count
            elif k == EventKind.SAMPLE_RUN:
                st.samples_running += ev.count
                st.run_ns += ev.duration_ns
                if ev.role == "lib":      # a library loop, inclusive: its time is also its caller's
                    st.library = True
                    continue
                if ev.role == "via":      # the program's frame, running in library code it called
                    st.via_ns += ev.duration_ns
                elif ev.role == "start":  # ran before the first sample (bridges/run_source.py)
                    self.total_cpu_ns += ev.duration_ns
                self.total_running += ev.count
                self.total_run_ns += ev.duration_ns
            elif k == EventKind.SAMPLE_GIL:
                # runnable but waiting for the interpreter lock: not running
                st.samples_gil += ev.count
            elif k == EventKind.SAMPLE_WAIT:
                st.samples_waiting += ev.count
                st.wait_ns += ev.duration_ns
                st.waiting_threads.add(ev.thread)
            elif k == EventKind.LOCK_WAIT:
                st.waits += ev.count
            elif k in (EventKind.GC, EventKind.LOOP_BLOCK):
                # gc pauses; coroutine steps that blocked the event loop (>= 100 ms each, exact)
                st.waits += ev.count
                st.wait_ns += ev.duration_ns
        for r in obs.loop_reads:
            st = self.get(r.entity)
            touched.add(r.entity)
            st.iter_read += r.iterations
            st.free_iters += r.free_iterations
            st.free_ns += r.free_ns
            st.gaps += r.gap
            st.induction += r.induction
            st.lost += r.lost
            st.read_windows += 1
        for ent, ns in obs.enclosing.items():
            st = self.get(ent)
            st.encloses = True
            st.inner_ns += ns
        for lw in obs.locks:
            st = self.get(lw.entity)
            touched.add(lw.entity)
            if st.lock is None:
                st.lock = ExactLock()
            st.lock.add(lw)
            st.threads.update(lw.threads)
        return touched

    def as_dict(self, ent: Entity) -> dict[str, Any]:
        st = self.get(ent)
        # the rates are of whole iterations, callees and inner loops included: so is the time
        iterations, ips, ips_source = _extrapolate(st.exact_hits, st.saturated_hits, st.rates,
                                                   st.run_ns + st.inner_ns, st.iter_read, st.free_iters, st.free_ns)
        # counted whole: every window's runs were counted by hits or read from the iterator, in a
        # process of one thread (bridges/channel.py: a run another thread started while the slot
        # was disarmed would not be seen)
        complete = bool(st.saturated_hits and st.read_windows and not st.gaps and len(st.counting_threads) <= 1)
        whole = complete and not st.induction     # (a local's count is right only while it kept its step)
        counted = st.exact_hits + st.saturated_hits + st.iter_read
        # every hit counted (no window saturated), and none lost (a last window, a forked child's
        # loop that began disarmed)
        all_hits = not st.saturated_hits and not st.lost
        if complete:
            iterations = float(counted)
        calls, _, _ = _extrapolate(st.call_exact, st.call_saturated, st.call_rates, st.run_ns)
        waits = st.waits or (1 if st.wait_ns else 0)
        share, share_source = self._cpu_share(st), "samples"
        if (self.complete and ent.kind == "loop" and complete and ips_source == "uninstrumented"
                and not st.encloses and self.total_cpu_ns):
            # its exact count at its measured rate is its CPU time, without the samples' noise
            share, share_source = min(1.0, counted / ips / (self.total_cpu_ns / 1e9)), "iterations / rate"
        # a loop the samples saw running but no counter counted (a library's loop, not watched
        # without --all-code / --include): its count is unknown, not 0
        uncounted = ent.kind == "loop" and not counted and st.run_ns > 0
        out = {
            "iterations": int(round(iterations)),
            "iterations_per_s": float(ips),
            "iterations_exact": (whole or all_hits) and not uncounted,
            # counted exactly (hits, and iterator readings between them): the count is never less
            "iterations_counted": counted,
            "iterations_per_s_source": ips_source,
            # the expected relative error of what is estimated (0.0: exact, or nothing to estimate)
            "iterations_error": (1.0 if uncounted else 0.0 if whole or all_hits
                                 else INDUCTION_ERROR if complete
                                 else _estimate_error(iterations, counted, st, ips_source)),
            "iterations_per_s_error": ESTIMATE_ERROR[ips_source]["iterations_per_s"] if ips_source else 0.0,
            "native_share": (_native_share(iterations, st.saturated_hits, st.run_ns) if ent.kind == "loop" else
                             _native_share(calls, st.call_saturated, st.run_ns, BYTECODE_NS_PER_CALL)),
            "calls": int(round(calls)),
            "cpu_share": share,
            "cpu_share_source": share_source,
            "samples_running": st.samples_running,
            "samples_gil": st.samples_gil,
            "samples_waiting": st.samples_waiting,
            "wait_s_total": st.wait_ns / 1e9,
            "wait_s_mean": (st.wait_ns / 1e9 / waits) if waits else 0.0,
            "waits": st.waits,
            "waiting_threads": len(st.waiting_threads),
            "run_s_total": st.run_ns / 1e9,
            # of the running time, the share spent in library code it called (sampled leaves)
            "library_share": (st.via_ns / st.run_ns) if st.run_ns else 0.0,
        }
        if st.library:
            out["library"] = True
        if st.lock is not None:
            out.update(st.lock.as_dict())
        return out

    def record(self, ent: Entity) -> MeasurementsRecord:
        """as_dict() as the session model's typed record (fields it does not know go to `extra`)."""
        d = self.as_dict(ent)
        known = {k: d.pop(k) for k in _RECORD_FIELDS if k in d}
        return MeasurementsRecord(**known, extra=d)   # built directly: these values are ours, typed

    def _cpu_share(self, st: EntityStats) -> float:
        if self.total_cpu_ns:
            return min(1.0, st.run_ns / self.total_cpu_ns)
        if self.total_run_ns:
            return st.run_ns / self.total_run_ns
        return st.samples_running / self.total_running if self.total_running else 0.0

    def threads_of(self, ent: Entity) -> list[int]:
        return sorted(self.get(ent).threads)
