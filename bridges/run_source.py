"""The Source of `gyroscope run`: the in-process bridge's counters (bridges/channel.py) plus the
program's stacks sampled from outside by py-spy (bridges/pyspy.py), merged per window.

Sampling starts as soon as the program's bridge connects (`ready_fd`, the session's listening
socket, turns readable: the interpreter is initialised, so py-spy finds it at once), in a
background thread that gyroscope's own imports wait for: the first sample comes ~10-20 ms after
the program's first line (waiting for the decoded hello behind the session's imports left the
first 50-200 ms unsampled; starting py-spy before the interpreter is up costs up to ~120 ms in
py-spy's own retries). The program is never made to wait for it.
Sampling is not biased by the interpreter lock (py-spy reads the process's memory), and it
costs the program nothing but the memory reads.
"""
from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gyroscope.bridges.events import Entity, Event, EventKind, Observation
from gyroscope.bridges.procfs import is_alive

if TYPE_CHECKING:
    from gyroscope.bridges.channel import ChannelServer

READY_TIMEOUT_S = 1.0   # a program whose bridge never connects is sampled after this anyway


class RunSource:
    name = "run"

    def __init__(self, channel: ChannelServer | None, pid: int, own_code: Callable[[str], bool],
                 rate_hz: float | None = None, sampling: bool = True, subprocesses: bool = True,
                 ready_fd: int | None = None) -> None:
        """`channel` may be set later (`gyroscope run` starts the sampler before it imports the
        channel), but before the first poll. `ready_fd`: readable once the program is up."""
        self.channel = channel
        self.ready_fd = ready_fd
        self.pid = pid
        self.own_code = own_code
        self.rate_hz = rate_hz
        self.sampling = sampling
        self.subprocesses = subprocesses
        self.sampler: Any = None
        self._errors: list[str] = []
        self._lock = threading.Lock()
        self._starter: threading.Thread | None = None
        self._stopping = threading.Event()
        self._spawned = threading.Event()   # py-spy started, or will not be
        self._first_hit: dict[tuple[Entity, int], int] | None = {}   # until the first samples
        self.program_cpu_ns = 0   # the reaped program's CPU time, and its reaped children's

    def start(self) -> None:
        """Start the sampler (again: nothing)."""
        if not self.sampling:
            self._spawned.set()
        elif self._starter is None:
            self._starter = threading.Thread(target=self._start_sampler, name="gyroscope-sampler-start", daemon=True)
            self._starter.start()

    def wait_sampler(self, timeout_s: float) -> None:
        """Until py-spy is started (at most timeout_s): `gyroscope run` waits here instead of
        taking the interpreter lock for its own imports meanwhile."""
        self._spawned.wait(timeout_s)

    def _start_sampler(self) -> None:
        try:
            self._start_sampler_now()
        finally:
            self._spawned.set()

    def _start_sampler_now(self) -> None:
        from gyroscope.bridges.pyspy import DEFAULT_RATE_HZ, PySpySource
        if self.ready_fd is not None:
            import select
            try:
                select.select([self.ready_fd], [], [], READY_TIMEOUT_S)
            except (OSError, ValueError):
                pass
        if not is_alive(self.pid):   # the program already ended: nothing left to sample
            return
        try:
            sampler = PySpySource(self.pid, rate_hz=self.rate_hz or DEFAULT_RATE_HZ, subprocesses=self.subprocesses,
                                  own_code=self.own_code, fresh=True, keep_stacks=True, name="run")
            sampler.start()
            sampler.record.spawned.wait(1.0)
        except Exception as e:   # no py-spy, no permission: the counters still come
            if is_alive(self.pid):   # a program that ended first simply had nothing to sample
                with self._lock:
                    self._errors.append(f"sampler: {getattr(e, 'message', None) or e}")
            return
        with self._lock:
            if self._stopping.is_set():
                sampler.stop()
                return
            self.sampler = sampler

    def program_exiting(self) -> None:
        """The program's main process began its exit (channel: its bridge's last window): py-spy's
        last chunk is ended and read while the interpreter finalises (~10 ms that the session's
        end used to add after it). What runs after that point (finalisation, daemon threads) is
        not sampled."""
        with self._lock:
            sampler = self.sampler
        if sampler is not None:
            sampler.finish_soon()

    def feedback(self, decisions: list[dict[str, Any]]) -> None:
        """The live decisions back to every process of the program (bridges/_inproc.pyx LIVE)."""
        self.channel.send_live(decisions)

    def poll(self) -> Observation:
        obs = self.channel.poll()
        with self._lock:
            sampler = self.sampler
        return self._combine(obs, sampler.poll() if sampler is not None else None, sampler)

    def _combine(self, obs: Observation, sampled: Observation | None, sampler: Any) -> Observation:
        """The bridge's counters and the sampler's stacks of one poll as one Observation: the
        source's own errors, the first hits noted, sampled lock waits the profiled locks measured
        exactly left out, the start credited."""
        with self._lock:
            obs.errors.extend(self._errors)
            self._errors = []
        self._note_first_hits(obs)
        if sampled is not None:
            sampled = self._dedupe(sampled)
            self._credit_start(sampled, sampler)
            _merge(obs, sampled)
        return obs

    def _note_first_hits(self, obs: Observation) -> None:
        """The first counted hit of each (entity, thread), until sampling has begun."""
        if self._first_hit is None:
            return
        for ev in obs.events:
            if ev.kind in (EventKind.LOOP_ITER, EventKind.CALL) and ev.thread:
                key = (ev.entity, ev.thread)
                if ev.t_ns < self._first_hit.get(key, ev.t_ns + 1):
                    self._first_hit[key] = ev.t_ns

    def _credit_start(self, sampled: Observation, sampler: Any) -> None:
        """The time before py-spy's first sample (10-20 ms after the program's first line) is
        nobody's in the samples. For a thread that the first samples find running, it is shared
        by the entities the bridge had counted on that thread since before the first sample, in
        proportion to their sampled CPU in this first batch (the program's start is taken to be
        like its first chunk), from the earliest of their first hits on (events of role "start";
        agent/measure.py adds them to the process's CPU as well). All of it to the entity of the
        very first sample made two loops that alternate every ~2 ms off by up to 6 points in a
        0.3 s program. Once, at the first samples."""
        first_ns = sampler.record.first_sample_ns
        if self._first_hit is None or not first_ns:
            return
        first_t: dict[int, int] = {}
        weights: dict[int, dict[Entity, int]] = {}
        for ev in sampled.events:
            if ev.kind == EventKind.SAMPLE_RUN and ev.role != "lib" and ev.thread:
                first_t[ev.thread] = min(first_t.get(ev.thread, ev.t_ns), ev.t_ns)
                hit = self._first_hit.get((ev.entity, ev.thread))
                if hit is not None and hit < first_ns:
                    per = weights.setdefault(ev.thread, {})
                    per[ev.entity] = per.get(ev.entity, 0) + max(1, ev.duration_ns)
        credits: list[tuple[int, int, dict[Entity, int]]] = []    # (thread, since, weights)
        for tid, per in weights.items():
            if first_t[tid] - first_ns > 2 * sampler.interval_ns:
                continue     # the thread was not running when sampling began
            credits.append((tid, min(self._first_hit[(ent, tid)] for ent in per), per))
        # threads that share the interpreter lock ran one at a time (N pool workers each credited
        # their whole start would count it N times): the rule of the CPU attribution (imported
        # here: the sampler has loaded it by now, and this module loads before py-spy starts)
        from gyroscope.bridges.cpu_attribution import one_at_a_time_share
        scale = one_at_a_time_share([(since, first_ns) for _, since, _ in credits]) if _gil_enabled() else 1.0
        for tid, since, per in credits:
            credit, total_w = int((first_ns - since) * scale), sum(per.values())
            for ent, w in per.items():
                part = credit * w // total_w
                if part > 0:
                    sampled.events.append(Event(ent, "start", EventKind.SAMPLE_RUN, tid, since,
                                                max(1, round(part / sampler.interval_ns)), part))
        self._first_hit = None      # once: later threads start under the sampler

    def _dedupe(self, sampled: Observation) -> Observation:
        """A lock wait the profiled locks measured exactly is not counted again from samples (the
        sampled entity sits at the waiting call site, the exact one at the lock's creation site)."""
        from gyroscope.bridges.events import EntityKind
        covers = self.channel.covers
        sampled.events = [ev for ev in sampled.events
                          if ev.entity.kind not in (EntityKind.LOCK, EntityKind.WAIT)
                          or not covers(ev.entity.pid, ev.entity.file, ev.entity.line)]
        return sampled

    def stop(self) -> Observation:
        self._stopping.set()
        if self._starter is not None:
            self._starter.join(timeout=5.0)
        with self._lock:
            sampler = self.sampler
        sampled = sampler.stop() if sampler is not None else None
        return self._combine(self.channel.stop(), sampled, sampler)

    def agent_cpu_ns(self) -> int:
        """py-spy's CPU (the sampler's: the CPU of this process's reaped children), less the
        program's own once it is reaped (`program_cpu_ns`, set by `gyroscope run`)."""
        s = self.sampler
        f = getattr(s, "agent_cpu_ns", None)
        return max(0, int(f()) - self.program_cpu_ns) if f else 0


def _gil_enabled() -> bool:
    """Whether the program's interpreter (this one: `run` starts the program with it) has a GIL."""
    check = getattr(sys, "_is_gil_enabled", None)
    return True if check is None else bool(check())


def _merge(into: Observation, other: Observation) -> None:
    into.events.extend(other.events)
    into.threads.update(other.threads)
    into.samples += other.samples
    into.raw_events += other.raw_events
    into.dropped += other.dropped
    into.errors.extend(other.errors)
    into.stacks.extend(other.stacks)
    into.loop_reads.extend(other.loop_reads)
    into.add_enclosing(other.enclosing)
