"""Several processes in one session: `gyroscope attach PID PID ...` and `--match PATTERN`.

One PySpySource (bridges/pyspy.py) per process, each with `entity_pid` set so that the same
function in two processes stays two entities; their windows are merged into one Observation.
With a pattern, the process table is scanned again every `rescan_s` seconds: a service that is
restarted (new PID) or a worker that appears is picked up, as a host agent would do.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

from gyroscope.bridges import procfs
from gyroscope.bridges.events import Entity, Observation
from gyroscope.bridges.pyspy import AttachError, PySpySource


class MultiSource:
    """Merges PySpySources. `make(pid)` builds one (not started)."""

    name = "attach"

    def __init__(self, pids: list[int], make: Callable[[int], PySpySource], match: str | None = None,
                 rescan_s: float = 2.0) -> None:
        self.make = make
        self.match = match
        self.rescan_s = rescan_s
        self.sources: dict[int, PySpySource] = {}
        self.pending = list(pids)
        self.errors: list[str] = []
        self.finished = threading.Event()
        self._t_last = time.monotonic_ns()
        self._next_scan = 0.0
        self._lock = threading.Lock()
        self.ended: list[int] = []
        self._exited_samples = 0

    @property
    def pid(self) -> int:
        return next(iter(self.sources), 0)

    def begin(self) -> None:
        """Start every process given; raises the first AttachError when none could be started
        (with a pattern, an empty match is not an error: processes may come later)."""
        first: AttachError | None = None
        for pid in self.pending:
            try:
                self._add(pid)
            except AttachError as e:
                first = first or e
                self.errors.append(f"process {pid}: {e.message}")
        self.pending = []
        if not self.sources and first is not None and not self.match:
            raise first
        self._next_scan = time.monotonic() + self.rescan_s

    def start(self) -> None:
        if not self.sources:
            self.begin()

    def _add(self, pid: int) -> None:
        src = self.make(pid)
        try:
            src.begin()
        except AttachError:
            src.discard()
            raise
        with self._lock:
            self.sources[pid] = src

    def _rescan(self) -> None:
        if not self.match or time.monotonic() < self._next_scan:
            return
        self._next_scan = time.monotonic() + self.rescan_s
        known = set(self.sources)
        for pid in procfs.matching_pids(self.match, exclude=known):
            try:
                self._add(pid)
            except AttachError as e:
                self.errors.append(f"process {pid}: {e.message}")

    def poll(self) -> Observation:
        self._rescan()
        parts = []
        for pid, src in list(self.sources.items()):
            if self.match and src.finished.is_set():
                # a matched process that exited: its last samples, then it is forgotten (a host
                # agent that runs for days must not keep one source per process it ever saw)
                parts.append(src.stop())
                with self._lock:
                    del self.sources[pid]
                    self.ended.append(pid)
                    del self.ended[:-1000]
                    self._exited_samples += src.total_samples
            else:
                parts.append(src.poll())
        return self._merge(parts)

    @property
    def pids(self) -> list[int]:
        """Every process watched in this session (the ones that ended too, the last 1000)."""
        return sorted(set(self.sources) | set(self.ended))

    def stop(self) -> Observation:
        return self._merge([s.stop() for s in list(self.sources.values())])

    def _merge(self, parts: list[Observation]) -> Observation:
        now = time.monotonic_ns()
        obs = Observation(self._t_last, now)
        for p in parts:
            obs.events += p.events
            obs.threads.update(p.threads)
            obs.samples += p.samples
            obs.raw_events += p.raw_events
            obs.dropped += p.dropped
            obs.errors += p.errors
            obs.stacks += p.stacks
            obs.loop_reads += p.loop_reads
            obs.add_enclosing(p.enclosing)
        obs.errors += self.errors
        self.errors = []
        self._t_last = now
        if self.sources and all(s.finished.is_set() for s in self.sources.values()) and not self.match:
            self.finished.set()
        return obs

    # ---- what the live view and the result read -------------------------------------------
    @property
    def target_exited(self) -> bool:
        if not self.sources:
            return bool(self.ended)
        return all(s.target_exited or not procfs.is_alive(p) for p, s in self.sources.items())

    @property
    def failure(self) -> str | None:
        fails = [s.failure for s in self.sources.values() if s.failure]
        return fails[0] if fails and len(fails) == len(self.sources) else None

    @property
    def total_samples(self) -> int:
        return self._exited_samples + sum(s.total_samples for s in list(self.sources.values()))

    @property
    def total_errors(self) -> int:
        return sum(s.total_errors for s in self.sources.values())

    @property
    def run_counts(self) -> dict[Entity, int]:
        out: dict[Entity, int] = {}
        for s in list(self.sources.values()):
            out.update(s.run_counts)
        return out

    @property
    def wait_ns(self) -> dict[Entity, int]:
        out: dict[Entity, int] = {}
        for s in list(self.sources.values()):
            out.update(s.wait_ns)
        return out

    def agent_cpu_ns(self) -> int:
        """CPU of every py-spy this process ran and reaped (they are its only children; the
        recorders' threads are in this process's own CPU time)."""
        return procfs.reaped_children_cpu_ns()
