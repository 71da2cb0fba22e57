"""The Phase OS gate (seed 000 §3.4-3.5, §4.3, §4.5): only what changed enough reaches the sinks.

Per entity, at each report cycle, against what was last *emitted* for it:
  alignment  a = 1 - (hamming(chi6, chi6_emitted) / 6 + |shell - shell_emitted| / 6) / 2   in [0, 1]
               (agreement of the entity's kernel climate with its previous emitted climate)
  strength   s = max over the signals of the change since the last emission:
                 |d cpu_share|, |d hot_loop_score|, |d contention_score|, and the relative change
                 |x - x_emitted| / max(|x|, |x_emitted|) of iterations, calls, samples_running,
                 samples_waiting, wait_s_total, waits (each capped at 1)
  R = a x s   (R = 1 for an entity never emitted)
Propagation gate: an entity's record reaches the sinks only when
  R >= T (0.1), its coherence is stable (resonance key and structural action unchanged since
  its previous observation) and its noise is below the limit (resonance key changed in at most
  half of its last 4 observations). Otherwise the change is held: nothing is sent and the
  delta keeps accumulating against the last emitted record, to be sent when the gate opens.
Deltas only, never full state: a sent record holds the entity's "id" plus only the fields
(and nested measurements / slcp / scores keys) that differ from its last sent record.
Decisions: a decision whose action appears, changes or disappears for an entity is sent once its
action has been the same for 2 observations, and at the latest at the final cycle
(`final=True` flushes every held delta and every unsent decision change); a disappearance is
sent as a decision with action "observe" and evidence {"previous_action": ...}.
Trace: with GYROSCOPE_GATE_TRACE=PATH in the environment, every filter() call appends its inputs
as one JSON line to PATH (benchmarks/gate.py replays them through the gate and without it).
Counters: sent / held (records), bytes_sent (len of json.dumps of what was sent), and what
sending every record in full at every cycle would have cost: records_ungated, bytes_ungated.
"""
from __future__ import annotations

import json
import os
from typing import Any

THRESHOLD_T = 0.1
NOISE_WINDOW = 4
NOISE_LIMIT = 0.5
COHERENCE_OBS = 2

_REL_FIELDS = ("iterations", "calls", "samples_running", "samples_waiting", "wait_s_total", "waits")
_ABS_FIELDS = ("cpu_share",)
_NESTED = ("measurements", "slcp", "scores")
_ID_KEYS = ("id",)


def _size(obj: Any) -> int:
    return len(json.dumps(obj, default=str, separators=(",", ":")))


def _f(d: dict[str, Any] | None, key: str) -> float:
    try:
        return float((d or {}).get(key, 0) or 0)
    except (TypeError, ValueError):
        return 0.0


def alignment(slcp: dict[str, Any], emitted: dict[str, Any] | None) -> float:
    """Agreement of the cell's climate (chi6, shell) with the last emitted one, in [0, 1]."""
    if not emitted:
        return 1.0
    chi = int(_f(slcp, "chi6")) ^ int(_f(emitted, "chi6"))
    dist = bin(chi & 0x3F).count("1") / 6.0
    dshell = min(abs(_f(slcp, "shell") - _f(emitted, "shell")) / 6.0, 1.0)
    return 1.0 - (dist + dshell) / 2.0


def strength(ent: dict[str, Any], emitted: dict[str, Any] | None) -> float:
    """The strongest change of the entity's signals since its last emission, in [0, 1]."""
    if not emitted:
        return 1.0
    m, pm = ent.get("measurements", {}), emitted.get("measurements", {})
    sc, psc = ent.get("scores", {}), emitted.get("scores", {})
    parts = [abs(_f(m, k) - _f(pm, k)) for k in _ABS_FIELDS]
    parts += [abs(_f(sc, k) - _f(psc, k)) for k in ("hot_loop_score", "contention_score")]
    for k in _REL_FIELDS:
        x, y = _f(m, k), _f(pm, k)
        den = max(abs(x), abs(y))
        parts.append(min(abs(x - y) / den, 1.0) if den > 0 else 0.0)
    return min(max(parts), 1.0)


