"""The terminal summary printed at the end of a session.

STUB: owned by the export/report work (issue 6), which replaces it with the real renderer.
"""
from __future__ import annotations

from typing import Any, TextIO


def print_summary(result: dict[str, Any], stream: TextIO, quiet: bool = False) -> None:
    """Print decisions first, then top loops and top waits, with their evidence."""
    if quiet:
        return
    print(f"gyroscope: {len(result.get('entities', []))} entities, {len(result.get('decisions', []))} decisions",
          file=stream)
