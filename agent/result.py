"""Session files: the atomic writer every output goes through, and compatibility names.

The session itself is the typed model of agent/model.py (schema "gyroscope.session/2", every
field documented there); `SessionResult.save(path)` writes it with `write_json_atomic` below
and `SessionResult.load(path)` reads it (and converts "gyroscope.session/1" files).
"""
from __future__ import annotations

import json
import os
from typing import Any

from gyroscope.agent.errors import ResultError, SessionFileError
from gyroscope.agent.model import SCHEMA

__all__ = ["SCHEMA", "ResultError", "SessionFileError", "load_result", "write_bytes_atomic", "write_json_atomic", "write_text_atomic"]


def write_json_atomic(path: str | os.PathLike[str], doc: Any) -> None:
    """Write JSON so that a crash leaves either the old file or the new one, never half."""
    write_text_atomic(path, json.dumps(doc, indent=1, default=_jsonable) + "\n")


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write a whole text file by the rules of agent/outputs.py: atomic (temp + rename) where the
    target is a regular file, through symlinks, directly to devices and FIFOs, umask respected."""
    from gyroscope.agent.outputs import write_text

    write_text(path, text)


def _jsonable(obj: Any) -> Any:
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:  # pragma: no cover
        pass
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """write_text_atomic for binary outputs (the renderers that return bytes, e.g. pprof): the one
    output writer of agent/outputs.py."""
    from gyroscope.agent.outputs import write_bytes
    write_bytes(path, data)


def load_result(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A session file as its gyroscope.session/2 JSON (v1 converted); SessionFileError with one line.
    Prefer `SessionResult.load(path)`, which gives the typed model."""
    from gyroscope.agent.model import SessionResult
    return SessionResult.load(path).to_json()
