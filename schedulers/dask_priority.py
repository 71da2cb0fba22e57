"""Coherence priorities on dask.distributed (optional; `distributed` is imported lazily).

coherent_submit(client, fn, *args, data=..., coherence=..., **kwargs) submits with
priority = coherence_priority(coherence) (an int, higher runs first on a busy worker, as
dask's own priority= does). coherent_map does the same for client.map with one data item per
task. Deferred (coherence < defer_below) tasks get a priority below every non-deferred one,
like CoherenceExecutor, and are never dropped.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from gyroscope.schedulers.coherence import coherence_score
from gyroscope.schedulers.executor import DEFAULT_COHERENCE, DEFER_BELOW


def coherence_priority(coherence: float | None, defer_below: float = DEFER_BELOW) -> int:
    """Map coherence 0..1 to a dask priority: 0..100, minus 100 if deferred."""
    c = DEFAULT_COHERENCE if coherence is None else min(1.0, max(0.0, float(coherence)))
    return int(round(100 * c)) - (100 if c < defer_below else 0)


def coherent_submit(client: Any, fn: Callable[..., Any], /, *args: Any, data: Any = None,
                    coherence: float | None = None, defer_below: float = DEFER_BELOW, **kwargs: Any) -> Any:
    """client.submit with a priority from coherence (given, or coherence_score(data)).

    `data` is only used for scoring; pass it to fn yourself (positionally) if fn needs it."""
    if coherence is None and data is not None:
        coherence = coherence_score(data)
    kwargs.setdefault("priority", coherence_priority(coherence, defer_below))
    return client.submit(fn, *args, **kwargs)


def coherent_map(client: Any, fn: Callable[..., Any], items: Iterable[Any], /, *,
                 defer_below: float = DEFER_BELOW, **kwargs: Any) -> list[Any]:
    """fn(item) for each item, each task prioritised by coherence_score(item)."""
    return [coherent_submit(client, fn, item, data=item, defer_below=defer_below, **kwargs) for item in items]
