"""The typed session model: what one session of `gyroscope run` or `gyroscope attach` found.

This module is the one place where every field of the session file is documented (the
docstrings of the classes below). A `SessionResult` is built by the session (agent/session.py)
once the program is done, is complete before any sink closes, is saved with `save(path)` (the
project's one atomic writer) and read back with `SessionResult.load(path)`; renderers
(agent/render.py) take it as it is.

Schema "gyroscope.session/2" (the JSON of `SessionResult.to_json()`):

    {"schema": "gyroscope.session/2", "source": "run" | "attach",
     "command", "pid", "python", "exit_code", "signal",   # the main process's, repeated here
     "started_unix_s", "duration_s", "window_s", "windows",
     "counters": COUNTERS, "errors": [str],
     "processes": [PROCESS],          # every process of the session; the first is the main one
     "entities": [ENTITY],            # most CPU first, then most wait
     "decisions": [DECISION], "actions": [ACTION], "timeline": [WAIT_INTERVAL],
     "export": EXPORT?, "attach": ATTACH?, "agent": AGENT,
     ...}                             # unknown keys (e.g. "profile") are kept as they are

Schema "gyroscope.session/1" files are still read (`from_json` converts them): v1 had the main
process's pid, command, python, exit_code and `threads` at the top level and no pid on
entities; v2 moves threads into `processes[i].threads` and gives entities, decisions, actions
and wait intervals the pid of their process.

Rules kept by the model:
- Decisions are computed from entity records and returned (agent/actuators.py `decide`);
  nothing writes into a record after it is built.
- `from_json` checks types and raises `SessionFileError` with one line naming the field;
  unknown keys at any level are kept in `extra` and written back by `to_json`, so a newer
  writer's fields survive a load/save by an older reader.
- No field is a bare dict except the ones that are open by nature: `Decision.evidence`
  (named numbers and the rule text), `extra` (unknown keys) and `OtlpExport.emitted`.
"""
from __future__ import annotations

import json
import os
import types
import typing
from dataclasses import MISSING, dataclass, field, fields
from functools import cache
from typing import Any, ClassVar, Self

from gyroscope.agent.errors import SessionFileError

SCHEMA = "gyroscope.session/2"
SCHEMA_V1 = "gyroscope.session/1"
READABLE_SCHEMAS = (SCHEMA, SCHEMA_V1)


# ---- the generic JSON <-> dataclass conversion --------------------------------------------------
class _Record:
    """Base of every model class: `to_json()` / `from_json(doc)` driven by the type hints.

    JSON names equal field names, except where `_json_names` says otherwise (e.g. Action.from_
    is "from"). `extra` holds the keys a reader does not know; they are written back last."""

    _json_names: ClassVar[dict[str, str]] = {}

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):  # type: ignore[arg-type]
            if f.name == "extra":
                continue
            out[self._json_names.get(f.name, f.name)] = _dump(getattr(self, f.name))
        for k, v in getattr(self, "extra", {}).items():
            out.setdefault(k, v)
        return out

    @classmethod
    def from_json(cls, doc: Any, where: str = "") -> Self:
        where = where or cls.__name__
        if not isinstance(doc, dict):
            raise SessionFileError(f"{where} must be an object, not {_jtype(doc)}")
        hints = _hints(cls)
        kwargs: dict[str, Any] = {}
        known = set()
        for f in fields(cls):  # type: ignore[arg-type]
            if f.name == "extra":
                continue
            key = cls._json_names.get(f.name, f.name)
            known.add(key)
            if key not in doc:
                if f.default is MISSING and f.default_factory is MISSING:
                    raise SessionFileError(f"{where}: missing field {key!r}")
                continue
            kwargs[f.name] = _load(hints[f.name], doc[key], f"{where}.{key}")
        if "extra" in hints:
            kwargs["extra"] = {k: v for k, v in doc.items() if k not in known}
        return cls(**kwargs)


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _jtype(v: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(v), type(v).__name__)


def _dump(v: Any) -> Any:
    if isinstance(v, _Record):
        return v.to_json()
    if isinstance(v, list):
        return [_dump(x) for x in v]
    return v


