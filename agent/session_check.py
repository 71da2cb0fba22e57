"""Type checks for a session JSON read back from disk (`gyroscope report`, `eval`).

A session file is user input: hand-edited, written by another version, or not ours at all.
Before this check, `{"duration_s": "abc"}` or `"entities": [1]` in an otherwise valid session
ended `gyroscope report` in a traceback from deep inside the renderer. `session_problem(doc)`
names the first field whose type is wrong ("entities[2].measurements.cpu_share must be a
number, found str '0.5'"), so the report command can say it in one line. Fields that are
absent are fine (older files, other producers); only present fields with wrong types are
refused, and only the fields the renderers read.
"""
from __future__ import annotations

from typing import Any

_NUMBER = "a number"
_INT = "an integer"
_STR = "a string"


def _type_ok(value: Any, want: str) -> bool:
    if want == _NUMBER:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if want == _INT:
        return isinstance(value, int) and not isinstance(value, bool)
    if want == _STR:
        return isinstance(value, str)
    if want == "a list":
        return isinstance(value, list)
    if want == "an object":
        return isinstance(value, dict)
    raise AssertionError(want)


_TOP: dict[str, str] = {
    "source": _STR, "python": _STR, "pid": _INT, "started_unix_s": _NUMBER, "duration_s": _NUMBER,
    "window_s": _NUMBER, "windows": _INT, "command": "a list", "counters": "an object", "errors": "a list",
    "threads": "a list", "entities": "a list", "decisions": "a list", "actions": "a list",
    "agent": "an object", "timeline": "a list", "export": "an object",
}
_THREAD = {"id": _INT, "name": _STR, "cpu_s": _NUMBER}
_ENTITY = {"id": _INT, "kind": _STR, "file": _STR, "function": _STR, "line": _INT, "detail": _STR,
           "threads": "a list", "measurements": "an object", "slcp": "an object", "scores": "an object"}
_DECISION = {"action": _STR, "entity_id": _INT, "entity_kind": _STR, "file": _STR, "function": _STR,
             "line": _INT, "hot_loop_score": _NUMBER, "contention_score": _NUMBER, "evidence": "an object"}
_ACTION = {"action": _STR, "thread": _INT, "mechanism": _STR, "reason": _STR}


class _Bad(Exception):
    pass


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def _check(value: Any, want: str, where: str) -> None:
    if not _type_ok(value, want):
        raise _Bad(f"session field {where} must be {want}, found {_describe(value)}")


def _fields(obj: Any, spec: dict[str, str], where: str) -> None:
    _check(obj, "an object", where)
    for key, want in spec.items():
        if key in obj:
            _check(obj[key], want, f"{where}.{key}")


def _numbers(obj: Any, where: str, labels: bool = False) -> None:
    """Every value of a measurements / counters object is a number; slcp and scores may also hold
    labels (strings: "role", "action_structural") and lists of numbers (histograms, spectra)."""
    _check(obj, "an object", where)
    for k, v in obj.items():
        if _type_ok(v, _NUMBER) or isinstance(v, bool):
            continue
        if labels and (isinstance(v, str) or (isinstance(v, list) and all(_type_ok(x, _NUMBER) for x in v))):
            continue
        raise _Bad(f"session field {where}.{k} must be a number, found {_describe(v)}")


def session_problem(doc: dict[str, Any]) -> str | None:
    """The first wrong-typed field of a session document, as one line; None when it is fine."""
    try:
        for key, want in _TOP.items():
            if key in doc:
                _check(doc[key], want, key)
        if doc.get("exit_code") is not None:
            _check(doc["exit_code"], _INT, "exit_code")
        for i, c in enumerate(doc.get("command") or []):
            _check(c, _STR, f"command[{i}]")
        for i, m in enumerate(doc.get("errors") or []):
            _check(m, _STR, f"errors[{i}]")
        _numbers(doc.get("counters") or {}, "counters")
        for i, t in enumerate(doc.get("threads") or []):
            _fields(t, _THREAD, f"threads[{i}]")
        for i, e in enumerate(doc.get("entities") or []):
            where = f"entities[{i}]"
            _fields(e, _ENTITY, where)
            for j, t in enumerate(e.get("threads") or []):
                _check(t, _INT, f"{where}.threads[{j}]")
            for sub in ("measurements", "slcp", "scores"):
                _numbers(e.get(sub) or {}, f"{where}.{sub}", labels=sub != "measurements")
        for i, d in enumerate(doc.get("decisions") or []):
            _fields(d, _DECISION, f"decisions[{i}]")
        for i, a in enumerate(doc.get("actions") or []):
            _fields(a, _ACTION, f"actions[{i}]")
        agent = doc.get("agent") or {}
        if "cpu_s" in agent:
            _check(agent["cpu_s"], _NUMBER, "agent.cpu_s")
        otlp = (doc.get("export") or {}).get("otlp")
        if otlp is not None:
            _check(otlp, "an object", "export.otlp")
        for i, t in enumerate(doc.get("timeline") or []):
            _check(t, "an object", f"timeline[{i}]")
    except _Bad as e:
        return str(e)
    return None
