"""The terminal summary printed at the end of a session (and by `gyroscope report`).

Order: decisions first, each as a sentence ("the loop at app.py:12 in `crunch` took 71% of the
program's sampled CPU at 800.0k iterations/s; reached from main (app.py:34)"), the hottest call path
that leads to it (from the session's sampled stacks, agent/profiles/paths.py) and one line of key
evidence (scores, measurements); then the top loops
(cpu share, the share of it in library or native calls, iterations/s), the top waits (total / mean wait, waiting threads), then the counters
(samples, events, dropped, errors). Rendered with rich; plain text (no ANSI codes) when the
stream is not a terminal. The renderer of agent/render.py ("summary") wraps print_summary.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from gyroscope.agent.model import EntityRecord, SessionResult

TOP_N = 8
_KEY_EVIDENCE = ("iterations_per_s", "cpu_share", "wait_s_total", "wait_s_mean", "waiting_threads", "samples_running")


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except Exception:  # noqa: BLE001
        return False


def _in_calls(x: dict) -> str:
    """The share of a loop's or function's time spent in what it calls rather than its own
    bytecode: library code (sampled leaves, `library_share`) or native code (`native_share`, an
    estimate from exact counts), e.g. "lib 97%", "native 82%"; "" when neither is >= 5%."""
    lib, nat = float(x.get("library_share", 0.0) or 0.0), float(x.get("native_share", 0.0) or 0.0)
    parts = [f"lib {lib:.0%}"] if lib >= 0.05 else []
    if nat >= 0.05:
        parts.append(f"native {nat:.0%}")
    return ", ".join(parts)


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


def _counted(v: float) -> str:
    """A count or rate the counters made, or "-" when they made none (seen by the samples only)."""
    return fmt_num(v) if v > 0 else "-"


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


def fmt_s(v: float) -> str:
    x = float(v)
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


def top_loops(result: SessionResult, n: int = TOP_N) -> list[EntityRecord]:
    """Loops and functions that used CPU or iterated, most CPU first."""
    ents = [e for e in result.entities if e.kind in ("loop", "function")
            and (e.measurements.cpu_share or e.measurements.iterations)]
    ents.sort(key=lambda e: (-e.measurements.cpu_share, -e.measurements.iterations_per_s))
    return ents[:n]


def top_waits(result: SessionResult, n: int = TOP_N) -> list[EntityRecord]:
    """Locks and waits where threads were blocked, most blocked time first."""
    ents = [e for e in result.entities if e.kind in ("lock", "wait")
            and (e.measurements.wait_s_total or e.measurements.samples_waiting)]
    ents.sort(key=lambda e: (-e.measurements.wait_s_total, -e.measurements.samples_waiting))
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


def print_summary(result: SessionResult, stream: TextIO, quiet: bool = False) -> None:
    """Print decisions first, then top loops and top waits, with their evidence."""
    if quiet:
        return
    from rich.text import Text

    con = _console(stream)
    tty = _isatty(stream)
    cmd = " ".join(result.command)
    con.print(Text(f"gyroscope {result.source}: {cmd}  ({result.duration_s:.2f}s, "
                   f"{result.windows} windows, pid {result.pid})", style="bold"))
    if len(result.processes) > 1:   # the program's other processes, with what each has of the session
        per_pid: dict[int, int] = {}
        for e in result.entities:
            per_pid[e.pid or result.pid] = per_pid.get(e.pid or result.pid, 0) + 1
        parts = [f"{p.pid}{' (main)' if i == 0 else ''} {per_pid.get(p.pid, 0)} entities"
                 for i, p in enumerate(result.processes[:8])]
        more = f", +{len(result.processes) - 8} more" if len(result.processes) > 8 else ""
        con.print(f"Processes: {len(result.processes)}: " + ", ".join(parts) + more)
    decisions = [d for d in result.decisions if d.action != "observe"]
    if decisions:
        con.print(Text("Decisions", style="bold" if tty else ""))
        profile = {"profile": result.extra.get("profile")}
        for i, (d, path) in enumerate(decision_paths(profile, [d.to_json() for d in decisions]), 1):
            _print_decision(con, i, d, path, tty)
    else:
        con.print("Decisions: none (nothing crossed the hot-loop or contention thresholds)")
    loops = top_loops(result)
    if loops:
        t = _table("Top loops", tty)
        right = ("cpu share", "in calls", "iterations/s", "threads")
        for col in ("kind", "function", "where", "cpu share", "in calls", "iterations/s", "threads"):
            t.add_column(col, justify="right" if col in right else "left", overflow="fold")
        for e in loops:
            m = e.measurements
            t.add_row(e.kind, e.function, f"{short_path(e.file)}:{e.line}", f"{m.cpu_share:.1%}",
                      _in_calls(m.extra), _counted(m.iterations_per_s), str(len(e.threads)))
        con.print(t)
    waits = top_waits(result)
    if waits:
        t = _table("Top waits", tty)
        for col in ("kind", "function", "where", "wait total", "wait mean", "waits", "waiting threads"):
            t.add_column(col, justify="left" if col in ("kind", "function", "where") else "right", overflow="fold")
        for e in waits:
            m = e.measurements
            kind = e.kind + (f" [{e.detail}]" if e.detail else "")
            t.add_row(kind, e.function, f"{short_path(e.file)}:{e.line}", fmt_s(m.wait_s_total),
                      fmt_s(m.wait_s_mean), _counted(m.waits), str(m.waiting_threads))
        con.print(t)
    if result.actions:
        t = _table("Actions (changes made to the program)", tty)
        for col in ("action", "thread", "mechanism", "change", "result", "reason"):
            t.add_column(col, overflow="fold")
        for a in result.actions:
            t.add_row(a.action, str(a.thread), a.mechanism, f"{a.from_} -> {a.to}",
                      "ok" if a.ok else f"not done: {a.error}", a.reason)
        con.print(t)
    c = result.counters
    errors = result.errors
    line = (f"samples {fmt_num(c.samples)} | events {fmt_num(c.events)} (raw {fmt_num(c.raw_events)}) | "
            f"dropped {fmt_num(c.dropped)} | errors {len(errors)} | agent cpu {result.agent.cpu_s:.2f}s")
    otlp = result.export.otlp if result.export is not None else None
    if otlp is not None:
        prof = otlp.extra.get("profiles") if isinstance(otlp.extra.get("profiles"), dict) else None
        line += (f" | otlp {otlp.spans} spans, {otlp.logs} logs, "
                 + (f"{prof.get('profiles', 0)} profiles, " if prof else "")
                 + f"{otlp.dropped} dropped, {otlp.failed} failed")
    con.print(Text(line))
    for e in errors[:5]:
        con.print(Text(f"  error: {e}"))
    if len(errors) > 5:
        con.print(Text(f"  ... {len(errors) - 5} more errors in the session file"))
