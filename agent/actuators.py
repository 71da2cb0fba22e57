"""Actuators: turn entity records into decisions (spec 002 §25.1, Appendix B.1).

Structural scores (spec 002 §25.1, reference weights), from the entity's primary kernel cell:
  support  = chi_support_ratio   (distinct chi6 values in the cell's history / valid length)
  entropy  = shell_entropy       (entropy of the 7-shell histogram / log2 7)
  peak     = spectral_peak_ratio (max |spectral64| / its L2 norm)
  hot_loop_score   = 0.5 (1 - support) + 0.3 (1 - entropy) + 0.2 peak
  contention_score = 0.5 support       + 0.3 entropy       + 0.2 (1 - peak)
  structural action: specialize_hot_loop if hot >= 0.58 and hot > contention + 0.03,
  mitigate_contention if contention >= 0.58 and contention > hot + 0.03, else observe.
  (The two scores always sum to 1, so the 0.03 margin is implied by the 0.58 threshold.)

The decision rule. On real programs the structural action alone is not right: the cell of a
steady hot loop (hot_loop_numeric's inner loop) scores hot 0.57 / contention 0.43 ("observe"),
a cell fed one constant word cannot exceed 0.56, and short-lived cells with few kernel steps
(a 0.3 s crunch thread) look "dispersed". So an action is taken when the direct measurements
show it matters; the structural scores travel with it and rank decisions of the same action.
  specialize_hot_loop: a loop (or a function with no hot loop of its own) of the program's own
  code, or a library loop the program's time went to, with
    cpu_share       >= 0.25  its share of the program's sampled running time;
    running_share   >= 0.05  it ran for >= 5% of the session's wall time (run_s_total /
                             duration_s, or its running samples / the session's samples);
    samples_running >= 3     enough evidence;
    idle_share      <  0.5   its threads are not mostly blocked (sleep, I/O, lock) in its function:
                             neither for half the session (wait_s_total / (duration_s x threads))
                             nor for half the time they spend in the function (blocked / (blocked
                             + running) over the function's entities) -- see idle_share();
    native_share    <  0.7   its time is not mostly in native calls (agent/measure.py);
    library_share   <  0.7   nor in library code it calls (sampled leaves): then the library's
                             loop where that time went is the candidate (it is decided under the
                             same rule, in whatever file it lives, with the program's line that
                             leads to it in the summary), never the entry point that calls it;
    and it does not enclose a contended lock of its function (starts on or before the lock's
    line, runs in threads that wait on it): that is lock hand-over churn (threads queued for
    the GIL behind the lock are sampled as running), and the action there is contention.
  mitigate_contention: a lock (acquire or Condition.wait of a synchronisation object; sleeps,
  I/O and joins are "wait" entities and never contention) with
    waiting_threads >= 2     threads actually queue on it;
    wait_share      >= 0.05  its wait time / the session's thread-time (duration_s x threads);
    waits           >= 2     sampled wait episodes, or, for a profiled lock (measurements
                             marked exact), contended acquires with their measured waits.
All thresholds are relative (shares of the process's CPU, of wall time, of thread-time), so
they hold across sizes, thread counts and timings: a slow polling loop or an idle thread has no
CPU (or sleeps in its loop), a rarely contended lock has a tiny wait share. Every decision
carries its evidence: both scores, the structural action and its inputs, the measurements, the
shares computed from them and the rule that fired.
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gyroscope.agent.model import Decision, EntityRecord, Measurements, Scores, Slcp
from gyroscope.bridges.owncode import is_gyroscope, looks_like_program

HOT = "specialize_hot_loop"
CONTENTION = "mitigate_contention"
OBSERVE = "observe"

# Spec 002 §25.1 reference weights and action thresholds.
ACTION_THRESHOLD = 0.58
ACTION_MARGIN = 0.03

# The measurement gates of the decision rule (see the module docstring).
HOT_MIN_CPU_SHARE = 0.25
HOT_MIN_RUNNING_SHARE = 0.05
HOT_MIN_SAMPLES = 3
HOT_MAX_IDLE_SHARE = 0.5
CONT_MIN_WAITING_THREADS = 2
CONT_MIN_WAIT_SHARE = 0.05
CONT_MIN_WAITS = 2

HOT_KINDS = ("loop", "function")
HOT_MAX_NATIVE_SHARE = 0.7   # a loop whose time is mostly in native calls has no Python to specialize
HOT_MAX_LIBRARY_SHARE = 0.7  # ... nor one whose time is mostly in library code it calls: that library's loop is
CONTENTION_KINDS = ("lock",)
# an asyncio event loop is a shared resource too: a coroutine step that holds its thread
# >= 100 ms (bridges/_inproc.pyx LONG_STEP_NS) delays every other task of the loop
LOOP_KINDS = ("event_loop",)
LOOP_MIN_BLOCKS = 1
def _clip01(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return 0.0
    if math.isnan(v):
        return 0.0
    return min(1.0, max(0.0, v))


def hot_loop_score(support: float, entropy: float, peak: float) -> float:
    """Concentrated, repetitive occupation (spec 002 §25.1)."""
    s, h, p = _clip01(support), _clip01(entropy), _clip01(peak)
    return 0.5 * (1.0 - s) + 0.3 * (1.0 - h) + 0.2 * p


def contention_score(support: float, entropy: float, peak: float) -> float:
    """Dispersed, irregular occupation (spec 002 §25.1)."""
    s, h, p = _clip01(support), _clip01(entropy), _clip01(peak)
    return 0.5 * s + 0.3 * h + 0.2 * (1.0 - p)


def structural_action(hot: float, contention: float) -> str:
    if hot >= ACTION_THRESHOLD and hot > contention + ACTION_MARGIN:
        return HOT
    if contention >= ACTION_THRESHOLD and contention > hot + ACTION_MARGIN:
        return CONTENTION
    return OBSERVE


def structural_inputs(slcp: dict[str, Any]) -> tuple[float, float, float]:
    """(support, entropy, peak) of an SLCP record as a dict (a kernel record of cyext, or
    Slcp.to_json()); computed from the raw histograms when the
    derived fields are absent (chi_hist64, shell_hist7, spectral64, valid_len)."""
    support = slcp.get("chi_support_ratio")
    if support is None and slcp.get("chi_hist64") is not None:
        hist = list(slcp["chi_hist64"])
        n = slcp.get("valid_len") or sum(hist)
        support = (sum(1 for c in hist if c) / n) if n else 0.0
    entropy = slcp.get("shell_entropy")
    if entropy is None and slcp.get("shell_hist7") is not None:
        hist = [float(c) for c in slcp["shell_hist7"]]
        tot = sum(hist)
        entropy = (-sum(c / tot * math.log2(c / tot) for c in hist if c > 0) / math.log2(7)) if tot else 0.0
    peak = slcp.get("spectral_peak_ratio")
    if peak is None and slcp.get("spectral64") is not None:
        spec = [abs(float(x)) for x in slcp["spectral64"]]
        norm = math.sqrt(sum(x * x for x in spec))
        peak = (max(spec) / norm) if norm > 0 else 0.0
    return _clip01(support), _clip01(entropy), _clip01(peak)


def profile_entity(slcp: dict[str, Any]) -> dict[str, Any]:
    """The spec's ApplicationDecision for one cell: both scores and the suggested action."""
    if not slcp:
        return {"hot_loop_score": 0.0, "contention_score": 0.0, "action": OBSERVE,
                "chi_support_ratio": 0.0, "shell_entropy": 0.0, "spectral_peak_ratio": 0.0}
    s, h, p = structural_inputs(slcp)
    hot, cont = hot_loop_score(s, h, p), contention_score(s, h, p)
    return {"hot_loop_score": round(hot, 6), "contention_score": round(cont, 6),
            "action": structural_action(hot, cont),
            "chi_support_ratio": s, "shell_entropy": h, "spectral_peak_ratio": p}


