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
- cpu_share: the entity's CPU time over the process's CPU time. From outside (py-spy +
  /proc, bridges/pyspy.py) a SAMPLE_RUN's duration is the CPU time the kernel counted for that
  thread, spread over its running samples, and the denominator is the CPU time of every sampled
  stack (library-only threads included): a share of the process's CPU. A thread waiting for the
  interpreter lock (SAMPLE_GIL) is not running (samples_gil counts it). Sources without stacks
  (the in-process sampler) fall back to the entity's share of the running samples' time.
- wait_s_total: sampled blocked time; waits: sampled episodes (a thread blocked at one site in
  consecutive samples without using CPU in between is one episode).
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from gyroscope.bridges.events import Entity, EventKind, Observation

_COUNTED = (EventKind.LOOP_ITER, EventKind.CALL, EventKind.RESUME)


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


class Measurements:
    def __init__(self) -> None:
        self.stats: dict[Entity, EntityStats] = {}
        self.total_running = 0
        self.total_run_ns = 0
        self.total_cpu_ns = 0      # CPU time of every sampled stack (sources that send stacks)
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
        self.total_cpu_ns += sum(s.cpu_ns for s in obs.stacks)
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
            elif k == EventKind.SAMPLE_RUN:
                st.samples_running += ev.count
                st.run_ns += ev.duration_ns
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
            elif k == EventKind.GC:
                st.waits += ev.count
                st.wait_ns += ev.duration_ns
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
        return {
            "iterations": int(round(st.iterations)),
            "iterations_per_s": float(ips),
            "calls": int(round(st.calls)),
            "cpu_share": self._cpu_share(st),
            "samples_running": st.samples_running,
            "samples_gil": st.samples_gil,
            "samples_waiting": st.samples_waiting,
            "wait_s_total": st.wait_ns / 1e9,
            "wait_s_mean": (st.wait_ns / 1e9 / waits) if waits else 0.0,
            "waits": st.waits,
            "waiting_threads": len(st.waiting_threads),
            "run_s_total": st.run_ns / 1e9,
        }

    def _cpu_share(self, st: EntityStats) -> float:
        if self.total_cpu_ns:
            return min(1.0, st.run_ns / self.total_cpu_ns)
        if self.total_run_ns:
            return st.run_ns / self.total_run_ns
        return st.samples_running / self.total_running if self.total_running else 0.0

    def threads_of(self, ent: Entity) -> list[int]:
        return sorted(self.get(ent).threads)