def _load(tp: Any, v: Any, where: str) -> Any:
    """Check and convert one JSON value to the type hint `tp`; one clear line when it does not fit."""
    if tp is Any:
        return v
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        args = typing.get_args(tp)
        if v is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _load(a, v, where)
            except SessionFileError as e:
                errors.append(e)
        raise errors[0]
    if origin is list:
        if not isinstance(v, list):
            raise SessionFileError(f"{where} must be a list, not {_jtype(v)}")
        (item,) = typing.get_args(tp)
        # fast paths for the 64-bin histograms and spectra (the bulk of a session file)
        if item is int and all(type(x) is int for x in v):
            return list(v)
        if item is float and all(type(x) is float for x in v):
            return list(v)
        return [_load(item, x, f"{where}[{i}]") for i, x in enumerate(v)]
    if origin is dict:
        if not isinstance(v, dict):
            raise SessionFileError(f"{where} must be an object, not {_jtype(v)}")
        return dict(v)
    if isinstance(tp, type) and issubclass(tp, _Record):
        return tp.from_json(v, where)
    if tp is bool:
        if not isinstance(v, bool):
            raise SessionFileError(f"{where} must be true or false, not {_jtype(v)}")
        return v
    if tp is int:
        if isinstance(v, bool) or not isinstance(v, int):
            if isinstance(v, float) and v.is_integer():
                return int(v)
            raise SessionFileError(f"{where} must be an integer, not {_jtype(v)}")
        return v
    if tp is float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise SessionFileError(f"{where} must be a number, not {_jtype(v)}")
        return float(v)
    if tp is str:
        if not isinstance(v, str):
            raise SessionFileError(f"{where} must be a string, not {_jtype(v)}")
        return v
    raise TypeError(f"model: no JSON conversion for {tp!r}")  # a bug in this module, not in the file


# ---- the records ----------------------------------------------------------------------------
@dataclass(slots=True)
class Counters(_Record):
    """Session-wide counts.

    raw_events   events the sources saw before aggregation (callback hits, samples)
    events       aggregated events handed to the session (one per entity, role, kind, thread, window)
    samples      stack samples taken
    dropped      events or samples lost: full queues, kernel cells exhausted (never silent)
    words        4-byte words ingested by the kernel
    gate_sent / gate_held            records the Phase OS gate (agent/gate.py) sent / held back
    gate_bytes_sent                  JSON bytes of what was sent
    gate_records_ungated / gate_bytes_ungated   what sending everything every cycle would have cost
                                     (all five 0 when the session had no live sink: --stream,
                                     --trace, --otlp)
    timeline_dropped                 wait intervals beyond the timeline's cap (10,000)
    threads_forgotten                thread records beyond the session's cap (4,096; the least
                                     recently seen go first: a thread per request)
    """
    raw_events: int = 0
    events: int = 0
    samples: int = 0
    dropped: int = 0
    words: int = 0
    gate_sent: int = 0
    gate_held: int = 0
    gate_bytes_sent: int = 0
    gate_records_ungated: int = 0
    gate_bytes_ungated: int = 0
    timeline_dropped: int = 0
    threads_forgotten: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def items(self) -> list[tuple[str, int]]:
        """Every counter with its name, known ones first (for renderers and exporters)."""
        return [(k, v) for k, v in self.to_json().items() if isinstance(v, (int, float)) and not isinstance(v, bool)]


