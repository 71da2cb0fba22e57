"""The session: one agent thread that, every window ("phase clock"), polls the source, updates
the measurements, feeds the kernel in one batch, asks the actuators and the Phase OS gate,
and feeds the sinks; at the end it builds the typed session result (agent/model.py), and only
then closes the sinks (exporters first, so that their results are in what the others see).

The agent thread is a daemon and the source never observes it. A failing sink never breaks
the agent: every sink call is wrapped and failures go to the result's `errors`.

Cost: every window is measured and ingested, but reading SLCP records (a vectorised pass
over every record field, ~1-2 ms per call on a loaded 2-core machine), deciding, gating and
feeding the sinks happen once per report cycle of `report_every` windows (default 5, i.e.
once a second with 0.2 s windows) for the entities touched since the previous cycle, and
once more at the end. At 5 Hz that pass alone would cost the program about 1% of its time.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

from gyroscope.agent import __version__, actuators
from gyroscope.agent.gate import PhaseGate
from gyroscope.agent.measure import Measurements
from gyroscope.agent.model import (
    Action,
    AgentInfo,
    Counters,
    Decision,
    EntityRecord,
    LaneInfo,
    LaneTarget,
    ProcessRecord,
    SessionResult,
    Slcp,
    ThreadRecord,
    WaitInterval,
)
from gyroscope.agent.profiles.store import StackStore
from gyroscope.agent.sinks.base import Sink, SinkReport, Window
from gyroscope.bridges.events import Entity, EntityKind, Observation, Source
from gyroscope.bridges.serializer import Serializer

# The role whose cell gives an entity its SLCP record in the result.
PRIMARY_ROLE = {EntityKind.LOOP: ("iter", "run"), EntityKind.FUNCTION: ("run", "call"),
                EntityKind.LOCK: ("wait",), EntityKind.WAIT: ("wait",), EntityKind.GC: ("gc",),
                EntityKind.THREAD: ("life",)}
SLCP_FIELDS = ("cell_id", "step", "omega12", "chi6", "shell", "resonance_key", "current_resonance",
               "omega_sig", "effective_support", "spectral_damping", "chi_support_ratio", "shell_entropy",
               "spectral_peak_ratio")
MAX_ERRORS = 50


POOL_CAPACITY = 4096        # kernel cells of a session's pool
MAX_THREAD_RECORDS = 4096   # threads kept in `threads` (the least recently seen are forgotten)
POOL_PROFILE = "chirality"  # its resonance profile (cyext.law.PROFILES)
MAX_TIMELINE = 10_000   # wait intervals kept for the report's per-thread timeline


def _make_pool(capacity: int, ledger: str | None = None):
    from gyroscope.cyext import CellPool
    return CellPool(capacity=capacity, ledger=ledger)


class Session:
    def __init__(self, source: Source, sinks: list[Sink] | None = None, window_s: float = 0.2,
                 command: list[str] | None = None, pool_capacity: int = POOL_CAPACITY, report_every: int = 5,
                 ledger: str | None = None, act_priorities: bool = False, all_code: bool = False,
                 pid: int | None = None,
                 python: str | None = None, t0_ns: int | None = None) -> None:
        """`t0_ns`: when the session began on the monotonic clock (default: now); `gyroscope run`
        gives the program's spawn, so that the duration is the program's, not the time since the
        session's own imports ended."""
        self.source = source
        self.sinks = list(sinks or [])
        self.window_s = window_s
        self.report_every = max(1, int(report_every))
        self._touched: set[Entity] = set()
        self._cycle_start_ns = 0
        self._cycle_counters = {"events": 0, "raw_events": 0, "samples": 0, "dropped": 0}
        self._cycle_threads: dict[int, str] = {}
        self._cycle_waits: list[dict[str, Any]] = []
        self.source_name = str(getattr(source, "name", "run"))
        # the main process of the session; attach fills in the target's python when py-spy says it
        self.process = ProcessRecord(pid=os.getpid() if pid is None else pid, command=list(command or []),
                                     python=sys.version.split()[0] if python is None else python)
        self.actions: list[Action] = []
        # what the program changed because of live decisions (CoherenceExecutor's lanes), by
        # (pid, index): the latest copy of each (Observation.actions)
        self._program_actions: dict[tuple[int, int], dict[str, Any]] = {}
        self.pool = _make_pool(pool_capacity, ledger)
        self.timeline: list[WaitInterval] = []
        # opt-in actuator: lower the priority of threads the decisions mark; restored at stop()
        self.priorities = None
        self._lowered: set[int] = set()
        self._lowered_ok: set[int] = set()   # threads actually lowered (their Action is ok)
        if act_priorities:
            from gyroscope.schedulers.priorities import PriorityActuator
            self.priorities = PriorityActuator()
        self.timeline_dropped = 0
        self.serializer = Serializer()
        self.measure = Measurements()
        self.all_code = all_code     # --all-code / --include: decisions may name library code
        self._live: dict[int, dict[str, Any]] = {}   # entity id -> its live decision (feedback)
        # a sink that exports one profile per report cycle (OTLP in --continuous) gets the cycle's stacks
        self._cycle_profiles = any(getattr(s, "profiles_per_cycle", False) for s in self.sinks)
        self._cycle_stacks: list[Any] = []
        self.stacks = StackStore()   # every window's Observation.stacks (agent/profiles): result["profile"]
        self.gate = PhaseGate()
        self.cells: dict[tuple[Entity, str], int] = {}
        self.entity_ids: dict[Entity, int] = {}
        self.roles: dict[Entity, set[str]] = {}
        self.threads: dict[int, ThreadRecord] = {}
        self.errors: list[str] = []
        self.counters = Counters()
        self.windows = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        now = time.monotonic_ns()
        self._t0 = now if t0_ns is None else min(t0_ns, now)
        self._unix0 = time.time() - (now - self._t0) / 1e9
        self._lock = threading.Lock()   # one window at a time (the thread, then stop())
        self._started = False

    # ---- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="gyroscope-session", daemon=True)
        self._thread.start()
        exclude = getattr(self.source, "exclude_thread", None)
        if exclude is not None:
            exclude(self._thread.ident)
        self.source.start()
        self._started = True

    def _run(self) -> None:
        while not self._stop.wait(self.window_s):
            if not getattr(self, "_started", False):
                continue
            try:
                obs = self.source.poll()
                self._window(obs)
            except Exception as e:  # the agent keeps going; the report says what failed
                self._error(f"agent: {type(e).__name__}: {e}")

    def stop(self, exit_code: int | None = None, signal: int | None = None) -> SessionResult:
        """Stop watching, build the result, close the sinks; return the session result."""
        result = self.finish(exit_code, signal)
        self.close_sinks(result)
        return result

    def finish(self, exit_code: int | None = None, signal: int | None = None) -> SessionResult:
        """Stop watching and build the session result; the sinks stay open, so that a caller can
        complete the result (attach: the target's python, the attach block) before they close."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        try:
            obs = self.source.stop()
            self._window(obs, final=True)
            self.measure.complete = True
        except Exception as e:
            self._error(f"agent: {type(e).__name__}: {e}")
        if self.priorities is not None:
            try:
                self.actions.extend(self._action(a) for a in self.priorities.restore_all()["actions"])
            except Exception as e:
                self._error(f"priorities: {type(e).__name__}: {e}")
        result = self._build_result(exit_code, signal)
        try:
            self.pool.close()
        except Exception:
            pass
        return result

    def close_sinks(self, result: SessionResult) -> None:
        """Close every sink with the finished result. Sinks that report something back (the OTLP
        exporter's counts and failures: `reports = True`) close first and their reports go into
        the result, so the sinks closed after them (the --stream file's closing record) see it
        complete. A failing sink is an error line in the result, never an exception."""
        ordered = sorted(self.sinks, key=lambda s: not getattr(s, "reports", False))
        for sink in ordered:
            try:
                report = sink.close(result)
            except Exception as e:
                report = SinkReport(errors=[f"sink {getattr(sink, 'name', type(sink).__name__)}.close: "
                                            f"{type(e).__name__}: {e}"])
            if isinstance(report, SinkReport):
                report.apply(result)

    # ---- one window -----------------------------------------------------------------------
    def _window(self, obs: Observation, final: bool = False) -> None:
        with self._lock:
            self._window_locked(obs, final)

    def _window_locked(self, obs: Observation, final: bool = False) -> None:
        for e in obs.errors:
            self._error(e)
        c = self.counters
        c.raw_events += obs.raw_events
        c.events += len(obs.events)
        c.samples += obs.samples
        c.dropped += obs.dropped
        for pid, idx, rec in obs.actions:
            self._program_actions[(pid, idx)] = rec
        for tid, info in obs.threads.items():   # the live ones move to the end; the oldest go first
            self.threads.pop(tid, None)
            self.threads[tid] = ThreadRecord(id=tid, name=info.name, cpu_s=info.cpu_ns / 1e9)
        while len(self.threads) > MAX_THREAD_RECORDS:   # a thread per request must not grow a session
            del self.threads[next(iter(self.threads))]
            self.counters.threads_forgotten += 1
        touched = self.measure.update(obs)
        self.stacks.add_many(obs.stacks)
        if self._cycle_profiles:
            self._cycle_stacks.extend(obs.stacks)
        cells = []
        for ev in obs.events:
            if ev.entity not in self.entity_ids:
                self.entity_ids[ev.entity] = len(self.entity_ids) + 1
            self.roles.setdefault(ev.entity, set()).add(ev.role)
            cells.append(self._cell(ev.entity, ev.role))
        ids, words = self.serializer.encode(cells, obs.events)
        if len(ids):
            self.pool.ingest(ids, words)
            c.words += len(ids)
        self.windows += 1
        if not self._cycle_start_ns:
            self._cycle_start_ns = obs.t_start_ns
        self._touched |= touched
        cc = self._cycle_counters
        cc["events"] += len(obs.events)
        cc["raw_events"] += obs.raw_events
        cc["samples"] += obs.samples
        cc["dropped"] += obs.dropped
        self._cycle_threads.update({t: i.name for t, i in obs.threads.items()})
        waits = self._waits(obs)
        if self.sinks:
            self._cycle_waits.extend(waits)
        self._keep_timeline(waits)
        if final or self.windows % self.report_every == 0:
            self._report(obs.t_end_ns, final)

    def _keep_timeline(self, waits: list[dict[str, Any]]) -> None:
        room = MAX_TIMELINE - len(self.timeline)
        for w in waits[:max(room, 0)]:
            self.timeline.append(WaitInterval(thread=w["thread"], entity_id=w["entity_id"],
                                              start_s=(w["t_ns"] - self._t0) / 1e9,
                                              duration_s=w["duration_ns"] / 1e9, pid=w.get("pid", 0)))
        self.timeline_dropped += max(len(waits) - max(room, 0), 0)

    def _report(self, t_end_ns: int, final: bool = False) -> None:
        """One report cycle: SLCP of the entities touched since the last one -> actuators -> gate -> sinks.
        What no one reads is not computed: without a live sink (or a gate trace) the gate has
        nothing to send, and the final cycle's decisions only matter to sinks (the result decides
        again over every entity: _build_result), which saves ~10 ms after a program's end."""
        touched, self._touched = self._touched, set()
        live = bool(self.sinks) or self.gate.tracing
        changed: list[EntityRecord] = []
        decisions: list[Decision] = []
        if live or not final:
            slcp = self._slcp_many(touched)
            changed = [self._entity_record(e, slcp.get(e)) for e in touched]
            try:
                decisions = actuators.decide(changed, self._context())
            except Exception as e:
                self._error(f"actuators: {type(e).__name__}: {e}")
        ents: list[dict[str, Any]] = []
        decs: list[dict[str, Any]] = []
        if live:
            try:
                # the gate sends deltas of the JSON records: what the live sinks see
                ents, decs = self.gate.filter(self.windows, [e.to_json() for e in changed],
                                              [d.to_json() for d in decisions], final=final)
            except Exception as e:
                self._error(f"gate: {type(e).__name__}: {e}")
        if self.priorities is not None and decisions and not final:
            self._act_on_priorities(decisions)
        if not final:
            self._feed_back(changed, decisions)
        t_start = self._cycle_start_ns or t_end_ns
        counters, self._cycle_counters = self._cycle_counters, {k: 0 for k in self._cycle_counters}
        threads, self._cycle_threads = self._cycle_threads, {}
        waits, self._cycle_waits = self._cycle_waits, []
        stacks, self._cycle_stacks = self._cycle_stacks, []
        self._cycle_start_ns = 0
        if self.sinks:
            window = Window(index=self.windows, t_start_ns=t_start, t_end_ns=t_end_ns,
                            unix_start_s=self._unix0 + (t_start - self._t0) / 1e9,
                            entities=ents, decisions=decs, waits=waits, counters=counters, threads=threads,
                            stacks=stacks)
            for sink in self.sinks:
                self._call_sink(sink, "on_window", window)

    def _feed_back(self, changed: list[EntityRecord], decisions: list[Decision]) -> None:
        """The live decisions back to the program (sources that can: `gyroscope run`), for
        gyroscope.schedulers.live: the current decision of every entity decided so far (an entity
        touched again without a decision loses its)."""
        feedback = getattr(self.source, "feedback", None)
        if feedback is None:
            return
        for rec in changed:
            self._live.pop(rec.id, None)
        by_id = {rec.id: rec for rec in changed}
        for d in decisions:
            rec = by_id.get(d.entity_id)
            if rec is not None:
                self._live[d.entity_id] = live_decision(d, rec, self._protected(d, rec))
        try:
            feedback(list(self._live.values()))
        except Exception as e:
            self._error(f"feedback: {type(e).__name__}: {e}")

    def _protected(self, d: Decision, rec: EntityRecord) -> list[int] | None:
        """`--act priorities`: the threads of a hot loop that the priority actuator left at normal
        priority while it lowered others (plan_priorities never lowers a hot loop's threads);
        None without the actuator, for other decisions, or while no thread was lowered."""
        if self.priorities is None or d.action != "specialize_hot_loop" or not self._lowered_ok:
            return None
        return [t for t in rec.threads if t not in self._lowered]

    def _act_on_priorities(self, decisions: list[Decision]) -> None:
        from gyroscope.schedulers.priorities import plan_priorities
        by_id = {i: e for e, i in self.entity_ids.items()}
        threads_by_entity = {i: self.measure.threads_of(e) for i, e in by_id.items()}
        program = list(self.threads) or None
        try:
            plan = [(t, why) for t, why in plan_priorities([d.to_json() for d in decisions], threads_by_entity,
                                                            all_threads=program)
                    if t not in self._lowered]
            self._lowered.update(t for t, _ in plan)
            done = [self._action(a) for a in self.priorities.lower_many(plan)]
            self.actions.extend(done)
            self._lowered_ok.update(a.thread for a in done if a.ok)
        except Exception as e:
            self._error(f"priorities: {type(e).__name__}: {e}")

    def _waits(self, obs: Observation) -> list[dict[str, Any]]:
        from gyroscope.bridges.events import EventKind
        return [{"thread": ev.thread, "entity_id": self.entity_ids.get(ev.entity, 0), "t_ns": ev.t_ns,
                 "duration_ns": ev.duration_ns, "pid": ev.entity.pid or self.process.pid}
                for ev in obs.events if ev.kind == EventKind.LOCK_WAIT]

    def _cell(self, ent: Entity, role: str) -> int:
        key = (ent, role)
        cid = self.cells.get(key)
        if cid is None:
            try:
                cid = int(self.pool.allocate())
            except Exception:  # capacity exhausted: counted, never fatal
                cid = -1
            self.cells[key] = cid
        if cid < 0:
            self.counters.dropped += 1
        return cid

    def _primary_cell(self, ent: Entity) -> tuple[int, str]:
        roles = self.roles.get(ent, set())
        for role in PRIMARY_ROLE.get(ent.kind, ()) + tuple(sorted(roles)):
            cid = self.cells.get((ent, role), -1)
            if cid >= 0:
                return cid, role
        return -1, ""

    def _slcp_many(self, entities: Any, arrays: bool = False) -> dict[Entity, Slcp]:
        """SLCP records of the entities' primary cells, read from the kernel in one batch.
        With `arrays`, also the chirality histogram and spectrum (for the final result's plots)."""
        cells = [(e, *self._primary_cell(e)) for e in entities]
        cells = [c for c in cells if c[1] >= 0]
        if not cells:
            return {}
        out: dict[Entity, Slcp] = {}
        for ent, cid, role in cells:
            rec = self.pool.record(cid)
            d: dict[str, Any] = {k: rec[k] for k in SLCP_FIELDS}
            if arrays:
                d["chi_hist64"] = rec["chi_hist64"]
                d["spectral64"] = rec["spectral64"]
            out[ent] = Slcp(**d, role=role)
        return out

    def _entity_record(self, ent: Entity, slcp: Slcp | None) -> EntityRecord:
        """The entity's record as of now; its scores are computed here, once, from its SLCP record."""
        return EntityRecord(id=self.entity_ids.get(ent, 0), kind=ent.kind, file=ent.file, function=ent.function,
                            line=ent.line, detail=ent.detail, pid=ent.pid or self.process.pid,
                            threads=self.measure.threads_of(ent), measurements=self.measure.record(ent),
                            slcp=slcp, scores=actuators.scores_of(slcp))

    def _context(self) -> actuators.Context:
        return actuators.Context(duration_s=(time.monotonic_ns() - self._t0) / 1e9, windows=self.windows,
                                 threads=len(self.threads), samples=self.counters.samples,
                                 source=self.source_name, window_s=self.window_s, all_code=self.all_code)

    def _lane_actions(self) -> list[Action]:
        """The Actions the program shipped (schedulers/live.py report(), CoherenceExecutor lanes),
        one per lane with its last counts, in the order they were created."""
        out = []
        for (pid, _idx), d in self._program_actions.items():
            try:
                out.append(program_action(d, pid, self._unix0))
            except Exception as e:   # a malformed record from the program: one error line, never fatal
                self._error(f"program action: {type(e).__name__}: {e}")
        out.sort(key=lambda a: a.t_s)
        return out

    @staticmethod
    def _action(rec: dict[str, Any]) -> Action:
        return Action.from_json(rec, "action")

    def _call_sink(self, sink: Sink, method: str, arg: Any) -> Any:
        try:
            return getattr(sink, method)(arg)
        except Exception as e:
            self._error(f"sink {getattr(sink, 'name', type(sink).__name__)}.{method}: {type(e).__name__}: {e}")
            return None

    def _error(self, msg: str) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(msg)
        elif len(self.errors) == MAX_ERRORS:
            self.errors.append("... more errors not shown")

    # ---- the result -----------------------------------------------------------------------
    def _build_result(self, exit_code: int | None, signal: int | None = None) -> SessionResult:
        slcp = self._slcp_many(self.entity_ids, arrays=True)
        entities = [self._entity_record(e, slcp.get(e)) for e in self.entity_ids]
        entities.sort(key=lambda r: (-r.measurements.cpu_share, -r.measurements.wait_s_total, r.id))
        decisions: list[Decision] = []
        try:
            decisions = actuators.decide(entities, self._context())
        except Exception as e:
            self._error(f"actuators: {type(e).__name__}: {e}")
        proc = self.process
        proc.exit_code, proc.signal = exit_code, signal
        proc.threads = sorted(self.threads.values(), key=lambda t: t.id)
        counters = self.counters
        for k, v in self.gate.counters().items():
            setattr(counters, k, v)
        counters.timeline_dropped = self.timeline_dropped
        # gyroscope's CPU: this process's (start-up included) and its samplers' (py-spy)
        src_cpu = getattr(self.source, "agent_cpu_ns", lambda: 0)()
        actions = list(self.actions) + self._lane_actions()   # before `errors` is copied: it may add some
        return SessionResult(
            source=self.source_name, processes=[proc], started_unix_s=self._unix0,
            duration_s=(time.monotonic_ns() - self._t0) / 1e9, window_s=self.window_s, windows=self.windows,
            counters=counters, errors=list(self.errors), entities=entities, decisions=decisions,
            actions=actions, timeline=list(self.timeline),
            agent=AgentInfo(cpu_s=(time.process_time_ns() + src_cpu) / 1e9, version=__version__),
            extra={"profile": self.stacks.to_json()})


def program_action(d: dict[str, Any], pid: int, unix0: float) -> Action:
    """An executor lane as the program shipped it (schedulers/executor.py _action_locked) -> Action:
    from_ = the pool's workers, to = the lane's limit (how many of its tasks may run at once)."""
    ent = d.get("entity") or {}
    lane = LaneInfo(entity=LaneTarget(kind=str(ent.get("kind") or ""), file=str(ent.get("file") or ""),
                                      function=str(ent.get("function") or ""), line=int(ent.get("line") or 0),
                                      detail=str(ent.get("detail") or "")),
                    tasks=[str(t) for t in d.get("tasks") or ()], routed=int(d.get("routed") or 0),
                    limit=int(d.get("limit") or 0), workers=int(d.get("workers") or 0),
                    threads=[int(t) for t in d.get("threads") or ()], executor=int(d.get("executor") or 0),
                    decision_version=int(d.get("decision_version") or 0))
    t_unix = d.get("t_unix")
    t_s = round(float(t_unix) - unix0, 6) if isinstance(t_unix, (int, float)) else 0.0
    return Action(action=str(d.get("action") or "route_to_lane"), thread=0, mechanism="executor_lane",
                  from_=lane.workers, to=lane.limit, reason=f"{d.get('reason') or ''}: {lane.routed} tasks routed",
                  ok=True, t_s=t_s, pid=pid, lane=lane)


def live_decision(d: Decision, rec: EntityRecord, protected: list[int] | None = None) -> dict[str, Any]:
    """A decision as the program reads it (gyroscope.schedulers.live): plain values only.
    `protected` (hot loops under `--act priorities`): the threads kept at normal priority while
    others were lowered, sent as "protected_threads" (CoherenceExecutor runs the loop's tasks
    only there); absent otherwise."""
    m = rec.measurements
    sites = m.extra.get("call_sites") or []
    out = {"action": d.action, "kind": rec.kind, "file": d.file, "function": d.function, "line": d.line,
            "detail": rec.detail, "pid": rec.pid, "threads": list(rec.threads),
            "created_at": [rec.file, rec.line, rec.function],
            "call_sites": [[cs.get("file", ""), int(cs.get("line", 0))] for cs in sites if isinstance(cs, dict)],
            "measurements": {k: v for k, v in m.to_json().items() if isinstance(v, (int, float, str))}}
    if protected is not None:
        out["protected_threads"] = list(protected)
    return out