@dataclass(frozen=True, slots=True)
class Context:
    """Session-wide facts the rule needs: wall time so far, threads seen, stack samples taken."""
    duration_s: float = 0.0
    threads: int = 1
    samples: int = 0
    windows: int = 0
    source: str = "run"
    window_s: float = 0.0
    all_code: bool = False    # --all-code / --include: library code may be decided too


def _score_inputs(slcp: Slcp | None) -> dict[str, Any]:
    """What profile_entity reads of an entity's SLCP record (Slcp.to_json() would also copy
    its 64-bin arrays: ~5 ms of a session's end on 60 entities)."""
    if slcp is None:
        return {}
    return {"chi_support_ratio": slcp.chi_support_ratio, "shell_entropy": slcp.shell_entropy,
            "spectral_peak_ratio": slcp.spectral_peak_ratio}


def scores_of(slcp: Slcp | None) -> Scores:
    """The structural scores of an entity's SLCP record (spec 002 §25.1), for EntityRecord.scores."""
    prof = profile_entity(_score_inputs(slcp))
    return Scores(hot_loop_score=prof["hot_loop_score"], contention_score=prof["contention_score"],
                  action_structural=prof["action"])


def is_own_code(entity: EntityRecord) -> bool:
    """Decisions target the program's own code (bridges/owncode.py: a file outside the standard
    library, site-packages and gyroscope; profiled locks are the exception, see decide())."""
    return looks_like_program(entity.file)


def _finite(x: float) -> float:
    return x if math.isfinite(x) else 0.0