@dataclass(slots=True)
class ThreadRecord(_Record):
    """One thread of a watched process: `id` its native id (what `ps -L` and py-spy show),
    `name` as the program named it, `cpu_s` the CPU time it used while watched."""
    id: int
    name: str = ""
    cpu_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class ProcessRecord(_Record):
    """One process of the session (run follows child processes; attach watches one PID).

    pid        its process id
    command    argv as run (run) or the target's /proc cmdline (attach)
    python     its Python version ("3.13.0"; "" when the target did not say)
    exit_code  how it exited, when known (None: still running at the end of an attach)
    signal     the signal that killed it (None: it exited, or unknown)
    parent     the pid of the session process it was started by (None: the main process)
    threads    every thread seen in it
    """
    pid: int
    command: list[str] = field(default_factory=list)
    python: str = ""
    exit_code: int | None = None
    signal: int | None = None
    parent: int | None = None
    threads: list[ThreadRecord] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Measurements(_Record):
    """The direct measurements of an entity, the numbers a user can check (agent/measure.py says
    how each is obtained and how exact it is).

    iterations, iterations_per_s   loops: counted iterations and the burst rate
    calls                          calls (functions, generators' resumes)
    cpu_share                      share of the program's sampled running time (0..1)
    samples_running / samples_waiting   stack samples of the entity running / blocked
    wait_s_total, wait_s_mean, waits    sampled blocked time, per episode, and episodes
    waiting_threads                distinct threads that waited on it
    run_s_total                    sampled running seconds (None: the source does not measure it;
                                   the decision rule then uses samples instead)
    """
    iterations: int = 0
    iterations_per_s: float = 0.0
    calls: int = 0
    cpu_share: float = 0.0
    samples_running: int = 0
    samples_waiting: int = 0
    wait_s_total: float = 0.0
    wait_s_mean: float = 0.0
    waits: int = 0
    waiting_threads: int = 0
    run_s_total: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out = _Record.to_json(self)
        if out.get("run_s_total") is None:
            out.pop("run_s_total", None)
        return out


