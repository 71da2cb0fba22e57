"""Which sampled stacks were running: each thread's CPU time from /proc, spread over its samples.

py-spy's stacks (bridges/pyspy_record.py) say where each thread was, not whether it ran: a thread
spinning, one waiting for the interpreter lock (GIL) and one blocked in a C call all look alike.
The kernel knows how much CPU each thread used (bridges/procfs.py, polled every ~0.1 s into a
`CpuHistory`). For each thread and each poll interval ("bin"):

- its samples are split by their stack into "looks waiting" (the leaf is a blocking call:
  bridges.stacks.waiting_leaf) and the others;
- its CPU time C in the bin is given first to the other samples (running fraction
  min(1, C / their wall time)), what is left to the "waiting" ones (a "waiting" stack that burns
  CPU is in fact running: a `with` line, a `q.get()` that does not block);
- of the rest of its non-waiting time, what the kernel counted as run-queue delay (runnable,
  no CPU free: a busy machine) is running too (with no CPU time);
- the rest is waiting for the GIL (state gil) as far as the other Python
  threads of the process ran meanwhile (someone held the GIL), else blocked in a C call we do not
  know (state wait). The other threads include those that hold the GIL when they run but are
  left out of the samples (`gil_holders`: the bridge's shipper in a `gyroscope run` program):
  the program's thread that waits while the shipper ships a window waits for the GIL, and was
  reported as blocked at its line (a 1-4 ms "wait" in the hot loop of every single-threaded
  program). A stack whose leaf line calls nothing (`no_call`: bridges.stacks.calls_nothing)
  cannot be blocked in a call: its unexplained time off the CPU is a wait for the GIL too.

So CPU shares are shares of the process's CPU time (the sum of `cpu_ns` over a bin is what the
kernel counted), and a thread that waits for the GIL is not counted as running. Where no CPU
reading covers a span (its thread was born and died between two polls, or it ended before the
next poll: a short program), non-waiting stacks count as running, the threads of a process one
at a time (the interpreter lock): together for the union of their spans.
"""
from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass

from gyroscope.bridges.pyspy_record import Span

# A bin's samples are placed on the clock within a few ms (py-spy's clock starts ~1-5 ms after
# the chunk is spawned; a sample stands for one interval): with 50-200 ms bins, a thread that ran
# >= 85% of its non-waiting time is taken as running all of it (on a single spinning thread over
# 3 s this turned 3 spurious "wait other" samples of 302 into running ones).
NOISE = 0.15


class CpuHistory:
    """Cumulative CPU time per thread at poll times (monotonic ns), oldest first. Key -PID holds
    the whole process's CPU time (threads that ended included)."""

    def __init__(self) -> None:
        self.times: list[int] = []
        self.cpu: list[dict[int, tuple[int, int]]] = []

    def add(self, t_ns: int, cpu: dict[int, tuple[int, int]]) -> None:
        """`cpu`: per thread, (CPU ns, run-queue delay ns) consumed so far."""
        if self.times and t_ns <= self.times[-1]:
            return
        self.times.append(t_ns)
        self.cpu.append(cpu)

    def ended_by(self, tid: int) -> int | None:
        """The time of the first reading without `tid` after one with it (when it was seen ending),
        None when it is in the last reading or was never read."""
        for i in range(len(self.times) - 1, -1, -1):
            if tid in self.cpu[i]:
                return self.times[i + 1] if i + 1 < len(self.times) else None
        return None

    def trim(self, before_ns: int) -> None:
        """Forget readings older than the last one at or before `before_ns` (memory stays flat)."""
        i = bisect.bisect_right(self.times, before_ns) - 1
        if i > 0:
            del self.times[:i]
            del self.cpu[:i]

    def bins(self, lo: int, hi: int) -> list[tuple[int, int, dict[int, tuple[int, int] | None]]]:
        """(start, end, per thread (CPU ns, run-queue ns)) for each poll interval overlapping
        [lo, hi], clipped to it (a clipped bin gets its share, assuming a steady rate inside)."""
        out = []
        i = max(0, bisect.bisect_right(self.times, lo) - 1)
        while i + 1 < len(self.times) and self.times[i] < hi:
            a, b = self.times[i], self.times[i + 1]
            ca, cb = self.cpu[i], self.cpu[i + 1]
            s, e = max(a, lo), min(b, hi)
            if e > s:
                frac = (e - s) / (b - a)
                d: dict[int, tuple[int, int] | None] = {}
                for tid, (c1, q1) in cb.items():
                    c0, q0 = ca.get(tid, (0, 0))     # born in this interval: all its CPU is in it
                    d[tid] = (int((c1 - c0) * frac), int((q1 - q0) * frac))
                for tid in ca:
                    if tid not in cb:
                        d[tid] = None                # ended in this interval: its CPU is unknown
                out.append((s, e, d))
            i += 1
        return out


