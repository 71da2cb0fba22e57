"""The terminal summary printed at the end of a session (and by `gyroscope report`).

Order: decisions first, each as a sentence ("the loop at app.py:12 in `crunch` took 71% of the
program's sampled CPU at 800.0k iterations/s; reached from main (app.py:34)"), the hottest call path
that leads to it (from the session's sampled stacks, agent/profiles/paths.py) and one line of key
evidence (scores, measurements); then the top loops
(cpu share, iterations/s), the top waits (total / mean wait, waiting threads), then the counters
(samples, events, dropped, errors). Rendered with rich; plain text (no ANSI codes) when the
stream is not a terminal. `LiveStatus` is the one-line live status used while attached.
"""
from __future__ import annotations

import os
from typing import Any, TextIO

TOP_N = 8
_KEY_EVIDENCE = ("iterations_per_s", "cpu_share", "wait_s_total", "wait_s_mean", "waiting_threads", "samples_running")


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except Exception:  # noqa: BLE001
        return False


def _table(title: str, tty: bool):
    from rich import box
    from rich.table import Table

    return Table(title=title, title_justify="left", show_edge=False, pad_edge=False,
                 box=box.SIMPLE_HEAVY if tty else box.ASCII2)


def _console(stream: TextIO):
    from rich.console import Console

    tty = _isatty(stream)
    width = None if tty else max(160, int(os.environ.get("COLUMNS", "0") or 0))
    return Console(file=stream, force_terminal=tty, no_color=not tty, color_system="auto" if tty else None,
                   highlight=False, width=width, soft_wrap=False, emoji=False)


def short_path(path: str) -> str:
    try:
        rel = os.path.relpath(path)
        return rel if not rel.startswith("../..") else path
    except ValueError:
        return path


def fmt_num(v: Any) -> str:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return str(v)
    if x != x:
        return "nan"
    if abs(x) >= 1e6:
        return f"{x / 1e6:.2f}M"
    if abs(x) >= 1e4:
        return f"{x / 1e3:.1f}k"
    if x == int(x) and abs(x) < 1e4:
        return str(int(x))
    return f"{x:.3g}"


def fmt_s(v: Any) -> str:
    x = float(v or 0.0)
    if x == 0:
        return "0"
    if x < 1e-3:
        return f"{x * 1e6:.0f}us"
    if x < 1:
        return f"{x * 1e3:.1f}ms"
    return f"{x:.2f}s"


def evidence_text(ev: dict[str, Any], limit: int = 4) -> str:
    parts = []
    for k in _KEY_EVIDENCE:
        if k in ev:
            v = ev[k]
            parts.append(f"{k}={fmt_s(v) if k.startswith('wait_s') else (f'{float(v):.0%}' if k == 'cpu_share' else fmt_num(v))}")
    for k, v in ev.items():
        if len(parts) >= limit:
            break
        if k not in _KEY_EVIDENCE and isinstance(v, (int, float)) and not isinstance(v, bool):
            parts.append(f"{k}={fmt_num(v)}")
    return ", ".join(parts[:limit])


def top_loops(result: dict[str, Any], n: int = TOP_N) -> list[dict[str, Any]]:
    ents = [e for e in result.get("entities") or [] if e.get("kind") in ("loop", "function")]
    ents = [e for e in ents if (e.get("measurements") or {}).get("cpu_share", 0)
            or (e.get("measurements") or {}).get("iterations", 0)]
    ents.sort(key=lambda e: (-(e.get("measurements") or {}).get("cpu_share", 0.0),
                             -(e.get("measurements") or {}).get("iterations_per_s", 0.0)))
    return ents[:n]


def top_waits(result: dict[str, Any], n: int = TOP_N) -> list[dict[str, Any]]:
    ents = [e for e in result.get("entities") or [] if e.get("kind") in ("lock", "wait")
            and ((e.get("measurements") or {}).get("wait_s_total", 0) or (e.get("measurements") or {}).get("samples_waiting", 0))]
    ents.sort(key=lambda e: (-(e.get("measurements") or {}).get("wait_s_total", 0.0),
                             -(e.get("measurements") or {}).get("samples_waiting", 0)))
    return ents[:n]


def decision_paths(result: dict[str, Any], decisions: list[dict[str, Any]]) -> list[tuple[dict[str, Any], Any]]:
    """Each decision with the hottest call path leading to it (None when the session kept no stacks
    that reach it). Never raises: a malformed profile only loses the paths."""
    try:
        from gyroscope.agent.profiles.paths import hottest_path
        from gyroscope.agent.profiles.store import store_from_result

        store = store_from_result(result)
        return [(d, hottest_path(store, d)) for d in decisions]
    except Exception:  # noqa: BLE001
        return [(d, None) for d in decisions]


def _print_decision(con: Any, i: int, d: dict[str, Any], path: Any, tty: bool) -> None:
    from gyroscope.agent.decision_text import decision_sentence
    from gyroscope.agent.profiles.paths import path_text
    from rich.text import Text

    style = {"specialize_hot_loop": "bold red", "mitigate_contention": "bold blue"}.get(str(d.get("action")), "")
    line = Text(f"  {i}. ")
    line.append(str(d.get("action", "")), style=style if tty else "")
    line.append(f": {decision_sentence(d, path)}")
    con.print(line, soft_wrap=True)
    if path is not None:
        con.print(Text(f"     hottest path ({path.share:.0%} of {path.place_samples} samples there): "
                       f"{path_text(path)}"), soft_wrap=True)
    con.print(Text(f"     evidence: hot {float(d.get('hot_loop_score', 0) or 0):.2f}, contention "
                   f"{float(d.get('contention_score', 0) or 0):.2f}, {evidence_text(d.get('evidence') or {})}",
                   style="dim" if tty else ""), soft_wrap=True)


