"""File sinks: a JSONL stream, a Chrome trace-event file (opens in Perfetto), and speedscope.

  StreamSink(path)   --stream PATH: one JSON object per line, each with "type":
                     "window" | "entity" | "decision" | "session"; flushed after every window.
  TraceSink(path)    --trace PATH: {"traceEvents": [...], "displayTimeUnit": "ms"}; windows are
                     complete events ("X") on an "agent" track, waits are "X" events on the
                     waiting thread's track, hot loops are counter events ("C", cpu share and
                     iterations/s), thread names are metadata events ("M"). Written atomically
                     at close (agent/outputs.py: atomic only for a regular file).
  write_speedscope(path, samples, name="gyroscope attach", unit="none") -> None
                     samples: iterable of (thread_name: str,
                                           frames: sequence of (function: str, file: str, line: int),
                                                   innermost first,
                                           weight: int | float)
                     writes one "sampled" profile per thread (speedscope file format 0.0.1).
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from typing import IO, TYPE_CHECKING, Any

from gyroscope.agent.outputs import check_writable, fsync_if_possible, open_stream
from gyroscope.agent.result import write_json_atomic
from gyroscope.agent.sinks.base import Window

if TYPE_CHECKING:
    from gyroscope.agent.model import SessionResult

_SPEEDSCOPE_SCHEMA = "https://www.speedscope.app/file-format-schema.json"


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), default=_default)


def _default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


class StreamSink:
    """JSONL stream of windows, entities, decisions and the final session; nothing buffered past a window."""
    name = "stream"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._f: IO[str] = open_stream(self.path)   # closed in close()

    def _write(self, rec: dict[str, Any]) -> None:
        self._f.write(_dumps(rec) + "\n")

    def on_window(self, window: Window) -> None:
        self._write({"type": "window", "index": window.index, "unix_start_s": window.unix_start_s,
                     "duration_s": (window.t_end_ns - window.t_start_ns) / 1e9, "counters": window.counters,
                     "threads": {str(k): v for k, v in window.threads.items()},
                     "entities": len(window.entities), "decisions": len(window.decisions),
                     "waits": len(window.waits)})
        for e in window.entities:
            self._write({"type": "entity", "window": window.index, **e})
        for d in window.decisions:
            self._write({"type": "decision", "window": window.index, **d})
        self._f.flush()

    def abort(self) -> None:
        """The session never started: close the file without a session record."""
        self._f.close()

    def close(self, result: SessionResult | None) -> None:
        """The closing record: the finished session without its entities, timeline and stacks."""
        if self._f.closed:
            return
        try:
            if result is not None:
                doc = result.to_json()
                self._write({"type": "session", **{k: v for k, v in doc.items()
                                                   if k not in ("entities", "timeline", "profile")},
                             "entities": len(result.entities)})
            self._f.flush()
            fsync_if_possible(self._f.fileno())
        finally:
            self._f.close()


class TraceSink:
    """Chrome trace-event JSON (Perfetto / chrome://tracing). Times in microseconds since the first window."""
    name = "trace"
    AGENT_TID = 0

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        # fail early (a bad path is the user's error, reported before the program runs), without
        # creating or opening anything: the path may be a FIFO, which would block here
        check_writable(self.path)
        self.events: list[dict[str, Any]] = []
        self.threads: dict[int, str] = {}
        self._t0_ns: int | None = None
        self._pid = 1

    def abort(self) -> None:
        """The session never started: write nothing."""
        self.events.clear()

    def _us(self, t_ns: int) -> float:
        if self._t0_ns is None:
            self._t0_ns = t_ns
        return (t_ns - self._t0_ns) / 1000.0

    def on_window(self, window: Window) -> None:
        self.threads.update(window.threads)
        ts = self._us(window.t_start_ns)
        dur = max(0.0, (window.t_end_ns - window.t_start_ns) / 1000.0)
        self.events.append({"name": f"window {window.index}", "cat": "window", "ph": "X", "ts": ts, "dur": dur,
                            "pid": self._pid, "tid": self.AGENT_TID,
                            "args": {"entities": len(window.entities), "decisions": len(window.decisions),
                                     **window.counters}})
        for w in window.waits:
            self.events.append({"name": f"wait entity {w.get('entity_id', 0)}", "cat": "wait", "ph": "X",
                                "ts": self._us(int(w.get("t_ns", window.t_start_ns))),
                                "dur": max(0.0, int(w.get("duration_ns", 0)) / 1000.0),
                                "pid": self._pid, "tid": w["thread"],
                                "args": {"entity_id": w.get("entity_id", 0)}})
        t_end = self._us(window.t_end_ns)
        for e in window.entities:
            m = e.get("measurements", {})
            if e.get("kind") == "loop" or m.get("iterations_per_s"):
                label = f"{e.get('function', '?')}:{e.get('line', 0)}"
                self.events.append({"name": f"hot {label}", "cat": "hot_loop", "ph": "C", "ts": t_end,
                                    "pid": self._pid, "tid": self.AGENT_TID,
                                    "args": {"cpu_share": float(m.get("cpu_share", 0.0)),
                                             "iterations_per_s": float(m.get("iterations_per_s", 0.0))}})
        for d in window.decisions:
            self.events.append({"name": f"{d.get('action', '')} {d.get('function', '')}:{d.get('line', 0)}",
                                "cat": "decision", "ph": "i", "s": "p", "ts": t_end, "pid": self._pid,
                                "tid": self.AGENT_TID,
                                "args": {k: v for k, v in d.items() if k != "evidence"}})

    def close(self, result: SessionResult | None) -> None:
        if result is None:   # the session never started: leave the file as it was
            return
        for t in result.threads:
            self.threads.setdefault(t.id, t.name)
        meta: list[dict[str, Any]] = [
            {"name": "process_name", "ph": "M", "pid": self._pid, "tid": 0,
             "args": {"name": f"gyroscope: {' '.join(result.command)}"}},
            {"name": "thread_name", "ph": "M", "pid": self._pid, "tid": self.AGENT_TID,
             "args": {"name": "gyroscope agent (windows)"}}]
        for tid, tname in sorted(self.threads.items()):
            if tid != self.AGENT_TID:
                meta.append({"name": "thread_name", "ph": "M", "pid": self._pid, "tid": tid,
                             "args": {"name": f"{tname} ({tid})"}})
        write_json_atomic(self.path, {"traceEvents": meta + self.events, "displayTimeUnit": "ms",
                                      "otherData": {"schema": result.schema, "pid": result.pid}})


def write_speedscope(path: str | os.PathLike[str],
                     samples: Iterable[tuple[str, Sequence[tuple[str, str, int]], int | float]],
                     name: str = "gyroscope attach", unit: str = "none") -> None:
    """Write attach samples as a speedscope file: one sampled profile per thread, written atomically."""
    frames: list[dict[str, Any]] = []
    index: dict[tuple[str, str, int], int] = {}
    per_thread: dict[str, tuple[list[list[int]], list[float]]] = {}
    for thread_name, stack, weight in samples:
        ids = []
        for fn, file, line in reversed(list(stack)):   # speedscope wants outermost first
            key = (str(fn), str(file), int(line or 0))
            i = index.get(key)
            if i is None:
                i = index[key] = len(frames)
                frames.append({"name": key[0], "file": key[1], "line": key[2]})
            ids.append(i)
        s, w = per_thread.setdefault(str(thread_name), ([], []))
        s.append(ids)
        w.append(weight)
    profiles = [{"type": "sampled", "name": tname, "unit": unit, "startValue": 0,
                 "endValue": sum(w), "samples": s, "weights": w} for tname, (s, w) in per_thread.items()]
    write_json_atomic(path, {"$schema": _SPEEDSCOPE_SCHEMA, "shared": {"frames": frames}, "profiles": profiles,
                             "name": name, "activeProfileIndex": 0, "exporter": "gyroscope"})