@dataclass(slots=True)
class Portion:
    """The part of one span inside one bin, with its wall time split by state."""
    span: Span
    t0_ns: int
    t1_ns: int
    run_ns: int = 0
    gil_ns: int = 0
    wait_ns: int = 0
    cpu_ns: int = 0


def attribute(spans: list[Span], history: CpuHistory,
              waiting: Callable[[tuple], bool], gil_holders: set[int] | frozenset[int] = frozenset(),
              no_call: Callable[[tuple], bool] = lambda frames: False) -> list[Portion]:
    """Split `spans` at the history's poll times and give each part its running / GIL / waiting
    time and CPU time (module docstring). Returned in time order per thread."""
    if not spans:
        return []
    lo = min(s.t0_ns for s in spans)
    hi = max(s.t1_ns for s in spans)
    bins = history.bins(lo, hi)
    starts = [b[0] for b in bins]
    by_thread: dict[int, list[Span]] = {}
    for s in spans:
        by_thread.setdefault(s.tid, []).append(s)
    out: list[Portion] = []
    # per (bin index, tid): the portions in it
    cells: dict[tuple[int, int], list[Portion]] = {}
    unread: dict[int, list[Portion]] = {}    # per process: non-waiting portions no reading covers
    for tid, lst in by_thread.items():
        lst.sort(key=lambda s: s.t0_ns)
        for s in lst:
            t = s.t0_ns
            j = max(0, bisect.bisect_right(starts, t) - 1)
            while t < s.t1_ns:
                while j < len(bins) and bins[j][1] <= t:
                    j += 1
                if j < len(bins) and bins[j][0] <= t:
                    end = min(s.t1_ns, bins[j][1])
                    p = Portion(s, t, end)
                    cells.setdefault((j, tid), []).append(p)
                else:
                    # outside every bin: before the first reading, after the last, or in a hole
                    end = min(s.t1_ns, bins[j][0]) if j < len(bins) else s.t1_ns
                    p = Portion(s, t, end)
                    if waiting(s.frames):
                        p.wait_ns = end - t
                    else:
                        unread.setdefault(s.pid, []).append(p)
                out.append(p)
                t = end
    by_bin: dict[tuple[int, int], dict[int, list[Portion]]] = {}
    for (j, tid), portions in cells.items():
        by_bin.setdefault((j, portions[0].span.pid), {})[tid] = portions
    for (j, pid), threads in by_bin.items():
        deltas = bins[j][2]
        known = {t: d for t, d in deltas.items() if t > 0 and d is not None}
        sampled = [t for t in threads if t in known]
        pooled = [p for t, ps in threads.items() if t not in known for p in ps]
        py_cpu = sum(max(0, known[t][0]) for t in sampled)
        py_cpu += sum(max(0, known[t][0]) for t in gil_holders if t in known and t not in threads)
        for t in sampled:
            cpu, runq = max(0, known[t][0]), max(0, known[t][1])
            _spread(threads[t], cpu, runq, py_cpu - cpu, waiting, no_call)
        if not pooled:
            continue
        # threads without a reading of their own: born and ended between two readings, ended
        # before the next one, or named by py-spy with a stale id (it caches thread ids, and a
        # reused pthread id keeps an old native id: seen on a thread-per-request server). Their
        # CPU is the process's (which counts ended threads) minus what the readings account for.
        proc = deltas.get(-pid) if pid else None
        if proc is None:
            for p in pooled:           # no figure at all (the process ended): by the stack alone
                if waiting(p.span.frames):
                    p.wait_ns = p.t1_ns - p.t0_ns
                else:
                    unread.setdefault(pid, []).append(p)
            continue
        accounted = sum(max(0, d[0]) for d in known.values())
        _spread(pooled, max(0, proc[0] - accounted), 0, py_cpu, waiting, no_call)
        for p in pooled:
            if p.span.tid in deltas and not waiting(p.span.frames):
                # it ended in this interval, and py-spy keeps an ended thread's last stack until
                # the chunk is written: what CPU does not explain is time after its end, dropped
                p.gil_ns = p.wait_ns = 0
    for portions in unread.values():
        _one_at_a_time(portions)
    out.sort(key=lambda p: (p.span.tid, p.t0_ns))
    return out


