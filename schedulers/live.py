"""The program's view of gyroscope's live decisions (the feedback path of issue 16).

Under `gyroscope run`, the gyroscope process sends the current decisions back to every process
of the session once per report cycle; the in-process bridge (gyroscope.bridges._inproc) keeps
the latest set and exposes `live_decisions() -> (version, list[dict])`. This module is the one
place the program reads them:

    decisions() -> list[dict]   the latest decisions; [] when not under gyroscope or none yet
    version()   -> int          increments each time a new set of decisions arrives
    inject(decisions | None)    set decisions by hand (tests, programs driving a scheduler
                                themselves, benchmarks before the return path exists); None
                                clears the injected set and goes back to the bridge's
    report(action)              the other direction: a change the program made because of the
                                decisions (CoherenceExecutor's lanes), for the session's Actions

report(action) keeps a reference to the dict (the caller may go on updating it, e.g. the count of
tasks routed) and registers, once, a source with the bridge (`_inproc.add_source`): once per
window, and once more at the program's exit, the bridge calls it under the GIL and ships the
actions that changed since the last window as one EXTRA frame ("actions", [(index, dict)]; the
index is the action's place in this process's list, so gyroscope keeps the latest copy of each).
When not under gyroscope it does nothing (no bridge: nothing kept). At most MAX_REPORTED actions
per process are kept; later ones are counted and dropped. It never raises.

Cost: when not under gyroscope, `sys.modules.get` finds no bridge and the injected list is
returned: no I/O, no import (this module imports only `sys`). It never raises: a bridge whose
`live_decisions` is missing or fails is treated as "no decisions".

Decision dicts (agent/actuators.py, plus what the return path adds):
  action "specialize_hot_loop" | "mitigate_contention"; kind ("loop", "function", "lock",
  "wait", ...); file; function (qualified name); line; detail (lock kind for locks); pid;
  threads [native ids]; call_sites [[file, line], ...] (locks: where threads waited; may be
  empty); measurements {...}; protected_threads [native ids] (specialize_hot_loop under
  `gyroscope run --act priorities`, once the actuator has lowered other threads: the loop's
  threads, left at normal priority; absent otherwise).
"""
from __future__ import annotations

import sys
from typing import Any

_BRIDGE = "gyroscope.bridges._inproc"

MAX_REPORTED = 256

_injected: list[dict[str, Any]] = []
_injected_version = 0
_use_injected = False


def _from_bridge(copy: bool = True) -> tuple[int, list[dict[str, Any]]] | None:
    mod = sys.modules.get(_BRIDGE)
    if mod is None:
        return None
    fn = getattr(mod, "live_decisions", None)
    if fn is None:
        return None
    try:
        ver, decs = fn()
        return int(ver), (list(decs or ()) if copy else decs)
    except Exception:  # noqa: BLE001 - the feedback path must never break the program
        return None


def decisions() -> list[dict[str, Any]]:
    """The latest live decisions ([] when not under gyroscope or none yet). Do not mutate."""
    if not _use_injected:
        got = _from_bridge()
        if got is not None:
            return got[1]
    return _injected


def version() -> int:
    """A number that changes (increments) whenever a new set of decisions arrives.

    An injected set takes a number above the bridge's current one, so a reader that compares
    versions for inequality sees every change."""
    if not _use_injected:
        got = _from_bridge(copy=False)   # read at every executor pick: no copy of the list
        if got is not None:
            return got[0]
    return _injected_version


def inject(new: list[dict[str, Any]] | None) -> None:
    """Replace the live decisions by `new` (a list of decision dicts); None clears the injection."""
    global _injected, _injected_version, _use_injected
    got = _from_bridge()
    base = got[0] if got is not None else 0
    _injected_version = max(_injected_version, base) + 1
    if new is None:
        _injected, _use_injected = [], False
    else:
        _injected, _use_injected = [dict(d) for d in new], True


_reported: list[dict[str, Any]] = []    # live references (report())
_shipped: dict[int, bytes] = {}         # what was last shipped of each (its marshal), by index
_source_added = False
reported_dropped = 0


def report(action: dict[str, Any]) -> None:
    """Record a change the program made because of a live decision, for the session's Actions
    (agent/model.py Action; the dict holds marshal-able values: str, int, float, lists, dicts).
    Nothing happens when not under gyroscope. Never raises."""
    global _source_added, reported_dropped
    mod = sys.modules.get(_BRIDGE)
    if mod is None:
        return
    try:
        if not _source_added:
            mod.add_source(_drain)
            _source_added = True
        if len(_reported) >= MAX_REPORTED:
            reported_dropped += 1
            return
        _reported.append(action)
    except Exception:  # noqa: BLE001 - the feedback path must never break the program
        pass


def _drain() -> tuple[str, list[tuple[int, dict[str, Any]]]] | None:
    """The bridge's source (under the GIL, once per window): the reported actions that changed
    since the last call, as copies (marshal'd whole, so a dict another thread updates is copied
    in one piece)."""
    import marshal  # builtin, already loaded by the bridge
    out = []
    for i, a in enumerate(list(_reported)):
        try:
            b = marshal.dumps(a)
        except Exception:  # noqa: BLE001 - a value marshal cannot write: not shipped
            continue
        if _shipped.get(i) == b:
            continue
        _shipped[i] = b
        out.append((i, marshal.loads(b)))
    return ("actions", out) if out else None
