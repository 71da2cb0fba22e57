"""`--collapsed PATH`: Brendan Gregg's folded stacks, one line per distinct stack: `a;b;c COUNT`,
outermost frame first, COUNT the number of samples. What flamegraph.pl, inferno and speedscope
import.

A frame is written `function (file:line)` with the file's base name, so that two functions of the
same name in different files stay apart; `;` and newlines inside names become `:` and spaces
(the format has no escaping). The first element is the thread, `THREAD NAME (tid N)`, so that a
flame graph splits by thread as py-spy's does. Lines with the same text are merged.
"""
from __future__ import annotations

import os

from gyroscope.agent.profiles.store import StackStore
from gyroscope.agent.result import write_text_atomic
from gyroscope.bridges.events import Frame


def _clean(text: str) -> str:
    return text.replace(";", ":").replace("\n", " ").replace("\r", " ")


def frame_label(f: Frame) -> str:
    if not f.file:
        return _clean(f.function)
    return _clean(f"{f.function} ({os.path.basename(f.file)}:{f.line})")


def collapsed_lines(store: StackStore, by_thread: bool = True) -> list[str]:
    folded: dict[str, int] = {}
    for (pid, tid, stack, _state), v in store.rows.items():
        if v[0] <= 0:
            continue
        parts = [frame_label(store.frames[i]) for i in reversed(store.stacks[stack])]
        if by_thread:
            parts.insert(0, _clean(store.thread_label(pid, tid)))
        key = ";".join(parts)
        folded[key] = folded.get(key, 0) + v[0]
    return [f"{k} {n}" for k, n in sorted(folded.items(), key=lambda kv: -kv[1])]


def write_collapsed(path: str | os.PathLike[str], store: StackStore) -> None:
    """Write folded stacks, atomically."""
    lines = collapsed_lines(store)
    write_text_atomic(path, "\n".join(lines) + ("\n" if lines else ""))
