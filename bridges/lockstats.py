"""The gyroscope-process side of the profiled locks (bridges/_locks.pyx).

Once per window the program's bridge ships `_locks.sites()` (sites created since the last
window) and `_locks.drain()` (per site touched: acquires, contended waits with their exact
durations, hold time, the waiting threads and call sites); the tuple layouts are in _locks.pyx's
docstring. `LockStats` turns them into what the session consumes:
- one `Entity(kind "lock", creation-site file / function / line, detail = the lock's kind,
  e.g. "rlock", "semaphore", "condition", "asyncio.lock")` per site; objects whose waits are
  waiting for work or for a signal rather than for a resource (Event, Barrier, queue.Queue,
  asyncio.Event) are `kind "wait"` entities, as bridges/stacks.py classifies their sampled waits:
  the contention rule (agent/actuators.py) only looks at "lock" entities, and a pool of idle
  workers blocked in `queue.get()` or `stop.wait(1)` is not contention;
- `Event`s: per waiting thread one LOCK_WAIT (role "wait", count = its contended waits in the
  window, duration_ns = their exact total, t_ns = its first wait), and per site one LOCK_ACQUIRE
  (role "hold", count = successful acquires, duration_ns = time held);
- `LockWindow`s (bridges/events.py) with the exact figures agent/measure.py folds into the
  entity's measurements (waits, wait_s_total, wait_s_max, hold_s_total, waiting_threads,
  call_sites, exact=True).
Rows come from another process: a malformed row or an unknown site id is counted and reported
in the observation's errors, never raised.

Use (the program side ships the three calls' results, e.g. marshal.dumps, once per window):

    # in the program, per window:   payload = (_locks.sites(), _locks.drain(), _locks.counters())
    stats = LockStats(pid)                      # one per program process
    stats.apply(obs, sites_rows, drain_rows)    # events + obs.locks (agent/measure.py folds them)
    stats.note_counters(obs, counters_row)      # losses -> obs.errors
    stats.covers(file, line)                    # a sampled lock wait at this line is this lock's
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from gyroscope.bridges.events import Entity, EntityKind, Event, EventKind, LockWindow, Observation

MAX_COVERED = 100_000     # waiting call sites remembered for covers()
WAIT_KINDS = frozenset({"event", "barrier", "queue", "asyncio.event"})   # -> EntityKind.WAIT


class LockStats:
    """Turns the bridge's lock tuples into Events and LockWindows for one program process."""

    def __init__(self, pid: int = 0) -> None:
        self.pid = pid
        self.entities: dict[int, Entity] = {}
        self.bad_rows = 0
        self.unknown_sites = 0
        self._counters = (0, 0, 0, 0)
        self.call_sites: dict[tuple[str, int], int] = {}    # (file, line) that waited -> site id

    def add_sites(self, rows: Iterable[Any]) -> None:
        """Register (site_id, kind, file, line, function) rows from `_locks.sites()`."""
        for row in rows or ():
            try:
                sid, kind, file, line, function = row
                kind = str(kind)
                self.entities[int(sid)] = Entity(EntityKind.WAIT if kind in WAIT_KINDS else EntityKind.LOCK,
                                                 str(file), str(function), int(line), kind, self.pid)
            except (TypeError, ValueError):
                self.bad_rows += 1

    def entity(self, site_id: int) -> Entity | None:
        return self.entities.get(site_id)

    def window(self, rows: Iterable[Any], t_ns: int = 0) -> tuple[list[Event], list[LockWindow]]:
        """Events and LockWindows of one `_locks.drain()`; `t_ns` stamps the LOCK_ACQUIRE events
        (the window's start)."""
        events: list[Event] = []
        windows: list[LockWindow] = []
        for row in rows or ():
            try:
                sid, acquires, contended, wait_ns, wait_max_ns, hold_ns, threads, callsites = row
                ent = self.entities.get(int(sid))
                if ent is None:
                    self.unknown_sites += 1
                    continue
                lw = LockWindow(ent, int(acquires), int(contended), int(wait_ns), int(wait_max_ns), int(hold_ns))
                for tid, waits, t_wait_ns, first_ns in threads:
                    lw.threads[int(tid)] = (int(waits), int(t_wait_ns))
                    events.append(Event(ent, "wait", EventKind.LOCK_WAIT, int(tid), int(first_ns), int(waits),
                                        int(t_wait_ns)))
                for file, line, waits, c_wait_ns in callsites:
                    key = (str(file), int(line))
                    lw.callsites[key] = (int(waits), int(c_wait_ns))
                    if len(self.call_sites) < MAX_COVERED:
                        self.call_sites.setdefault(key, int(sid))
                if lw.acquires:
                    events.append(Event(ent, "hold", EventKind.LOCK_ACQUIRE, 0, t_ns, lw.acquires, lw.hold_ns))
                windows.append(lw)
            except (TypeError, ValueError):
                self.bad_rows += 1
        return events, windows

    def apply(self, obs: Observation, site_rows: Iterable[Any], drain_rows: Iterable[Any]) -> None:
        """Add one window's lock figures to `obs` (events, locks, and an error line for bad rows)."""
        bad, unknown = self.bad_rows, self.unknown_sites
        self.add_sites(site_rows)
        events, windows = self.window(drain_rows, obs.t_start_ns)
        obs.events.extend(events)
        obs.locks.extend(windows)
        if self.bad_rows > bad or self.unknown_sites > unknown:
            obs.errors.append(f"locks: {self.bad_rows - bad} malformed rows, {self.unknown_sites - unknown} rows "
                              f"for unknown sites dropped in this window")

    def covers(self, file: str, line: int) -> Entity | None:
        """The profiled lock whose waits were seen at this call site, if any: a sampler's lock entity
        at (file, line) (a wait attributed to the line that waits) is the same wait, measured exactly
        here; the session keeps the exact one."""
        sid = self.call_sites.get((file, line))
        return self.entities.get(sid) if sid is not None else None

    def note_counters(self, obs: Observation, row: Any) -> None:
        """Report in obs.errors what `_locks.counters()` says was lost since the previous call: sites
        beyond the bridge's table, bounded thread / call-site lists, errors inside the bridge."""
        try:
            _sites, dropped, errors, lost_threads, lost_calls, last_error = row
            now = (int(dropped), int(errors), int(lost_threads), int(lost_calls))
        except (TypeError, ValueError):
            self.bad_rows += 1
            return
        prev = self._counters
        self._counters = now
        d = [a - b for a, b in zip(now, prev)]
        if d[0] > 0:
            obs.errors.append(f"locks: {d[0]} objects not profiled (more sites than the bridge's table holds)")
        if d[1] > 0:
            obs.errors.append(f"locks: {d[1]} errors inside the lock bridge, last: {last_error}")
        if d[2] > 0 or d[3] > 0:
            obs.errors.append(f"locks: {d[2]} waiting-thread and {d[3]} call-site records beyond the per-window "
                              f"bounds were counted in the totals only")