def _measure_evidence(m: Measurements, context: Context) -> dict[str, Any]:
    samples = max(context.samples, 0)
    duration = max(_finite(context.duration_s), 0.0)
    threads = max(context.threads, 1)
    thread_time = duration * threads
    exact = {}
    x = m.extra
    if x.get("exact"):   # the profiled locks' exact figures (agent/measure.py) travel with the decision
        exact = {"exact": True, "wait_s_max": round(_finite(float(x.get("wait_s_max", 0.0))), 6),
                 "hold_s_total": round(_finite(float(x.get("hold_s_total", 0.0))), 6),
                 "acquires": int(x.get("acquires", 0))}
    return {**exact,
        "cpu_share": round(_finite(m.cpu_share), 4),
        "native_share": round(_finite(float(m.extra.get("native_share", 0.0))), 4),
        "library_share": round(_finite(float(m.extra.get("library_share", 0.0))), 4),
        "running_share": round(_running_share(m, samples, duration), 4),
        "samples_running": m.samples_running,
        "iterations": m.iterations,
        "iterations_per_s": round(_finite(m.iterations_per_s), 1),
        "calls": m.calls,
        "wait_s_total": round(_finite(m.wait_s_total), 6),
        "wait_s_mean": round(_finite(m.wait_s_mean), 6),
        "waits": m.waits,
        "waiting_threads": m.waiting_threads,
        "wait_share": round(_finite(m.wait_s_total) / thread_time, 4) if thread_time > 0 else 0.0,
        "session_duration_s": round(duration, 3),
        "session_threads": threads,
        "session_samples": samples,
    }


def _running_share(m: Measurements, samples: int, duration: float) -> float:
    """Share of the session's wall time the entity ran: sampled running seconds / duration when the
    source measures them (run_s_total), else running samples / the session's samples."""
    if m.run_s_total is not None and duration > 0:
        return _finite(m.run_s_total) / duration
    return m.samples_running / samples if samples > 0 else 0.0


def measured_action(kind: str, ev: dict[str, Any]) -> str:
    """The measurement half of the rule (module docstring)."""
    if kind in HOT_KINDS and (ev["cpu_share"] >= HOT_MIN_CPU_SHARE and ev["running_share"] >= HOT_MIN_RUNNING_SHARE
                              and ev["samples_running"] >= HOT_MIN_SAMPLES
                              and ev.get("native_share", 0.0) < HOT_MAX_NATIVE_SHARE
                              and ev.get("library_share", 0.0) < HOT_MAX_LIBRARY_SHARE):
        return HOT
    if kind in CONTENTION_KINDS and (ev["waiting_threads"] >= CONT_MIN_WAITING_THREADS
                                     and ev["wait_share"] >= CONT_MIN_WAIT_SHARE
                                     and ev["waits"] >= CONT_MIN_WAITS):
        return CONTENTION
    if kind in LOOP_KINDS and ev["waits"] >= LOOP_MIN_BLOCKS:
        return CONTENTION
    return OBSERVE


def decide(entities: Sequence[EntityRecord], context: Context) -> list[Decision]:
    """The decisions the entities warrant (never `observe`), most confident first per action.

    A pure function of its inputs: the records are read, never written (their `scores` are set
    when they are built, agent/session.py); `context` carries the session-wide facts."""
    out: list[Decision] = []
    for ent in entities:
        exact_lock = bool(ent.kind in CONTENTION_KINDS and ent.measurements.extra.get("exact"))
        library_loop = bool(ent.measurements.extra.get("library"))
        # a profiled lock is decided wherever it was created (library locks too: logging's handler
        # lock), a library's loop where the program's time went (bridges/stacks.py library_loop);
        # everything else only in the program's own code
        if not (exact_lock or library_loop) and not context.all_code and not is_own_code(ent):
            continue
        if is_gyroscope(ent.file):
            continue   # gyroscope's own code in the program (the executor's policy lock): not the program's to fix
        if ent.kind == "function" and ent.function == "<module>":
            continue   # a module body is an entry point (a console script, `import x; x.main()`), never the answer
        prof = profile_entity(_score_inputs(ent.slcp))
        ev = _measure_evidence(ent.measurements, context)
        action = measured_action(ent.kind, ev)
        if action == OBSERVE:
            continue
        ev.update({"chi_support_ratio": round(prof["chi_support_ratio"], 4),
                   "shell_entropy": round(prof["shell_entropy"], 4),
                   "spectral_peak_ratio": round(prof["spectral_peak_ratio"], 4),
                   "action_structural": prof["action"],
                   "kernel_step": ent.slcp.step if ent.slcp is not None else 0,
                   "rule": _LOOP_RULE_TEXT if ent.kind in LOOP_KINDS else _RULE_TEXT[action]})
        file, function, line = ent.file, ent.function, ent.line
        sites = ent.measurements.extra.get("call_sites") if exact_lock else None
        if sites:   # the place to act: where the threads queue (the lock's creation site is evidence)
            top = sites[0]
            ev["lock_created_at"] = f"{os.path.basename(ent.file)}:{ent.line} in {ent.function}"
            file, line = str(top.get("file", file)), int(top.get("line", line))
            function = str(top.get("function") or function)
        out.append(Decision(action=action, entity_id=ent.id, entity_kind=ent.kind, file=file,
                            function=function, line=line, pid=ent.pid,
                            hot_loop_score=prof["hot_loop_score"], contention_score=prof["contention_score"],
                            evidence=ev))
    out = _drop_idle_loops(_drop_lock_churn(_drop_enclosing_functions(out), entities), entities, context)
    out.sort(key=lambda d: (d.action, -(d.hot_loop_score if d.action == HOT else d.contention_score), d.entity_id))
    return out


