"""Session files: the atomic writer every output goes through, and compatibility names.

The session itself is the typed model of agent/model.py (schema "gyroscope.session/2", every
field documented there); `SessionResult.save(path)` writes it with `write_json_atomic` below
and `SessionResult.load(path)` reads it (and converts "gyroscope.session/1" files).
"""
from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from gyroscope.agent.errors import ResultError, SessionFileError
from gyroscope.agent.model import SCHEMA

__all__ = ["SCHEMA", "ResultError", "SessionFileError", "load_result", "write_bytes_atomic", "write_json_atomic", "write_text_atomic"]


def write_json_atomic(path: str | os.PathLike[str], doc: Any) -> None:
    """Write JSON so that a crash leaves either the old file or the new one, never half."""
    write_text_atomic(path, json.dumps(doc, indent=1, default=_jsonable) + "\n")


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write a text file via a temporary file, fsync and rename: the old file or the new one, never half."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:   # the parent is a file: say so, not "File exists"
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path.parent)) from None
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


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
    """write_text_atomic for binary outputs (the renderers that return bytes, e.g. pprof)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def load_result(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A session file as its gyroscope.session/2 JSON (v1 converted); SessionFileError with one line.
    Prefer `SessionResult.load(path)`, which gives the typed model."""
    from gyroscope.agent.model import SessionResult
    return SessionResult.load(path).to_json()
