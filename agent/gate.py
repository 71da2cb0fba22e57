"""The Phase OS gate (seed 000): only what changed enough reaches the sinks.

STUB: owned by the decisions work (issue 5). The interface is fixed; the rule will change.
"""
from __future__ import annotations

from typing import Any


class PhaseGate:
    """Per entity R-score and propagation gate. `sent` / `held` count records; `bytes_sent` the payload."""

    def __init__(self) -> None:
        self.sent = 0
        self.held = 0
        self.bytes_sent = 0

    def filter(self, window_index: int, entities: list[dict[str, Any]],
               decisions: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Return (entity deltas, decision deltas) to send for this window; hold the rest."""
        self.sent += len(entities) + len(decisions)
        return entities, decisions
