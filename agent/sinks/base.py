"""The one interface every sink implements. No sink knows about another.

The agent calls, from its own thread (never from the program's threads):
  - `on_window(window)` once per observation window with what passed the Phase OS gate
    (deltas only: the entities whose record or decision changed enough to be sent);
  - `close(result)` once at the end with the final session result.
A sink must never raise into the agent and never block for long: the agent wraps every
call and counts failures in the result's `errors`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(slots=True)
class Window:
    """One observation window as the sinks see it."""
    index: int
    t_start_ns: int            # time.monotonic_ns()
    t_end_ns: int
    unix_start_s: float        # wall clock of t_start_ns
    entities: list[dict[str, Any]] = field(default_factory=list)   # ENTITY dicts that changed (gated)
    decisions: list[dict[str, Any]] = field(default_factory=list)  # DECISION dicts that changed
    waits: list[dict[str, Any]] = field(default_factory=list)      # {"thread", "entity_id", "t_ns", "duration_ns"}
    counters: dict[str, int] = field(default_factory=dict)         # events seen / dropped in this window
    threads: dict[int, str] = field(default_factory=dict)          # native id -> name


class Sink(Protocol):
    name: str

    def on_window(self, window: Window) -> None: ...

    def close(self, result: dict[str, Any]) -> None: ...
