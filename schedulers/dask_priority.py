"""Coherence priorities on dask.distributed (optional; `distributed` is imported lazily).

coherent_submit(client, fn, *args, data=..., coherence=..., **kwargs) submits with
priority = coherence_priority(coherence) (an int, higher runs first on a busy worker, as
dask's own priority= does). coherent_map does the same for client.map with one data item per
task. Deferred (coherence < defer_below) tasks get a priority below every non-deferred one,
like CoherenceExecutor, and are never dropped.

Live decisions (schedulers/live.py; the same matching as CoherenceExecutor, schedulers/matching.py):
  specialize_hot_loop: a task in the decided entity gets coherence 1.0 (priority 100, the top of
    the non-deferred range) unless coherence or data is given.
  mitigate_contention on a lock: the task asks for one unit of a dask worker resource, so a
    worker runs at most as many of them at once as it declares (dask's own bounded concurrency;
    `dask worker --resources "gyroscope-lock=1"`). The resource is lock_resource(rule) (one per
    lock) if some worker declares it, else the generic "gyroscope-lock"; when no worker declares
    either, no resource is added (a resource nobody has would leave the task waiting forever: never
    dropped) and the Action says so. One Action per lock, in `actions` (module level):
    {"action": "dask_lane", "lock": {file, function, line, detail}, "resource": name | None,
     "tasks": [...], "routed": n}.
A caller's own priority= or resources= always wins.
"""
from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from gyroscope.schedulers import live
from gyroscope.schedulers.coherence import coherence_score
from gyroscope.schedulers.executor import DEFAULT_COHERENCE, DEFER_BELOW, task_name
from gyroscope.schedulers.matching import Classifier, Rule, rules_from

GENERIC_RESOURCE = "gyroscope-lock"
RESOURCE_TTL_S = 5.0   # how long the workers' declared resources are trusted before asking again

actions: list[dict[str, Any]] = []
_mu = threading.Lock()
_state: dict[str, Any] = {"version": None, "classifier": Classifier([]), "lanes": {}}
_resources: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # client -> (monotonic time, names)


def lock_resource(rule: Rule) -> str:
    """The per-lock resource name: gyroscope-lock:<file basename>:<line>."""
    return f"{GENERIC_RESOURCE}:{os.path.basename(rule.file)}:{rule.key[2]}"


def _declared(client: Any) -> set[str]:
    import time
    now = time.monotonic()
    try:
        hit = _resources.get(client)
    except TypeError:  # not weak-referenceable: ask every time
        hit = None
    if hit is not None and now - hit[0] < RESOURCE_TTL_S:
        return hit[1]
    names: set[str] = set()
    try:
        for w in (client.scheduler_info().get("workers") or {}).values():
            names.update((w.get("resources") or {}).keys())
    except Exception:  # noqa: BLE001 - no resources known: add none
        pass
    try:
        _resources[client] = (now, names)
    except TypeError:
        pass
    return names


def _classifier() -> Classifier:
    v = live.version()
    with _mu:
        if v != _state["version"]:
            _state["version"], _state["classifier"] = v, Classifier(rules_from(live.decisions()))
        return _state["classifier"]


def _lane_action(rule: Rule, resource: str | None, fn: Any) -> None:
    with _mu:
        act = _state["lanes"].get(rule.key)
        if act is None:
            act = _state["lanes"][rule.key] = {
                "action": "dask_lane", "lock": {"file": rule.file, "function": rule.function, "line": rule.key[2],
                                                "detail": rule.detail},
                "resource": resource, "tasks": [], "routed": 0,
                "note": None if resource else "no worker declares gyroscope-lock: not bounded"}
            actions.append(act)
        act["routed"] += 1
        name = task_name(fn)
        if name not in act["tasks"] and len(act["tasks"]) < 32:
            act["tasks"].append(name)


def coherence_priority(coherence: float | None, defer_below: float = DEFER_BELOW) -> int:
    """Map coherence 0..1 to a dask priority: 0..100, minus 100 if deferred."""
    c = DEFAULT_COHERENCE if coherence is None else min(1.0, max(0.0, float(coherence)))
    return int(round(100 * c)) - (100 if c < defer_below else 0)


def coherent_submit(client: Any, fn: Callable[..., Any], /, *args: Any, data: Any = None,
                    coherence: float | None = None, defer_below: float = DEFER_BELOW, **kwargs: Any) -> Any:
    """client.submit with a priority from coherence (given, or coherence_score(data), or 1.0 for a
    task in a live specialize_hot_loop decision) and, for a task of a live decided lock, a worker
    resource (see the module docstring).

    `data` is only used for scoring; pass it to fn yourself (positionally) if fn needs it."""
    lock, hot = _classifier().classify(fn, args)
    if coherence is None and data is not None:
        coherence = coherence_score(data)
    if coherence is None and hot is not None:
        coherence = 1.0
    kwargs.setdefault("priority", coherence_priority(coherence, defer_below))
    if lock is not None:
        resource = None
        if "resources" not in kwargs:
            declared = _declared(client)
            resource = next((r for r in (lock_resource(lock), GENERIC_RESOURCE) if r in declared), None)
            if resource is not None:
                kwargs["resources"] = {resource: 1}
        _lane_action(lock, resource, fn)
    return client.submit(fn, *args, **kwargs)


def coherent_map(client: Any, fn: Callable[..., Any], items: Iterable[Any], /, *,
                 defer_below: float = DEFER_BELOW, **kwargs: Any) -> list[Any]:
    """fn(item) for each item, each task prioritised by coherence_score(item)."""
    return [coherent_submit(client, fn, item, data=item, defer_below=defer_below, **kwargs) for item in items]
