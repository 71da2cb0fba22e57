"""Decisions as sentences, for the terminal summary and the HTML report; the raw evidence (scores,
thresholds, kernel fields) stays in the decision's "evidence" and is shown folded behind it.

    the loop at quickstart.py:16 in `checksum` took 95% of the program's sampled CPU at 19.0M
    iterations/s; reached from main (main.py:34)
    the lock at app.py:30 in `bump` kept 2 threads waiting 1.84s in all (400 waits, 4.6ms each on
    average, 12% of the threads' time); reached from worker (app.py:28)
"""
from __future__ import annotations

import os
from typing import Any

from gyroscope.agent.profiles.paths import CallPath, frame_text
from gyroscope.bridges.events import Frame


def _num(v: Any) -> str:
    x = float(v or 0)
    if abs(x) >= 1e6:
        return f"{x / 1e6:.1f}M"
    if abs(x) >= 1e4:
        return f"{x / 1e3:.1f}k"
    return f"{x:.0f}" if x == int(x) else f"{x:.3g}"


def _secs(v: Any) -> str:
    x = float(v or 0)
    if x < 1e-3:
        return f"{x * 1e6:.0f}us"
    if x < 1:
        return f"{x * 1e3:.1f}ms"
    return f"{x:.2f}s"


def where(d: dict[str, Any]) -> str:
    return f"{os.path.basename(str(d.get('file', '')))}:{d.get('line', 0)}"


def decision_sentence(d: dict[str, Any], path: CallPath | None = None) -> str:
    """One sentence saying what was decided and the measurement it rests on."""
    ev = d.get("evidence") or {}
    kind = str(d.get("entity_kind", "") or "code")
    fn = str(d.get("function", ""))
    action = d.get("action")
    if action == "specialize_hot_loop":
        s = f"the {kind} at {where(d)} in `{fn}` took {float(ev.get('cpu_share', 0) or 0):.0%} of the program's sampled CPU"
        if ev.get("iterations_per_s"):
            s += f" at {_num(ev['iterations_per_s'])} iterations/s"
    elif action == "mitigate_contention" and kind == "event_loop":
        n = int(ev.get("waits", 0) or 0)
        s = (f"the coroutine `{fn}` at {where(d)} blocked the event loop {n} time{'s' if n != 1 else ''} "
             f"for {_secs(ev.get('wait_s_total', 0))} in all ({_secs(ev.get('wait_s_mean', 0))} each on average, "
             f"every other task of the loop waited meanwhile)")
    elif action == "mitigate_contention":
        n = int(ev.get("waiting_threads", 0) or 0)
        s = (f"the {kind} at {where(d)} in `{fn}` kept {n} thread{'s' if n != 1 else ''} waiting "
             f"{_secs(ev.get('wait_s_total', 0))} in all")
        extra = []
        if ev.get("waits"):
            extra.append(f"{_num(ev['waits'])} waits, {_secs(ev.get('wait_s_mean', 0))} each on average")
        if ev.get("wait_share"):
            extra.append(f"{float(ev['wait_share']):.0%} of the threads' time")
        if extra:
            s += f" ({', '.join(extra)})"
    else:
        s = f"{action} on the {kind} at {where(d)} in `{fn}`"
    caller = _caller(path)
    if caller is not None:
        s += f"; reached from {frame_text(caller)}"
    return s


def _is_stdlib(file: str) -> bool:
    return "/lib/python3" in file and "-packages/" not in file


def _caller(path: CallPath | None) -> Frame | None:
    """The nearest caller in the program's own code (bridges/owncode.py: a library's loop is
    reached from the program's line that leads to it), else in a library, skipping the standard
    library's plumbing (threading's Thread.run, asyncio's event loop) when something else calls
    the place."""
    if path is None or len(path.frames) < 2:
        return None
    from gyroscope.bridges.owncode import looks_like_program
    callers = path.frames[:-1]
    if not looks_like_program(path.frames[-1].file):
        for f in reversed(callers):
            if looks_like_program(f.file):
                return f
    for f in reversed(callers):
        if not _is_stdlib(f.file):
            return f
    return callers[-1]


def evidence_pairs(d: dict[str, Any]) -> list[tuple[str, str]]:
    """Every piece of raw evidence as (name, value text), scores first."""
    out = [("hot_loop_score", f"{float(d.get('hot_loop_score', 0) or 0):.3f}"),
           ("contention_score", f"{float(d.get('contention_score', 0) or 0):.3f}")]
    for k, v in (d.get("evidence") or {}).items():
        if isinstance(v, (dict, list)):
            continue
        if isinstance(v, float):
            v = _secs(v) if k.startswith("wait_s") else (f"{v:.1%}" if k.endswith("share") else f"{v:.4g}")
        out.append((str(k), str(v)))
    return out