def _drop_enclosing_functions(decisions: list[Decision]) -> list[Decision]:
    """A hot function whose own hot loop already has a decision adds nothing: keep the loop."""
    hot_loops = {(d.pid, d.file, d.function) for d in decisions if d.action == HOT and d.entity_kind == "loop"}
    return [d for d in decisions
            if not (d.action == HOT and d.entity_kind == "function" and (d.pid, d.file, d.function) in hot_loops)]


def _drop_lock_churn(decisions: list[Decision], entities: Sequence[EntityRecord]) -> list[Decision]:
    """A loop that encloses a contended lock (same function, starts on or before the lock's line,
    runs in threads that wait on that lock) spends its running time handing the lock over, not
    computing: the action there is contention, not specialization."""
    threads = {e.id: set(e.threads) for e in entities}
    locks = [d for d in decisions if d.action == CONTENTION]
    keep = []
    for d in decisions:
        mine = threads.get(d.entity_id, set())
        churn = d.action == HOT and any(
            k.pid == d.pid and k.file == d.file and k.function == d.function and d.line <= k.line
            and (not mine or mine & threads.get(k.entity_id, set()))
            for k in locks)
        if not churn:
            keep.append(d)
    return keep


def idle_share(decision: Decision, entities: Sequence[EntityRecord], context: Context) -> float:
    """How idle the threads of a hot-loop candidate are, from the entities of its function that share
    a thread with it: the larger of
      - session-relative: the largest wait_s_total / (duration_s x threads) of a wait or lock entity
        of the function (a polling thread that sleeps most of the session), and
      - function-relative: blocked time / (blocked + running time) summed over the function's wait
        and lock entities and its loops and function entity (a function that holds a lock and then
        sleeps: it is the only code running, so its CPU share is high, yet it is blocked almost
        all the time it is on the stack)."""
    duration = _finite(context.duration_s)
    mine = next((set(e.threads) for e in entities if e.id == decision.entity_id), set())
    best = blocked = ran = 0.0
    ran_known = False
    for e in entities:
        if e.pid != decision.pid or e.file != decision.file or e.function != decision.function:
            continue
        threads = set(e.threads)
        if mine and threads and not (mine & threads):
            continue
        m = e.measurements
        if e.kind in ("wait", "lock"):
            blocked += _finite(m.wait_s_total)
            if duration > 0:
                best = max(best, _finite(m.wait_s_total) / (duration * max(len(threads), 1)))
        elif e.kind in HOT_KINDS and m.run_s_total is not None:
            ran += _finite(m.run_s_total)
            ran_known = True
    if ran_known and blocked + ran > 0:
        best = max(best, blocked / (blocked + ran))
    return best


def _drop_idle_loops(decisions: list[Decision], entities: Sequence[EntityRecord],
                     context: Context) -> list[Decision]:
    keep = []
    for d in decisions:
        if d.action == HOT:
            idle = idle_share(d, entities, context)
            d.evidence["idle_share"] = round(idle, 4)
            if idle >= HOT_MAX_IDLE_SHARE:
                continue
        keep.append(d)
    return keep


_LOOP_RULE_TEXT = (f"event loop blocked by a coroutine step of >= 100 ms at least {LOOP_MIN_BLOCKS} time(s) "
                   "(other tasks waited)")
_RULE_TEXT = {
    HOT: (f"cpu_share >= {HOT_MIN_CPU_SHARE} and running_share >= {HOT_MIN_RUNNING_SHARE} "
          f"and samples_running >= {HOT_MIN_SAMPLES}"),
    CONTENTION: (f"lock with waiting_threads >= {CONT_MIN_WAITING_THREADS} and wait_share >= {CONT_MIN_WAIT_SHARE} "
                 f"and waits >= {CONT_MIN_WAITS}"),
}
