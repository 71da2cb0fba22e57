"""Live sinks: the one interface of every output fed *during* a session. No sink knows another.

Outputs come in two kinds:
  - live sinks (this module: the --stream JSONL file, the --trace Chrome trace, OTLP export) are
    fed once per report cycle while the program runs, and closed once with the finished result;
  - renderers (agent/render.py: console summary, HTML, JSON, profiles) turn a finished
    `SessionResult` into text or bytes, after the session or from a saved file.

The session calls, from its own thread (never from the program's threads):
  - `on_window(window)` once per report cycle with what passed the Phase OS gate (deltas only:
    the entities whose record or decision changed enough to be sent, as JSON dicts holding the
    entity "id" plus the fields that changed, see agent/gate.py);
  - `close(result)` once at the end with the finished `SessionResult` (agent/model.py). It may
    return a `SinkReport`; a sink that does sets `reports = True` and is closed before the others,
    so that its report (e.g. the OTLP counts) is in the result the other sinks see.
A sink must never raise into the agent and never block for long: the session wraps every call
and turns failures into lines of the result's `errors`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from gyroscope.agent.model import OtlpExport, SessionResult


@dataclass(slots=True)
class Window:
    """One report cycle as the sinks see it."""
    index: int
    t_start_ns: int            # time.monotonic_ns()
    t_end_ns: int
    unix_start_s: float        # wall clock of t_start_ns
    entities: list[dict[str, Any]] = field(default_factory=list)   # entity record deltas (gated)
    decisions: list[dict[str, Any]] = field(default_factory=list)  # DECISION records that changed
    waits: list[dict[str, Any]] = field(default_factory=list)      # {"thread", "entity_id", "t_ns", "duration_ns", "pid"}
    counters: dict[str, int] = field(default_factory=dict)         # events seen / dropped in this cycle
    threads: dict[int, str] = field(default_factory=dict)          # native id -> name
    stacks: list[Any] = field(default_factory=list)   # the cycle's sampled stacks (StackSample), for sinks
                                                      # that export a profile per report cycle


@dataclass(slots=True)
class SinkReport:
    """What a sink tells the session when it closes: its export results and its failures."""
    otlp: OtlpExport | None = None
    errors: list[str] = field(default_factory=list)

    def apply(self, result: SessionResult) -> None:
        """Put the report into the result: `export.otlp` and the error lines."""
        if self.otlp is not None:
            from gyroscope.agent.model import Export
            if result.export is None:
                result.export = Export()
            result.export.otlp = self.otlp
        result.errors.extend(e for e in self.errors if e not in result.errors)


class Sink(Protocol):
    name: str

    def on_window(self, window: Window) -> None: ...

    def close(self, result: SessionResult) -> SinkReport | None: ...
