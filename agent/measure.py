"""Direct measurements per entity, the numbers a user can check next to the structural scores.

Fed once per window with the Observation of a source (see the event conventions in
bridges/sysmon.py): loop iterations and iterations/s (from the duty-cycled backward-jump
counts), calls, samples running / waiting, CPU share, wait time, wait episodes and the
distinct threads that waited.

What the numbers are (and are not):
- iterations_per_s: the median over windows of the rate of a loop's iterations 8..K after each
  re-arm (the first ones after a re-instrumentation are slow), with the calibrated cost of
  one callback per iteration removed (bridges/sysmon.py). It is a burst estimate: on the
  workloads it lands within about 0.7-1.3x of the true rate for steady tight loops (bodies of
  ~50-100 ns, where the callback costs as much as the body), and it is biased for loops whose
  iterations vary a lot in cost (a loop whose first iterations after a re-arm are cheap reads
  fast).
- iterations: exact in windows where the loop ran fewer than K times; else the rate times the
  sampled running time of that loop in the window (a loop that encloses other loops gets no
  running samples of its own, so its count is then the K hits seen: a lower bound). Measured:
  within ~1.1-1.8x of the true count on hot_loop_numeric / hot_loop_method.
- cpu_share: running samples of the entity (innermost loop or function of the program's own
  code) over all running samples of the program's threads; a thread that is runnable but
  waiting for the GIL (little CPU, not in a blocking call) counts as running.
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

import statistics
from dataclasses import dataclass, field, fields
from typing import Any

from gyroscope.agent.model import Measurements as MeasurementsRecord
from gyroscope.bridges.events import Entity, EventKind, LockWindow, Observation

_COUNTED = (EventKind.LOOP_ITER, EventKind.CALL, EventKind.RESUME)
_RECORD_FIELDS = tuple(f.name for f in fields(MeasurementsRecord) if f.name != "extra")
MAX_CALL_SITES = 32     # waiting call sites kept per lock entity


@dataclass(slots=True)
class EntityStats:
    iterations: float = 0.0
    rates: list[float] = field(default_factory=list)
    calls: float = 0.0
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
        self.duration_ns = 0

    def get(self, ent: Entity) -> EntityStats:
        st = self.stats.get(ent)
        if st is None:
            st = self.stats[ent] = EntityStats()
        return st

    def update(self, obs: Observation) -> set[Entity]:
        """Fold one window in; return the entities touched."""
        touched: set[Entity] = set()
        run_in_window: dict[Entity, int] = {}
        for ev in obs.events:
            if ev.kind in (EventKind.SAMPLE_RUN, EventKind.SAMPLE_GIL):
                run_in_window[ev.entity] = run_in_window.get(ev.entity, 0) + ev.duration_ns
        window_ns = max(obs.t_end_ns - obs.t_start_ns, 1)
        self.duration_ns += window_ns
        for ev in obs.events:
            st = self.get(ev.entity)
            touched.add(ev.entity)
            if ev.thread:
                st.threads.add(ev.thread)
            k = ev.kind
            if k in _COUNTED:
                n = float(ev.count)
                if ev.duration_ns > 0 and ev.count > 1:  # saturated: extrapolate over the time it ran
                    rate = (ev.count - 1) * 1e9 / ev.duration_ns
                    if k == EventKind.LOOP_ITER:
                        st.rates.append(rate)
                    ran = min(run_in_window.get(ev.entity, 0), window_ns)
                    n = max(n, rate * ran / 1e9)
                if k == EventKind.LOOP_ITER:
                    st.iterations += n
                else:
                    st.calls += n
            elif k in (EventKind.SAMPLE_RUN, EventKind.SAMPLE_GIL):
                # runnable but waiting for the GIL counts as running: with N CPU-bound threads each
                # gets ~1/N of the CPU, and the share between them is what matters
                st.samples_running += ev.count
                st.run_ns += ev.duration_ns
                self.total_running += ev.count
                if k == EventKind.SAMPLE_GIL:
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
        if st.rates:
            ips = statistics.median(st.rates)
        elif st.iterations and st.run_ns:
            ips = st.iterations * 1e9 / st.run_ns
        else:
            ips = 0.0
        waits = st.waits or (1 if st.wait_ns else 0)
        out = {
            "iterations": int(round(st.iterations)),
            "iterations_per_s": float(ips),
            "calls": int(round(st.calls)),
            "cpu_share": st.samples_running / self.total_running if self.total_running else 0.0,
            "samples_running": st.samples_running,
            "samples_waiting": st.samples_waiting,
            "wait_s_total": st.wait_ns / 1e9,
            "wait_s_mean": (st.wait_ns / 1e9 / waits) if waits else 0.0,
            "waits": st.waits,
            "waiting_threads": len(st.waiting_threads),
            "run_s_total": st.run_ns / 1e9,
        }
        if st.lock is not None:
            out.update(st.lock.as_dict())
        return out

    def record(self, ent: Entity) -> MeasurementsRecord:
        """as_dict() as the session model's typed record (fields it does not know go to `extra`)."""
        d = self.as_dict(ent)
        known = {k: d.pop(k) for k in _RECORD_FIELDS if k in d}
        return MeasurementsRecord(**known, extra=d)   # built directly: these values are ours, typed

    def threads_of(self, ent: Entity) -> list[int]:
        return sorted(self.get(ent).threads)