def r_score(ent: dict[str, Any], emitted: dict[str, Any] | None) -> float:
    return alignment(ent.get("slcp", {}), (emitted or {}).get("slcp")) * strength(ent, emitted)


def delta(ent: dict[str, Any], last: dict[str, Any] | None) -> dict[str, Any]:
    """The fields of `ent` that differ from `last` (nested dicts key by key), plus the ids."""
    out = {k: ent[k] for k in _ID_KEYS if k in ent}
    last = last or {}
    for k, v in ent.items():
        if k in _ID_KEYS:
            continue
        if k in _NESTED and isinstance(v, dict):
            prev = last.get(k) if isinstance(last.get(k), dict) else {}
            sub = {kk: vv for kk, vv in v.items() if kk not in prev or prev[kk] != vv}
            if sub:
                out[k] = sub
        elif k not in last or last[k] != v:
            out[k] = v
    return out


class _State:
    __slots__ = ("emitted", "latest", "keys", "actions", "sent_action", "pending_decision")

    def __init__(self) -> None:
        self.emitted: dict[str, Any] | None = None       # the full record as last sent
        self.latest: dict[str, Any] | None = None        # the full record as last observed
        self.keys: list[int] = []                          # resonance keys of recent observations
        self.actions: list[str] = []                       # structural actions of recent observations
        self.sent_action = "observe"                       # decision action the sinks last saw
        self.pending_decision: dict[str, Any] | None = None


