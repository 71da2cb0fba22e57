"""ProfileFilesSink: writes --pprof / --speedscope / --collapsed at the end of a session, from the
stack store the session put in result["profile"] (agent/profiles/store.py). `write_profile_files`
is the same step for `gyroscope report SESSION.json --pprof ...`.
"""
from __future__ import annotations

import os
from typing import Any

from gyroscope.agent.profiles.store import StackStore, store_from_result
from gyroscope.agent.sinks.base import SinkReport, Window

KINDS = ("pprof", "speedscope", "collapsed")


def write_profile_files(result: dict[str, Any], paths: dict[str, str], store: StackStore | None = None) -> list[str]:
    """Write each requested profile file (kind -> path). Returns what was written, as 'kind PATH'.
    OSError (a bad path) propagates; a session without stacks still gets (empty) files."""
    if store is None:
        store = store_from_result(result)
    written = []
    command = " ".join(str(c) for c in result.get("command") or [])
    name = f"gyroscope {result.get('source', '')}: {command}".strip()
    start_ns = int(float(result.get("started_unix_s", 0) or 0) * 1e9)
    dur_ns = int(float(result.get("duration_s", 0) or 0) * 1e9)
    for kind in KINDS:
        path = paths.get(kind)
        if not path:
            continue
        if kind == "pprof":
            from gyroscope.agent.profiles.pprof import write_pprof
            write_pprof(path, store, start_ns, dur_ns)
        elif kind == "speedscope":
            from gyroscope.agent.profiles.speedscope import write_speedscope_profile
            write_speedscope_profile(path, store, name)
        else:
            from gyroscope.agent.profiles.collapsed import write_collapsed
            write_collapsed(path, store)
        written.append(f"{kind} {path}")
    return written


class ProfileFilesSink:
    """Sink (agent.sinks.base): nothing per window; at close, the profile files from result["profile"]."""
    name = "profiles"

    def __init__(self, paths: dict[str, str]) -> None:
        self.paths = {k: os.path.abspath(v) for k, v in paths.items() if v}
        for p in self.paths.values():   # fail early: a bad path is the user's error, said before the program runs
            with open(p, "a", encoding="utf-8"):
                pass

    def on_window(self, window: Window) -> None:
        pass

    def close(self, result: Any) -> SinkReport | None:
        """Write the files from the finished session (SessionResult: its `profile` is an extra key)."""
        if result is None:
            return None
        prof = result.extra.get("profile")
        doc = {"profile": prof, "command": list(result.command), "source": result.source,
               "started_unix_s": result.started_unix_s, "duration_s": result.duration_s}
        try:
            written = write_profile_files(doc, self.paths)
        except OSError as e:
            return SinkReport(errors=[f"cannot write {e.filename}: {e.strerror or e}"])
        if isinstance(prof, dict):
            prof["files"] = written
        return None