def print_summary(result: dict[str, Any], stream: TextIO, quiet: bool = False) -> None:
    """Print decisions first, then top loops and top waits, with their evidence."""
    if quiet:
        return
    from rich.text import Text

    con = _console(stream)
    tty = _isatty(stream)
    cmd = " ".join(str(c) for c in result.get("command") or [])
    con.print(Text(f"gyroscope {result.get('source', '')}: {cmd}  ({float(result.get('duration_s', 0) or 0):.2f}s, "
                   f"{result.get('windows', 0)} windows, pid {result.get('pid', '?')})", style="bold"))
    decisions = [d for d in result.get("decisions") or [] if d.get("action") != "observe"]
    if decisions:
        con.print(Text("Decisions", style="bold" if tty else ""))
        for i, (d, path) in enumerate(decision_paths(result, decisions), 1):
            _print_decision(con, i, d, path, tty)
    else:
        con.print("Decisions: none (nothing crossed the hot-loop or contention thresholds)")
    loops = top_loops(result)
    if loops:
        t = _table("Top loops", tty)
        for col in ("kind", "function", "where", "cpu share", "iterations/s", "threads"):
            t.add_column(col, justify="right" if col in ("cpu share", "iterations/s", "threads") else "left",
                         overflow="fold")
        for e in loops:
            m = e.get("measurements") or {}
            t.add_row(str(e.get("kind", "")), str(e.get("function", "")),
                      f"{short_path(str(e.get('file', '')))}:{e.get('line', 0)}",
                      f"{float(m.get('cpu_share', 0) or 0):.1%}", fmt_num(m.get("iterations_per_s", 0)),
                      str(len(e.get("threads") or [])))
        con.print(t)
    waits = top_waits(result)
    if waits:
        t = _table("Top waits", tty)
        for col in ("kind", "function", "where", "wait total", "wait mean", "waits", "waiting threads"):
            t.add_column(col, justify="left" if col in ("kind", "function", "where") else "right", overflow="fold")
        for e in waits:
            m = e.get("measurements") or {}
            kind = str(e.get("kind", "")) + (f" [{e['detail']}]" if e.get("detail") else "")
            t.add_row(kind, str(e.get("function", "")), f"{short_path(str(e.get('file', '')))}:{e.get('line', 0)}",
                      fmt_s(m.get("wait_s_total", 0)), fmt_s(m.get("wait_s_mean", 0)), fmt_num(m.get("waits", 0)),
                      str(m.get("waiting_threads", 0)))
        con.print(t)
    actions = result.get("actions") or []
    if actions:
        t = _table("Actions (changes made to the program)", tty)
        for col in ("action", "thread", "mechanism", "change", "result", "reason"):
            t.add_column(col, overflow="fold")
        for a in actions:
            t.add_row(str(a.get("action", "")), str(a.get("thread", "")), str(a.get("mechanism", "")),
                      f"{a.get('from')} -> {a.get('to')}", "ok" if a.get("ok") else f"not done: {a.get('error')}",
                      str(a.get("reason", "")))
        con.print(t)
    c = result.get("counters") or {}
    errors = result.get("errors") or []
    line = (f"samples {fmt_num(c.get('samples', 0))} | events {fmt_num(c.get('events', 0))} "
            f"(raw {fmt_num(c.get('raw_events', 0))}) | dropped {fmt_num(c.get('dropped', 0))} | "
            f"errors {len(errors)} | agent cpu {float((result.get('agent') or {}).get('cpu_s', 0) or 0):.2f}s")
    otlp = (result.get("export") or {}).get("otlp")
    if otlp:
        prof = otlp.get("profiles") if isinstance(otlp.get("profiles"), dict) else None
        line += (f" | otlp {otlp.get('spans', 0)} spans, {otlp.get('logs', 0)} logs, "
                 + (f"{prof.get('profiles', 0)} profiles, " if prof else "")
                 + f"{otlp.get('dropped', 0)} dropped, {otlp.get('failed', 0)} failed")
    con.print(Text(line))
    for e in errors[:5]:
        con.print(Text(f"  error: {e}"))
    if len(errors) > 5:
        con.print(Text(f"  ... {len(errors) - 5} more errors in the session file"))


class LiveStatus:
    """One status line rewritten in place (attach). Silent when the stream is not a terminal or quiet."""

    def __init__(self, stream: TextIO, quiet: bool = False) -> None:
        self.stream = stream
        self.enabled = not quiet and _isatty(stream)
        self._width = 0

    def update(self, window_summary: dict[str, Any]) -> None:
        """window_summary: {"elapsed_s", "windows", "samples", "dropped", "top": str, "decisions": int} (any subset)."""
        if not self.enabled:
            return
        w = window_summary
        parts = [f"{float(w.get('elapsed_s', 0) or 0):6.1f}s"]
        for k in ("windows", "samples", "dropped", "decisions"):
            if k in w:
                parts.append(f"{k} {fmt_num(w[k])}")
        if w.get("top"):
            parts.append(f"top: {w['top']}")
        text = "gyroscope " + " | ".join(parts)
        try:
            cols = os.get_terminal_size(self.stream.fileno()).columns
        except (OSError, ValueError, AttributeError):
            cols = 100
        text = text[: max(10, cols - 1)]
        self.stream.write("\r" + text + " " * max(0, self._width - len(text)))
        self.stream.flush()
        self._width = len(text)

    def close(self) -> None:
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0
