"""`--speedscope PATH`: the stack store in speedscope's file format (https://www.speedscope.app).

One "sampled" profile per thread (and process), named "THREAD NAME (tid N, pid P)"; frames are
shared (name, file, line); samples are outermost first as the format wants. Weights are wall
nanoseconds when the source recorded them (unit "nanoseconds"), else sample counts (unit "none").
Checked against the JSON schema the `speedscope` npm package ships (tests/fixtures/
speedscope-file-format-schema-1.25.0.json) in tests/test_profiles_writers.py.
"""
from __future__ import annotations

import os
from typing import Any

from gyroscope.agent.profiles.store import StackStore
from gyroscope.agent.result import write_json_atomic

SCHEMA_URL = "https://www.speedscope.app/file-format-schema.json"


def speedscope_document(store: StackStore, name: str = "gyroscope") -> dict[str, Any]:
    use_wall = any(v[1] for v in store.rows.values())
    frames: list[dict[str, Any]] = []
    index: dict[int, int] = {}
    per_thread: dict[tuple[int, int], tuple[list[list[int]], list[int]]] = {}
    for (pid, tid, stack, _state), v in store.rows.items():
        weight = v[1] if use_wall else v[0]
        if weight <= 0:
            continue
        ids = []
        for fi in reversed(store.stacks[stack]):
            j = index.get(fi)
            if j is None:
                f = store.frames[fi]
                j = index[fi] = len(frames)
                frame: dict[str, Any] = {"name": f.function or "?"}
                if f.file:
                    frame["file"] = f.file
                if f.line:
                    frame["line"] = f.line
                frames.append(frame)
            ids.append(j)
        samples, weights = per_thread.setdefault((pid, tid), ([], []))
        samples.append(ids)
        weights.append(int(weight))
    profiles = []
    for (pid, tid), (samples, weights) in sorted(per_thread.items()):
        profiles.append({"type": "sampled", "name": store.thread_label(pid, tid, pid_too=True),
                         "unit": "nanoseconds" if use_wall else "none", "startValue": 0,
                         "endValue": sum(weights), "samples": samples, "weights": weights})
    return {"$schema": SCHEMA_URL, "shared": {"frames": frames}, "profiles": profiles, "name": name,
            "activeProfileIndex": 0, "exporter": "gyroscope"}


def write_speedscope_profile(path: str | os.PathLike[str], store: StackStore, name: str = "gyroscope") -> None:
    """Write the store as a speedscope file, atomically."""
    write_json_atomic(path, speedscope_document(store, name))
