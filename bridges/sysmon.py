"""The in-process source of `gyroscope run`: sys.monitoring (PEP 669) + the stack sampler + gc.

sys.monitoring use (the model is coverage.py's sysmon core):
- Tool id: the first free of OPTIMIZER_ID (5), 4, 3, PROFILER_ID (2) (cProfile uses 2 in 3.12). Debugger (0) and
  coverage (1) ids are never taken; if none is free, loops and calls are not counted (the
  sampler still runs) and the result's errors say so.
- PY_START is the only global event. Its callback decides once per code object (by
  co_filename, see CodeFilter) whether the code is the program's own, arms the local events
  JUMP | PY_RETURN | PY_RESUME | PY_YIELD on it if so, and always returns DISABLE.
- Duty cycle: each location is counted K times per window (K=64 by default), then its
  callback returns DISABLE; the time from the 8th to the K-th hit gives the rate (iterations/s
  for a loop's backward jump, calls/s from PY_RETURN). At the next window the agent re-arms.
- Re-arming only our own tool: `sys.monitoring.restart_events()` would re-enable DISABLEd
  events of every tool (coverage.py relies on DISABLE staying in force), so it is not used.
  Instead, for each code object that had a location disabled, the agent sets that code's
  local events for our tool to 0 and back: in CPython 3.12 `set_local_events` re-instruments
  the code at once (`_Py_Instrument`), removing our tool from every instruction of the
  removed events and adding it back to all of them, which re-enables exactly our DISABLEd
  local locations (tests/test_run_sysmon.py checks it). PY_START is global and unaffected,
  so a code object is discovered once. The cost is one pass over the code's instructions
  per re-armed code per window.
- Stop: every local event set to 0, global events 0, callbacks unregistered, tool id freed.

Conventions of the events this source emits (see bridges/events.py):
- LOOP_ITER / CALL / RESUME / YIELD: `count` = hits seen in the window; `duration_ns` is 0
  when the location was not saturated (count is exact), else the estimated time of count - 1
  iterations without the callbacks (rate = (count - 1) / duration; see SysMonitor.poll).
- SAMPLE_RUN / SAMPLE_WAIT / SAMPLE_GIL: `count` samples covering `duration_ns` of wall time.
- LOCK_WAIT: one sampled wait episode (`duration_ns` long, starting at `t_ns`).
- GC: the collections of one generation in the window (`count`), `duration_ns` = their total pause.
"""
from __future__ import annotations

import fnmatch
import gc
import os
import sys
import sysconfig
import threading
import time
from types import CodeType

from gyroscope.bridges.events import Entity, EntityKind, Event, EventKind, Observation
from gyroscope.bridges.sampler import LoopMap, StackSampler

try:
    from gyroscope.bridges import _callbacks as _cb
except ImportError:  # pragma: no cover - the extension is not built
    _cb = None

_MON = sys.monitoring
# OPTIMIZER_ID first: in 3.12 cProfile (_lsprof) itself takes PROFILER_ID (2), so holding 2 would make a
# program that enables cProfile fail with "Another profiling tool is already active".
TOOL_PREFERENCE = (_MON.OPTIMIZER_ID, 4, 3, _MON.PROFILER_ID)
TOOL_NAME = "gyroscope"
LOCAL_EVENTS = _MON.events.JUMP | _MON.events.PY_RETURN | _MON.events.PY_RESUME | _MON.events.PY_YIELD
_KIND_EVENT = {0: EventKind.LOOP_ITER, 1: EventKind.CALL, 2: EventKind.RESUME, 3: EventKind.YIELD}
_PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_GYRO_DIRS = tuple(os.path.join(_PROJECT, d, "") for d in ("bridges", "agent", "cyext", "schedulers"))