@dataclass(slots=True)
class Slcp(_Record):
    """The spec's SLCP record (002 §25.1) of the entity's primary kernel cell (cyext/api.py).

    cell_id, step          the kernel cell and how many words it has taken
    omega12, chi6, shell   the current 12-bit phase word, its 6-bit chirality and shell (0..6)
    resonance_key, current_resonance, omega_sig   the cell's resonance keys and signature
    effective_support, spectral_damping           support and damping of its history
    chi_support_ratio, shell_entropy, spectral_peak_ratio   the three inputs of the scores
    role                   which role's cell this is ("iter", "run", "wait", ...)
    chi_hist64, spectral64 the 64-bin chirality histogram and spectrum (final result only)
    """
    cell_id: int = -1
    step: int = 0
    omega12: int = 0
    chi6: int = 0
    shell: int = 0
    resonance_key: int = 0
    current_resonance: int = 0
    omega_sig: int = 0
    effective_support: float = 0.0
    spectral_damping: float = 0.0
    chi_support_ratio: float = 0.0
    shell_entropy: float = 0.0
    spectral_peak_ratio: float = 0.0
    role: str = ""
    chi_hist64: list[int] | None = None
    spectral64: list[float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out = _Record.to_json(self)
        for k in ("chi_hist64", "spectral64"):
            if out.get(k) is None:
                out.pop(k, None)
        return out


@dataclass(slots=True)
class Scores(_Record):
    """The structural scores of spec 002 §25.1 (agent/actuators.py `scores_of`), computed from the
    SLCP record when the entity record is built: hot_loop_score + contention_score = 1, and
    action_structural is what they alone would suggest."""
    hot_loop_score: float = 0.0
    contention_score: float = 0.0
    action_structural: str = "observe"
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class EntityRecord(_Record):
    """A place in the program and what was measured there.

    id        the session's id for it (1, 2, ...; decisions and wait intervals refer to it)
    kind      "loop" | "function" | "lock" | "wait" | "gc" | "thread"
    file, function, line   where (function is the qualified name, e.g. "Grid.relax")
    detail    for locks and waits, what was waited in ("lock", "sleep", "socket", ...)
    pid       the process it was seen in
    threads   native ids of the threads seen in it
    measurements   the direct measurements (see Measurements)
    slcp      its kernel record (None: the entity never got a cell)
    scores    the structural scores (None only in v1 files written before they existed)
    """
    id: int
    kind: str
    file: str = ""
    function: str = ""
    line: int = 0
    detail: str = ""
    pid: int = 0
    threads: list[int] = field(default_factory=list)
    measurements: Measurements = field(default_factory=Measurements)
    slcp: Slcp | None = None
    scores: Scores | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out = _Record.to_json(self)
        if out["slcp"] is None:
            out["slcp"] = {}
        if out["scores"] is None:
            del out["scores"]
        return out

    @classmethod
    def from_json(cls, doc: Any, where: str = "") -> Self:
        if isinstance(doc, dict) and doc.get("slcp") == {}:
            doc = {**doc, "slcp": None}
        return super(EntityRecord, cls).from_json(doc, where)

    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(slots=True)
class Decision(_Record):
    """What gyroscope decided about one entity (agent/actuators.py states the rule).

    action      "specialize_hot_loop" | "mitigate_contention" | "observe" (a withdrawn decision,
                in live streams only)
    entity_id, entity_kind, file, function, line, pid   the entity it is about
    hot_loop_score, contention_score   the structural scores
    evidence    the measurements, the shares computed from them and the rule that fired
    """
    action: str
    entity_id: int
    entity_kind: str = ""
    file: str = ""
    function: str = ""
    line: int = 0
    pid: int = 0
    hot_loop_score: float = 0.0
    contention_score: float = 0.0
    evidence: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class LaneTarget(_Record):
    """The decided entity an executor action is about (Action.lane.entity).

    kind, file, function, line, detail   as in the decision (the lock for route_to_lane, the hot
                                         loop for run_on_protected_threads)
    """
    kind: str = ""
    file: str = ""
    function: str = ""
    line: int = 0
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class LaneInfo(_Record):
    """What a CoherenceExecutor lane does (schedulers/executor.py), as the program last shipped it.

    entity     the decided lock (route_to_lane) or hot loop (run_on_protected_threads)
    tasks      the callables routed to the lane, "qualname (file:first line)", the first 32
    routed     how many tasks were routed to it (at the end of the session: in all)
    limit      at most this many of its tasks run at once (route_to_lane; the pool's size for
               run_on_protected_threads)
    workers    the executor's max_workers
    threads    run_on_protected_threads: the native ids of the threads its tasks may run on
    executor   which executor of the process (1, 2, ... in creation order)
    decision_version   live.version() of the decisions that created it
    """
    entity: LaneTarget = field(default_factory=LaneTarget)
    tasks: list[str] = field(default_factory=list)
    routed: int = 0
    limit: int = 0
    workers: int = 0
    threads: list[int] = field(default_factory=list)
    executor: int = 0
    decision_version: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Action(_Record):
    """A change gyroscope made to the program, or the program made because of gyroscope's live
    decisions.

    action      "lower_priority" | "restore_priority" (the opt-in priority actuator,
                schedulers/priorities.py, `run --act priorities`);
                "route_to_lane" (a CoherenceExecutor created a lane for a lock decided
                mitigate_contention: the tasks that take the lock run at most `lane.limit` at a
                time) | "run_on_protected_threads" (the tasks of a specialize_hot_loop entity run
                only on the threads `--act priorities` protects); both shipped by the program
                (schedulers/live.py report()), one Action per lane, with its final counts
    thread, pid the thread (native id; 0 for executor actions) and its process
    mechanism   "nice" | "sched_batch" | "affinity" | "executor_lane"
    from_, to   the value before and after (JSON "from" / "to"); executor lanes: how many of the
                lane's tasks could run at once before (the pool's workers) and after (its limit)
    reason      why (the decision that asked for it)
    ok, error   whether it was done, and why not
    t_s         when, seconds since the actuator (priorities) or the session (executor lanes) started
    lane        executor actions: the lane (LaneInfo); null for the others
    """
    _json_names: ClassVar[dict[str, str]] = {"from_": "from"}
    action: str
    thread: int
    mechanism: str = ""
    from_: Any = None
    to: Any = None
    reason: str = ""
    ok: bool = False
    error: str | None = None
    t_s: float = 0.0
    pid: int = 0
    lane: LaneInfo | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class WaitInterval(_Record):
    """One wait of one thread, for the report's timeline.

    thread, pid   the thread (native id) and its process
    entity_id     the lock or wait entity it waited on
    start_s       when it began, seconds since the session began; duration_s how long it lasted
    """
    thread: int
    entity_id: int
    start_s: float
    duration_s: float
    pid: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class OtlpExport(_Record):
    """What the OTLP exporter did (agent/sinks/otel.py).

    endpoint, signals        where it exported and which signals ("traces", "metrics", "logs")
    spans, metrics, logs     items the endpoint accepted
    dropped, failed          items lost in full queues / refused or unanswered
    flush_timed_out          the flush at exit gave up after its budget
    emitted                  {"spans": n, "logs": n} handed to the SDK
    sdk_warnings             warnings the SDK logged (kept off the program's stderr)
    """
    endpoint: str = ""
    signals: list[str] = field(default_factory=list)
    spans: int = 0
    metrics: int = 0
    logs: int = 0
    dropped: int = 0
    failed: int = 0
    flush_timed_out: bool = False
    emitted: dict[str, Any] = field(default_factory=dict)
    sdk_warnings: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Export(_Record):
    """Results of the live exporters (present when one ran): otlp, see OtlpExport."""
    otlp: OtlpExport | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class SpeedscopeInfo(_Record):
    """attach --speedscope: `path` of the file, `stacks` distinct stacks written, `samples_merged`
    samples merged into others past the cap of distinct stacks."""
    path: str = ""
    stacks: int = 0
    samples_merged: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class AttachInfo(_Record):
    """How an attach went (attach only).

    target_exited, interrupted   the target ended while watched / the user pressed Ctrl-C
    samples                      py-spy samples taken
    rate_hz, wait_rate_hz        py-spy record and dump rates
    record_chunks, record_sampling_errors, record_empty_chunks   py-spy record's output
    py_spy                       the py-spy executable
    speedscope                   with --speedscope
    """
    target_exited: bool = False
    interrupted: bool = False
    samples: int = 0
    rate_hz: float = 0.0
    wait_rate_hz: float = 0.0
    record_chunks: int = 0
    record_sampling_errors: int = 0
    record_empty_chunks: int = 0
    py_spy: str = ""
    speedscope: SpeedscopeInfo | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out = _Record.to_json(self)
        if out["speedscope"] is None:
            del out["speedscope"]
        return out


@dataclass(slots=True)
class AgentInfo(_Record):
    """gyroscope itself: `cpu_s` its CPU time while watching, `version` its version."""
    cpu_s: float = 0.0
    version: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class SessionResult(_Record):
    """One session (schema gyroscope.session/2; see the module docstring for the layout).

    source          "run" | "attach"
    started_unix_s  wall clock at the start; duration_s its length
    window_s        the observation window; windows how many there were
    counters        see Counters
    errors          what went wrong inside gyroscope (sources, sinks, exporters), one line each
    processes       every process; processes[0] is the main one (the one run or attached to)
    entities        see EntityRecord; decisions, actions, timeline: see their classes
    export          the live exporters' results (None: no exporter ran)
    attach          attach only
    agent           see AgentInfo
    extra           top-level keys this version does not know (kept on save)
    """
    source: str
    processes: list[ProcessRecord] = field(default_factory=list)
    started_unix_s: float = 0.0
    duration_s: float = 0.0
    window_s: float = 0.0
    windows: int = 0
    counters: Counters = field(default_factory=Counters)
    errors: list[str] = field(default_factory=list)
    entities: list[EntityRecord] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    timeline: list[WaitInterval] = field(default_factory=list)
    export: Export | None = None
    attach: AttachInfo | None = None
    agent: AgentInfo = field(default_factory=AgentInfo)
    schema: str = SCHEMA
    extra: dict[str, Any] = field(default_factory=dict)

    _MAIN_KEYS: ClassVar[tuple[str, ...]] = ("command", "pid", "python", "exit_code", "signal")

    # ---- the main process ---------------------------------------------------------------------
    @property
    def main(self) -> ProcessRecord:
        """The process the user ran or attached to (created on first use if the list is empty)."""
        if not self.processes:
            self.processes.append(ProcessRecord(pid=0))
        return self.processes[0]

    @property
    def pid(self) -> int:
        return self.main.pid

    @property
    def command(self) -> list[str]:
        return self.main.command

    @property
    def python(self) -> str:
        return self.main.python

    @property
    def exit_code(self) -> int | None:
        return self.main.exit_code

    @property
    def threads(self) -> list[ThreadRecord]:
        """Every thread of every process."""
        return [t for p in self.processes for t in p.threads]

    def entity(self, entity_id: int) -> EntityRecord | None:
        return next((e for e in self.entities if e.id == entity_id), None)

    # ---- JSON -----------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        body = _Record.to_json(self)
        main = self.main
        out: dict[str, Any] = {"schema": SCHEMA, "source": self.source}
        out.update({k: _dump(getattr(main, k)) for k in self._MAIN_KEYS})
        for k, v in body.items():
            if k in ("export", "attach") and v is None:
                continue
            out.setdefault(k, v)
        return out

    @classmethod
    def from_json(cls, doc: Any, where: str = "session") -> Self:
        if not isinstance(doc, dict):
            raise SessionFileError(f"not a gyroscope session (the file holds {_jtype(doc)}, not an object)")
        schema = doc.get("schema")
        if schema not in READABLE_SCHEMAS:
            raise SessionFileError(f"not a gyroscope session of schema {SCHEMA} or {SCHEMA_V1} (found {schema!r})")
        if schema == SCHEMA_V1:
            doc = upgrade_v1(doc)
        elif not doc.get("processes") and "pid" in doc:
            # a writer that gave only the top-level copy: the main process is made of it
            doc = {**doc, "processes": [{k: doc[k] for k in cls._MAIN_KEYS if k in doc}]}
        doc = {k: v for k, v in doc.items() if k not in cls._MAIN_KEYS}
        return super(SessionResult, cls).from_json(doc, where)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Self:
        """Read and check a session file (v2, or v1 converted); SessionFileError with one line."""
        try:
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
        except FileNotFoundError:
            raise SessionFileError(f"no such session file: {path}") from None
        except IsADirectoryError:
            raise SessionFileError(f"{path} is a directory, not a session file") from None
        except (OSError, UnicodeDecodeError) as e:
            raise SessionFileError(f"cannot read session file {path}: {getattr(e, 'strerror', None) or e}") from None
        except json.JSONDecodeError as e:
            raise SessionFileError(f"{path} is not a gyroscope session (invalid JSON at line {e.lineno})") from None
        except RecursionError:
            raise SessionFileError(f"{path} is not a gyroscope session (nested too deeply)") from None
        try:
            return cls.from_json(doc)
        except SessionFileError as e:
            raise SessionFileError(f"{path}: {e.message}") from None

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the session through the project's atomic writer (OSError for a bad path)."""
        from gyroscope.agent.result import write_json_atomic
        write_json_atomic(path, self.to_json())


def upgrade_v1(doc: dict[str, Any]) -> dict[str, Any]:
    """A gyroscope.session/1 document as /2: the top-level process fields and threads become
    processes[0]; entities, decisions, actions and wait intervals get its pid."""
    doc = dict(doc)
    pid = doc.get("pid", 0)
    if not isinstance(pid, int) or isinstance(pid, bool):
        raise SessionFileError(f"session.pid must be an integer, not {_jtype(pid)}")
    main = {"pid": pid, "command": doc.pop("command", []), "python": doc.pop("python", ""),
            "exit_code": doc.pop("exit_code", None), "threads": doc.pop("threads", [])}
    doc.pop("pid", None)
    doc["processes"] = [main]

    def with_pid(items: Any) -> Any:
        if not isinstance(items, list):
            return items
        return [{**x, "pid": x.get("pid", pid)} if isinstance(x, dict) else x for x in items]

    for key in ("entities", "decisions", "actions", "timeline"):
        if key in doc:
            doc[key] = with_pid(doc[key])
    for key in ("entities", "decisions", "threads"):   # v1 readers required these
        if key == "threads":
            if not isinstance(main["threads"], list):
                raise SessionFileError(f"session field {key!r} is missing or not a list")
        elif not isinstance(doc.get(key), list):
            raise SessionFileError(f"session field {key!r} is missing or not a list")
    doc["schema"] = SCHEMA
    return doc
