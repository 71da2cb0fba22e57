"""The session result: one JSON document per session, the same for `run` and `attach`.

Schema "gyroscope.session/1" (documented in the README, section "Session result"):

    {
      "schema": "gyroscope.session/1",
      "source": "run" | "attach",
      "command": [str, ...],            # what ran (run) or the target's cmdline (attach)
      "pid": int, "python": "3.12.1",
      "started_unix_s": float, "duration_s": float,
      "exit_code": int | null,          # the program's exit code when known
      "window_s": float, "windows": int,
      "counters": {"raw_events": int, "events": int, "samples": int, "dropped": int,
                   "words": int, "gate_sent": int, "gate_held": int},
      "errors": [str, ...],
      "threads": [{"id": int, "name": str, "cpu_s": float}],
      "entities": [ENTITY, ...],        # sorted: most CPU first, then most wait
      "decisions": [DECISION, ...],     # filled by the actuators (agent/actuators.py)
      "actions": [ACTION, ...],         # changes made to the program (opt-in actuators)
      "agent": {"cpu_s": float, "version": str}
    }

    ENTITY = {
      "id": int, "kind": "loop"|"function"|"lock"|"wait"|"gc"|"thread",
      "file": str, "function": str, "line": int, "detail": str,
      "threads": [int, ...],            # native ids of threads seen in it
      "measurements": {
        "iterations": int, "iterations_per_s": float,   # loops
        "calls": int,
        "cpu_share": float,             # share of the process's sampled running time (0..1)
        "samples_running": int, "samples_waiting": int,
        "wait_s_total": float, "wait_s_mean": float, "waits": int,
        "waiting_threads": int,
        # lock and wait entities fed by the profiled locks (bridges/_locks.pyx) only: exact figures
        "exact": true, "wait_s_max": float, "hold_s_total": float, "acquires": int,
        "call_sites": [{"file": str, "line": int, "waits": int, "wait_s": float}, ...],
        "call_sites_dropped": int
      },
      "slcp": {"cell_id": int, "step": int, "omega12": int, "chi6": int, "shell": int,
               "resonance_key": int, "current_resonance": int, "omega_sig": int,
               "effective_support": float, "spectral_damping": float,
               "chi_support_ratio": float, "shell_entropy": float, "spectral_peak_ratio": float}
    }

    DECISION = {"action": "specialize_hot_loop"|"mitigate_contention"|"observe",
                "entity_id": int, "entity_kind": str, "file": str, "function": str, "line": int,
                "hot_loop_score": float, "contention_score": float, "evidence": {...}}
"""
from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any

SCHEMA = "gyroscope.session/1"


class ResultError(Exception):
    """A session file that cannot be read: one clear line for the user."""


def empty_result(source: str, command: list[str], pid: int) -> dict[str, Any]:
    """A result with every top-level key present, ready to be filled."""
    import platform
    import time

    from gyroscope.agent import __version__

    return {
        "schema": SCHEMA,
        "source": source,
        "command": list(command),
        "pid": pid,
        "python": platform.python_version(),
        "started_unix_s": time.time(),
        "duration_s": 0.0,
        "exit_code": None,
        "window_s": 0.0,
        "windows": 0,
        "counters": {"raw_events": 0, "events": 0, "samples": 0, "dropped": 0, "words": 0,
                     "gate_sent": 0, "gate_held": 0},
        "errors": [],
        "threads": [],
        "entities": [],
        "decisions": [],
        "actions": [],
        "agent": {"cpu_s": 0.0, "version": __version__},
    }


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


def load_result(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check a session result; raise ResultError with one clear line."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        raise ResultError(f"no such session file: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ResultError(f"cannot read session file {path}: {e}") from None
    except json.JSONDecodeError as e:
        raise ResultError(f"{path} is not a gyroscope session (invalid JSON at line {e.lineno})") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        found = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
        raise ResultError(f"{path} is not a gyroscope session of schema {SCHEMA} (found {found!r})")
    for key in ("entities", "decisions", "threads"):
        if not isinstance(doc.get(key), list):
            raise ResultError(f"{path}: session field {key!r} is missing or not a list")
    return doc
