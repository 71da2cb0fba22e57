"""The call tree of a stack store, for the HTML report's flame graph.

Node: {"n": function, "f": "file:first_line", "r": samples on a CPU (state run), "a": all samples
(run, gil, wait), "c": [children]}; the root's children are the threads ("MainThread (tid 7)"),
then frames outermost first. Frames of one function (same name and file) merge whatever their line,
as in flamegraph.pl; the per-line view of a decided loop is agent/profiles/paths.line_shares.

Bounded: at most `max_nodes` nodes (default 20,000, ~1.5 MB of JSON); children that would exceed it
are counted into their parent's "(more frames)" child, so the widths stay exact.
"""
from __future__ import annotations

import os
from typing import Any

from gyroscope.agent.profiles.store import StackStore


def flame_tree(store: StackStore, max_nodes: int = 20_000) -> dict[str, Any]:
    root: dict[str, Any] = {"n": "all", "f": "", "r": 0, "a": 0, "c": {}}
    nodes = 1
    for (pid, tid, stack, state), v in store.rows.items():
        n = v[0]
        if n <= 0:
            continue
        run = n if state == "run" else 0
        path = [(store.thread_label(pid, tid), "")]
        for fi in reversed(store.stacks[stack]):
            f = store.frames[fi]
            # the function's identity: file and first line; without a first line (py-spy), the file alone,
            # never the current line (that would split one function into one node per sampled line)
            ident = (f"{os.path.basename(f.file)}:{f.first_line}" if f.first_line else os.path.basename(f.file)) \
                if f.file else ""
            path.append((f.function, ident))
        node = root
        node["r"] += run
        node["a"] += n
        for key in path:
            child = node["c"].get(key)
            if child is None:
                if nodes >= max_nodes:
                    key = ("(more frames)", "")
                    child = node["c"].get(key)
                if child is None:
                    child = node["c"][key] = {"n": key[0], "f": key[1], "r": 0, "a": 0, "c": {}}
                    nodes += 1
            child["r"] += run
            child["a"] += n
            node = child
            if key[0] == "(more frames)":
                break

    def finish(node: dict[str, Any]) -> dict[str, Any]:
        kids = sorted(node["c"].values(), key=lambda c: -c["a"])
        out = {"n": node["n"], "f": node["f"], "r": node["r"], "a": node["a"]}
        if kids:
            out["c"] = [finish(k) for k in kids]
        return out

    return finish(root)