def one_at_a_time_share(intervals: list[tuple[int, int]]) -> float:
    """Threads that share the interpreter lock and each look running over these (start, end)
    intervals ran one at a time: the share of its interval each ran is the union of the intervals
    over their sum (1.0 when they do not overlap)."""
    total = sum(t1 - t0 for t0, t1 in intervals)
    union = 0
    reach = None
    for t0, t1 in sorted(intervals):
        lo = t0 if reach is None else max(t0, reach)
        if t1 > lo:
            union += t1 - lo
        reach = t1 if reach is None else max(reach, t1)
    return union / total if total > union else 1.0


def _one_at_a_time(portions: list[Portion]) -> None:
    """Portions of one process that no CPU reading covers and whose stacks do not look waiting
    run, as far as the stacks can tell; but Python threads hold the interpreter lock one at a
    time, so together they ran at most the time any of them was sampled (the union of their
    spans): each runs that share of its wall time and waits for the lock for the rest. (Counted
    whole, the four workers of a thread pool that ended after the last reading ran 4x their time.)"""
    share = one_at_a_time_share([(p.t0_ns, p.t1_ns) for p in portions])
    for p in portions:
        wall = p.t1_ns - p.t0_ns
        p.run_ns = p.cpu_ns = int(wall * share)
        p.gil_ns = wall - p.run_ns


def _spread(portions: list[Portion], cpu: int, runq: int, others: int,
            waiting: Callable[[tuple], bool], no_call: Callable[[tuple], bool]) -> None:
    """Give `cpu` (and `runq`, run-queue delay) of one thread, or of a pool of threads, in one bin
    to its portions (module docstring); `others` is the CPU of the other Python threads."""
    flags = [waiting(p.span.frames) for p in portions]
    w_other = sum(p.t1_ns - p.t0_ns for p, f in zip(portions, flags, strict=True) if not f)
    w_wait = sum(p.t1_ns - p.t0_ns for p, f in zip(portions, flags, strict=True) if f)
    f_other = min(1.0, cpu / w_other) if w_other else 0.0
    if f_other >= 1.0 - NOISE:
        f_other = 1.0     # within the timing noise of a bin: running, not a short wait
    left = max(0, cpu - w_other)
    f_wait = min(1.0, left / w_wait) if w_wait else 0.0
    not_running = w_other * (1.0 - f_other)
    # runnable but without a CPU (the machine is busy): running as far as the program can tell
    runq_frac = min(1.0, runq / not_running) if not_running > 0 else 0.0
    rest = not_running * (1.0 - runq_frac)
    gil_frac = min(1.0, others / rest) if rest > 0 else 0.0
    run_total = 0
    for p, f in zip(portions, flags, strict=True):
        wall = p.t1_ns - p.t0_ns
        if f:
            p.run_ns = int(wall * f_wait)
            p.wait_ns = wall - p.run_ns
            p.cpu_ns = p.run_ns
        else:
            on_cpu = int(wall * f_other)
            idle = wall - on_cpu
            queued = int(idle * runq_frac)
            p.run_ns = on_cpu + queued
            p.gil_ns = idle - queued if no_call(p.span.frames) else int((idle - queued) * gil_frac)
            p.wait_ns = idle - queued - p.gil_ns
            p.cpu_ns = on_cpu
        run_total += p.cpu_ns
    if run_total:
        for p in portions:
            p.cpu_ns = p.cpu_ns * cpu // run_total
