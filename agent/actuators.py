"""Actuators: turn entity records into decisions (spec 002 §25.1, Appendix B.1).

STUB: owned by the decisions work (issue 5). Signatures are fixed; the bodies will change.
"""
from __future__ import annotations

from typing import Any


def decide(entities: list[dict[str, Any]], context: dict[str, Any]) -> list[dict[str, Any]]:
    """Return DECISION dicts (see agent/result.py) for the entities that warrant an action.

    `entities` are ENTITY dicts (measurements + slcp); `context` carries session-wide facts
    (duration_s, windows, threads, total samples). May add a "scores" dict to each entity.
    """
    return []