class CodeFilter:
    """Which code is the program's own, decided by `code.co_filename`.

    Ours: files under one of `roots` (the script's directory, or the current directory for
    -m), except those inside the standard library, site-packages or the interpreter prefix
    (unless the root itself lies inside them, as pyperformance's benchmark files do), and never
    gyroscope's own packages. `include` patterns (fnmatch on the absolute file name) add more;
    `all_code` takes everything but gyroscope and frozen/generated code.
    """

    def __init__(self, roots: list[str], include: list[str] | None = None, all_code: bool = False,
                 extra_files: list[str] | None = None) -> None:
        self.roots = [os.path.join(os.path.realpath(r), "") for r in roots]
        self.include = list(include or [])
        self.all_code = all_code
        self.extra = {os.path.realpath(f) for f in (extra_files or [])}
        paths = sysconfig.get_paths()
        excluded = {paths.get(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")}
        excluded |= {sys.prefix, sys.base_prefix, sys.exec_prefix}
        excluded |= {p for p in sys.path if p and ("site-packages" in p or "dist-packages" in p)}
        self.excluded = [os.path.join(os.path.realpath(e), "") for e in excluded if e]
        self._cache: dict[str, bool] = {}

    def __call__(self, code: CodeType) -> bool:
        fn = code.co_filename
        r = self._cache.get(fn)
        if r is None:
            r = self._cache[fn] = self.file_is_ours(fn)
        return r

    def file_is_ours(self, filename: str) -> bool:
        if not filename or filename.startswith("<"):
            return False
        path = os.path.realpath(os.path.abspath(filename))
        if any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(filename, p) for p in self.include):
            return True
        if path.startswith(_GYRO_DIRS):
            return False
        if self.all_code or path in self.extra:
            return True
        for root in self.roots:
            if path.startswith(root):
                return not any(path.startswith(e) and not root.startswith(e) for e in self.excluded)
        return False


def choose_tool_id() -> int | None:
    for tool in TOOL_PREFERENCE:
        if _MON.get_tool(tool) is None:
            return tool
    return None


class SysMonitor:
    """Loops and calls of the program's own code, duty-cycled (K hits per location per window)."""

    def __init__(self, code_filter: CodeFilter, loop_map: LoopMap, k: int = 64) -> None:
        self.filter = code_filter
        self.loop_map = loop_map
        self.k = k
        self.tool: int | None = None
        self.errors: list[str] = []
        self._lines: dict[CodeType, dict[int, int]] = {}
        self._entities: dict[int, Entity] = {}
        self._raw_seen = 0
        self._dropped_seen = 0
        self.callback_ns = 0.0
        self._natives: dict[int, int] = {}

    def start(self) -> None:
        if _cb is None:
            self.errors.append("gyroscope.bridges._callbacks is not built: loops and calls are not counted "
                               "(run `python setup.py build_ext --inplace`)")
            return
        tool = choose_tool_id()
        if tool is None:
            self.errors.append("no free sys.monitoring tool id: loops and calls are not counted")
            return
        _MON.use_tool_id(tool, TOOL_NAME)
        self.tool = tool
        _cb.configure(self.filter, self._arm, _MON.DISABLE, self.k)
        E = _MON.events
        _MON.register_callback(tool, E.PY_START, _cb.on_py_start)
        _MON.register_callback(tool, E.JUMP, _cb.on_jump)
        _MON.register_callback(tool, E.PY_RETURN, _cb.on_py_return)
        _MON.register_callback(tool, E.PY_RESUME, _cb.on_py_resume)
        _MON.register_callback(tool, E.PY_YIELD, _cb.on_py_yield)
        self.callback_ns = self._calibrate()
        _cb.configure(self.filter, self._arm, _MON.DISABLE, self.k)
        _MON.set_events(tool, E.PY_START)

    def _calibrate(self, n: int = 2000, trials: int = 7) -> float:
        """The cost of one JUMP callback (ns), measured on a private loop (bare and monitored runs
        interleaved, fastest of each): the time from the 8th to the K-th hit includes K-8
        callbacks, which poll() subtracts so that iterations/s estimates the program's own rate
        rather than the instrumented one. It stays an estimate (the cost varies with caches)."""
        ns: dict = {}
        # the loop sits past offset 256, as real loops do: sys.monitoring then passes the offsets
        # as new int objects rather than cached small ints, which is part of the cost
        pad = "    x = 0\n" * 200
        exec(compile(f"def calib(n):\n{pad}    for i in range(n):\n        x += 1\n", "<gyroscope-calibration>",
                     "exec"), ns)
        f = ns["calib"]
        code = f.__code__
        _cb.configure(lambda c: False, lambda c: None, _MON.DISABLE, 1 << 30)
        best_bare = best_mon = float("inf")
        clock = time.perf_counter_ns
        try:
            f(n)
            for _ in range(trials):
                t0 = clock()
                f(n)
                best_bare = min(best_bare, clock() - t0)
                _MON.set_local_events(self.tool, code, _MON.events.JUMP)
                t0 = clock()
                f(n)
                best_mon = min(best_mon, clock() - t0)
                _MON.set_local_events(self.tool, code, 0)
        except Exception:  # pragma: no cover - calibration is best effort
            return 0.0
        return max(0.0, (best_mon - best_bare) / n)

    def _arm(self, code: CodeType) -> None:
        _MON.set_local_events(self.tool, code, LOCAL_EVENTS)

    def rearm(self, codes: list[CodeType]) -> None:
        tool = self.tool
        for code in codes:
            try:
                _MON.set_local_events(tool, code, 0)
                _MON.set_local_events(tool, code, LOCAL_EVENTS)
            except (ValueError, TypeError) as e:  # pragma: no cover - defensive
                if len(self.errors) < 20:
                    self.errors.append(f"sysmon: re-arm failed: {e}")

    def poll(self, rearm: bool = True) -> tuple[list[Event], int, int]:
        """(events, raw callbacks, dropped locations) since the last poll; re-arms disabled codes."""
        if self.tool is None:
            return [], 0, 0
        hits, codes = _cb.drain()
        if rearm:
            self.rearm(codes)
        events: list[Event] = []
        natives = self._natives   # the callbacks record idents; threads that ended stay known
        natives.update({t.ident: t.native_id for t in threading.enumerate()})
        for slot, count, t_first, span, ident, ident2 in hits:
            thread = natives.get(ident) or ident
            thread2 = (natives.get(ident2) or ident2) if ident2 else 0
            ent, kind = self._entity(slot)
            dur = 0
            if span > 0:
                # the span covers K - WARM intervals, each with one callback: remove the callbacks'
                # calibrated cost and express it over count - 1 intervals (rate = (count-1)/dur)
                n = count - _cb.WARM
                per = max(span - n * self.callback_ns, span / 8) / n
                dur = max(1, int(per * (count - 1)))
            role = "iter" if kind == EventKind.LOOP_ITER else "call"
            if thread2 and count > 1:
                events.append(Event(ent, role, kind, thread, t_first, count - 1, dur))
                events.append(Event(ent, role, kind, thread2, t_first, 1, 0))
            else:
                events.append(Event(ent, role, kind, thread, t_first, count, dur))
        raw, _slots, dropped, errors, last = _cb.counters()
        d_raw, d_drop = raw - self._raw_seen, dropped - self._dropped_seen
        self._raw_seen, self._dropped_seen = raw, dropped
        if errors and not self.errors:
            self.errors.append(f"sysmon: {errors} callback errors, last: {last}")
        return events, d_raw, d_drop

    def _entity(self, slot: int) -> tuple[Entity, EventKind]:
        ent = self._entities.get(slot)
        code, offset, kind, dest = _cb.slot_info[slot]
        if ent is None:
            if kind == 0:
                # the innermost loop containing both the backward jump and its target: a for loop's
                # jump sits on its last body line and targets the header; a while loop's sits on the
                # header (the repeated test) and targets the first body line
                lines = [ln for ln in (self._line(code, offset), self._line(code, dest)) if ln]
                header = self.loop_map.header(code, *lines) if lines else 0
                if header:
                    ent = Entity(EntityKind.LOOP, code.co_filename, code.co_qualname, header)
            if ent is None:
                ent = Entity(EntityKind.FUNCTION, code.co_filename, code.co_qualname, code.co_firstlineno)
            self._entities[slot] = ent
        return ent, _KIND_EVENT[kind]

    def _line(self, code: CodeType, offset: int) -> int:
        table = self._lines.get(code)
        if table is None:
            table = {}
            for start, end, line in code.co_lines():
                if line is not None:
                    for off in range(start, end, 2):
                        table[off] = line
            self._lines[code] = table
        return table.get(offset, 0)

    def stop(self) -> None:
        tool = self.tool
        if tool is None:
            return
        _cb.deactivate()
        try:
            _MON.set_events(tool, 0)
            for code in list(_cb.watched.values()):
                try:
                    _MON.set_local_events(tool, code, 0)
                except ValueError:
                    pass
            for ev in (_MON.events.PY_START, _MON.events.JUMP, _MON.events.PY_RETURN,
                       _MON.events.PY_RESUME, _MON.events.PY_YIELD):
                _MON.register_callback(tool, ev, None)
        finally:
            _MON.free_tool_id(tool)
            self.tool = None


class GcWatcher:
    """Garbage collections and their pauses, via gc.callbacks (the hook is bridges._callbacks.gc_callback,
    which only adds integers; one GC event per generation per window: count = collections,
    duration_ns = total pause)."""

    def __init__(self) -> None:
        self.dropped = 0
        self._entities = {g: Entity(EntityKind.GC, "", "gc", g, f"generation {g}") for g in range(3)}
        self._hook = _cb.gc_callback if _cb is not None else None

    def start(self) -> None:
        if self._hook is not None:
            _cb.gc_drain()
            gc.callbacks.append(self._hook)

    def stop(self) -> None:
        try:
            gc.callbacks.remove(self._hook)
        except ValueError:
            pass

    def take(self) -> tuple[list[Event], int]:
        if self._hook is None:
            return [], 0
        return [Event(self._entities[g], "gc", EventKind.GC, 0, first, count, total)
                for g, count, total, _longest, first in _cb.gc_drain()], 0


class RunSource:
    """The Source for `gyroscope run`: sys.monitoring + stack sampler + gc, in this process."""

    name = "run"

    def __init__(self, code_filter: CodeFilter, sample_interval_s: float = 0.01, k: int = 64,
                 monitor: bool = True) -> None:
        self.loop_map = LoopMap()
        self.filter = code_filter
        self.monitor = SysMonitor(code_filter, self.loop_map, k) if monitor else None
        self.sampler = StackSampler(code_filter, sample_interval_s, self.loop_map)
        self.gc = GcWatcher()
        self._t_last = 0
        self._stopped = False
        self._excluded_idents: set[int] = set()

    def exclude_thread(self, ident: int | None) -> None:
        """An agent thread (by threading ident): never sampled, its sys.monitoring events never counted."""
        if ident is None:
            return
        self.sampler.exclude.add(ident)
        self._excluded_idents.add(ident)
        if _cb is not None and self.monitor is not None and self.monitor.tool is not None:
            _cb.exclude_thread(ident)

    def start(self) -> None:
        main = threading.main_thread().ident
        for t in threading.enumerate():  # threads alive before the program starts are the agent's
            if t.ident != main:
                self.exclude_thread(t.ident)
        self._t_last = time.monotonic_ns()
        self.gc.start()
        if self.monitor is not None:
            self.monitor.start()
        self.sampler.start()
        self.exclude_thread(self.sampler.ident)
        if _cb is not None and self.monitor is not None and self.monitor.tool is not None:
            for ident in self._excluded_idents:
                _cb.exclude_thread(ident)

    def poll(self) -> Observation:
        now = time.monotonic_ns()
        obs = Observation(self._t_last, now)
        self._t_last = now
        if self.monitor is not None:
            self.monitor._natives.update(self.sampler.natives)
            events, raw, dropped = self.monitor.poll(rearm=not self._stopped)
            obs.events.extend(events)
            obs.raw_events += raw
            obs.dropped += dropped
        events, threads, samples, dropped = self.sampler.take()
        obs.events.extend(events)
        obs.threads = threads
        obs.samples = samples
        obs.dropped += dropped
        obs.raw_events += samples
        gc_events, gc_dropped = self.gc.take()
        obs.events.extend(gc_events)
        obs.raw_events += len(gc_events)
        obs.dropped += gc_dropped
        return obs

    def stop(self) -> Observation:
        self._stopped = True
        self.sampler.stop()
        self.gc.stop()
        obs = self.poll()
        if self.monitor is not None:
            self.monitor.stop()
            obs.errors.extend(self.monitor.errors)
        obs.errors.extend(self.sampler.errors)
        return obs

    def agent_cpu_ns(self) -> int:
        return self.sampler.cpu_ns()