class PhaseGate:
    """Per entity R-score and propagation gate. `sent` / `held` count records; `bytes_sent` the payload."""

    def __init__(self, threshold: float = THRESHOLD_T, noise_limit: float = NOISE_LIMIT) -> None:
        self.threshold = threshold
        self.noise_limit = noise_limit
        self.sent = 0
        self.held = 0
        self.bytes_sent = 0
        self.records_ungated = 0
        self.bytes_ungated = 0
        self._state: dict[int, _State] = {}
        self._decision_obs: dict[int, list[str]] = {}
        self._trace = os.environ.get("GYROSCOPE_GATE_TRACE") or None

    # ---- the gate conditions ----------------------------------------------------------------
    def _observe(self, st: _State, ent: dict[str, Any]) -> None:
        st.keys = (st.keys + [int(_f(ent.get("slcp"), "resonance_key"))])[-NOISE_WINDOW - 1:]
        st.actions = (st.actions + [str((ent.get("scores", {})).get("action_structural", ""))])[-NOISE_WINDOW:]

    @staticmethod
    def coherent(st: _State) -> bool:
        return (len(st.keys) >= COHERENCE_OBS and st.keys[-1] == st.keys[-2]
                and len(st.actions) >= COHERENCE_OBS and st.actions[-1] == st.actions[-2])

    @staticmethod
    def noise(st: _State) -> float:
        ks = st.keys
        if len(ks) < 2:
            return 0.0
        return sum(a != b for a, b in zip(ks, ks[1:])) / (len(ks) - 1)

    def opens(self, st: _State, ent: dict[str, Any]) -> bool:
        if st.emitted is None:
            return self.coherent(st) and self.noise(st) <= self.noise_limit
        return (r_score(ent, st.emitted) >= self.threshold and self.coherent(st)
                and self.noise(st) <= self.noise_limit)

    # ---- one report cycle ---------------------------------------------------------------------
    def filter(self, window_index: int, entities: list[dict[str, Any]], decisions: list[dict[str, Any]],
               final: bool = False) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Return (entity deltas, decision changes) to send for this window; hold the rest."""
        if self._trace:
            self._write_trace(window_index, entities, decisions, final)
        self.records_ungated += len(entities) + len(decisions)
        self.bytes_ungated += _size(entities) + _size(decisions)
        out_e: list[dict[str, Any]] = []
        for ent in entities:
            eid = ent["id"]
            st = self._state.setdefault(eid, _State())
            self._observe(st, ent)
            st.latest = json.loads(json.dumps(ent, default=str))
            if final or self.opens(st, ent):
                d = delta(ent, st.emitted)
                if len(d) > len(_ID_KEYS) or st.emitted is None:
                    out_e.append(d)
                st.emitted = st.latest
            else:
                self.held += 1
        if final:  # flush what was held for entities not observed in this cycle
            seen = {e["id"] for e in entities}
            for eid, st in self._state.items():
                if eid not in seen and st.latest is not None and st.latest is not st.emitted:
                    d = delta(st.latest, st.emitted)
                    if len(d) > len(_ID_KEYS) or st.emitted is None:
                        out_e.append(d)
                    st.emitted = st.latest
        out_d = self._decisions(entities, decisions, final)
        self.sent += len(out_e) + len(out_d)
        self.bytes_sent += (_size(out_e) if out_e else 0) + (_size(out_d) if out_d else 0)
        return out_e, out_d

    def _write_trace(self, window_index: int, entities: list[dict[str, Any]], decisions: list[dict[str, Any]],
                     final: bool) -> None:
        try:
            with open(self._trace, "a", encoding="utf-8") as f:
                f.write(json.dumps({"window": window_index, "final": final, "entities": entities,
                                    "decisions": decisions}, default=str) + "\n")
        except OSError:
            self._trace = None

    @property
    def tracing(self) -> bool:
        """GYROSCOPE_GATE_TRACE is set: every cycle goes through filter(), sinks or not."""
        return self._trace is not None

    def counters(self) -> dict[str, int]:
        return {"gate_sent": self.sent, "gate_held": self.held, "gate_bytes_sent": self.bytes_sent,
                "gate_records_ungated": self.records_ungated, "gate_bytes_ungated": self.bytes_ungated}

    def _decisions(self, entities: list[dict[str, Any]], decisions: list[dict[str, Any]],
                   final: bool) -> list[dict[str, Any]]:
        by_id = {d["entity_id"]: d for d in decisions}
        observed = {e["id"]: e for e in entities}
        for eid in by_id:
            observed.setdefault(eid, {"id": eid})
        out: list[dict[str, Any]] = []
        for eid, ent in observed.items():
            st = self._state.setdefault(eid, _State())
            d = by_id.get(eid)
            action = d["action"] if d else "observe"
            obs = self._decision_obs.setdefault(eid, [])
            obs.append(action)
            del obs[:-COHERENCE_OBS]
            if d is not None:
                st.pending_decision = d
            if action == st.sent_action:
                continue
            stable = len(obs) >= COHERENCE_OBS and all(a == action for a in obs)
            if not (stable or final):
                self.held += 1
                continue
            out.append(d if d is not None else _withdrawn(ent, st))
            st.sent_action = action
        if final:  # a change held for an entity not observed in this cycle is never lost
            for eid, st in self._state.items():
                if eid in observed:
                    continue
                obs = self._decision_obs.get(eid) or []
                last = obs[-1] if obs else st.sent_action
                if last != st.sent_action:
                    out.append(st.pending_decision if last != "observe" and st.pending_decision
                               else _withdrawn({"id": eid}, st))
                    st.sent_action = last
        return out


def _withdrawn(ent: dict[str, Any], st: _State) -> dict[str, Any]:
    prev = st.pending_decision or {}
    return {"action": "observe", "entity_id": ent["id"],
            "entity_kind": ent.get("kind", prev.get("entity_kind", "")),
            "file": ent.get("file", prev.get("file", "")), "function": ent.get("function", prev.get("function", "")),
            "line": ent.get("line", prev.get("line", 0)),
            "hot_loop_score": (ent.get("scores", {})).get("hot_loop_score", 0.0),
            "contention_score": (ent.get("scores", {})).get("contention_score", 0.0),
            "evidence": {"previous_action": st.sent_action}}
