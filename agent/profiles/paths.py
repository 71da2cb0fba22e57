"""Where a decided place sits in the call tree, from the stack store: the hottest call path that
reaches it, and the share of its samples per source line (for the summary and the HTML report).

A place (a decision or an entity: file, function, line, kind) matches a frame of a stack when the
file is the same and the function names agree (qualified or not: `Grid.relax` matches `relax`).
The innermost matching frame of a stack is where the place is; the frames outside it are its call
path. Stacks are weighted by samples in state "run" for code (loops, functions) and in state
"wait" for locks and waits, so a hot loop's path is the path that spends CPU there.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from gyroscope.agent.profiles.store import StackStore
from gyroscope.bridges.events import Frame


@dataclass(frozen=True, slots=True)
class CallPath:
    frames: tuple[Frame, ...]   # outermost first, ending at the place itself
    samples: int                # samples of this path
    share: float                # of all samples at the place (0..1)
    place_samples: int          # all samples at the place


def _names_match(a: str, b: str) -> bool:
    return a == b or a.endswith("." + b) or b.endswith("." + a)


def _matches(f: Frame, file: str, function: str) -> bool:
    return bool(function) and _names_match(f.function, function) and (
        not file or not f.file or f.file == file or os.path.basename(f.file) == os.path.basename(file))


def _states(kind: str) -> tuple[str, ...]:
    return ("wait",) if kind in ("lock", "wait") else ("run",)


def _place_rows(store: StackStore, place: dict[str, Any]) -> list[tuple[tuple[Frame, ...], int, int]]:
    """(frames innermost first, index of the innermost matching frame, samples) for every matching row."""
    file, function = str(place.get("file", "")), str(place.get("function", ""))
    kind = str(place.get("entity_kind") or place.get("kind") or "")
    states = _states(kind)
    out = []
    for (_pid, _tid, stack, state), v in store.rows.items():
        if state not in states or v[0] <= 0:
            continue
        frames = store.frames_of(stack)
        for i, f in enumerate(frames):
            if _matches(f, file, function):
                out.append((frames, i, v[0]))
                break
    return out


def hottest_path(store: StackStore, place: dict[str, Any]) -> CallPath | None:
    """The call path (outermost first) that brings the most samples to `place`; None if no stack reaches it."""
    rows = _place_rows(store, place)
    if not rows:
        return None
    by_path: dict[tuple[Frame, ...], int] = {}
    for frames, i, n in rows:
        path = tuple(reversed(frames[i:]))
        # the place's own frame: keep the function, not the line inside it (lines vary within a loop)
        last = path[-1]
        path = path[:-1] + (Frame(last.file, last.function, int(place.get("line", 0) or last.line), last.first_line),)
        by_path[path] = by_path.get(path, 0) + n
    total = sum(by_path.values())
    path, n = max(by_path.items(), key=lambda kv: (kv[1], -len(kv[0])))
    return CallPath(path, n, n / total if total else 0.0, total)


def line_shares(store: StackStore, place: dict[str, Any]) -> list[dict[str, Any]]:
    """Samples per source line of the place's function (the lines of a loop and around it), most
    sampled first: [{"line", "samples", "share"}] with share of all the place's samples."""
    per_line: dict[int, int] = {}
    for frames, i, n in _place_rows(store, place):
        per_line[frames[i].line] = per_line.get(frames[i].line, 0) + n
    total = sum(per_line.values())
    return [{"line": ln, "samples": n, "share": n / total if total else 0.0}
            for ln, n in sorted(per_line.items(), key=lambda kv: -kv[1])]


def frame_text(f: Frame) -> str:
    return f"{f.function} ({os.path.basename(f.file)}:{f.line})" if f.file else f.function


def path_text(path: CallPath, max_frames: int = 6) -> str:
    """`a (x.py:3) > b (x.py:9) > c (x.py:12)`, long paths shortened in the middle."""
    frames = [frame_text(f) for f in path.frames]
    if len(frames) > max_frames:
        keep = max_frames - 1
        frames = frames[: keep // 2] + [f"... {len(frames) - keep} frames ..."] + frames[len(frames) - (keep - keep // 2):]
    return " > ".join(frames)


def source_lines(file: str, lines: list[int], context: int = 0) -> dict[int, str]:
    """The text of the given source lines (stripped of the trailing newline); {} if the file is unreadable."""
    if not file or not lines:
        return {}
    try:
        with open(file, encoding="utf-8", errors="replace") as fh:
            text = fh.read().splitlines()
    except OSError:
        return {}
    lo, hi = max(1, min(lines) - context), max(lines) + context
    return {i: text[i - 1] for i in range(lo, min(hi, len(text)) + 1)}
