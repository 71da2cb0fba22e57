"""The Phase OS gate on synthetic windows: R-score, coherence, noise, deltas, no lost decision."""
from __future__ import annotations

import json

import pytest
from gyroscope.agent import gate as G
from gyroscope.agent.gate import PhaseGate


def ent(eid=1, key=5, chi6=5, shell=2, iterations=1000, cpu=0.5, wait=0.0, action="observe", hot=0.6, cont=0.4):
    return {"id": eid, "kind": "loop", "file": "/p/app.py", "function": "f", "line": 3, "detail": "",
            "threads": [1],
            "measurements": {"iterations": iterations, "calls": 0, "cpu_share": cpu, "samples_running": 10,
                             "samples_waiting": 0, "wait_s_total": wait, "waits": 0},
            "slcp": {"chi6": chi6, "shell": shell, "resonance_key": key, "step": 10},
            "scores": {"hot_loop_score": hot, "contention_score": cont, "action_structural": action}}


def dec(eid=1, action="specialize_hot_loop"):
    return {"action": action, "entity_id": eid, "entity_kind": "loop", "file": "/p/app.py", "function": "f",
            "line": 3, "hot_loop_score": 0.6, "contention_score": 0.4, "evidence": {"cpu_share": 0.5}}


def test_alignment_and_strength_and_r():
    assert G.alignment({"chi6": 5, "shell": 2}, None) == 1.0
    assert G.alignment({"chi6": 5, "shell": 2}, {"chi6": 5, "shell": 2}) == 1.0
    # chi6 differs in 2 bits of 6, shell by 3 of 6: 1 - (2/6 + 3/6) / 2
    assert G.alignment({"chi6": 0b000011, "shell": 5}, {"chi6": 0, "shell": 2}) == pytest.approx(1 - (1 / 3 + 0.5) / 2)
    a, b = ent(iterations=1000), ent(iterations=1050)
    assert G.strength(b, a) == pytest.approx(50 / 1050)
    assert G.strength(ent(cpu=0.9), ent(cpu=0.5)) == pytest.approx(0.4)
    assert G.r_score(ent(iterations=2000, chi6=4), ent(iterations=1000, chi6=5)) == pytest.approx(
        (1 - (1 / 6) / 2) * 0.5)


def test_new_entity_waits_for_coherence_then_sends_full_record():
    g = PhaseGate()
    e, d = g.filter(1, [ent()], [])
    assert e == [] and g.held == 1
    e, d = g.filter(2, [ent()], [])
    assert len(e) == 1 and e[0]["measurements"]["iterations"] == 1000 and e[0]["function"] == "f"


def test_small_changes_are_held_and_accumulate_until_r_crosses_t():
    g = PhaseGate()
    g.filter(1, [ent(iterations=1000)], [])
    g.filter(2, [ent(iterations=1000)], [])          # sent (full)
    sent = g.sent
    e, _ = g.filter(3, [ent(iterations=1040)], [])   # 4% change: held
    assert e == []
    e, _ = g.filter(4, [ent(iterations=1080)], [])   # 7.4%: held
    assert e == []
    e, _ = g.filter(5, [ent(iterations=1120)], [])   # 10.7% since last emission: sent
    assert e == [{"id": 1, "measurements": {"iterations": 1120}}]   # deltas only, plus the id
    assert g.sent == sent + 1 and g.held >= 3


def test_incoherent_or_noisy_entity_is_held_until_final():
    g = PhaseGate()
    keys = [1, 2, 3, 4, 5, 6]
    for i, k in enumerate(keys):
        e, _ = g.filter(i, [ent(key=k, iterations=1000 * (i + 1))], [])
        assert e == []
    e, _ = g.filter(99, [ent(key=7, iterations=9000)], [], final=True)
    assert len(e) == 1 and e[0]["measurements"]["iterations"] == 9000


def test_final_flushes_held_deltas_of_entities_not_in_the_last_cycle():
    g = PhaseGate()
    g.filter(1, [ent(iterations=10)], [])
    g.filter(2, [ent(iterations=10)], [])
    g.filter(3, [ent(iterations=10.5)], [])                 # held (5%)
    e, _ = g.filter(4, [ent(eid=2)], [], final=True)
    by_id = {x["id"]: x for x in e}
    assert by_id[1] == {"id": 1, "measurements": {"iterations": 10.5}}
    assert 2 in by_id


def test_decision_sent_once_stable_and_withdrawal_is_sent():
    g = PhaseGate()
    _, d = g.filter(1, [ent()], [dec()])
    assert d == []                                   # appeared once: held
    _, d = g.filter(2, [ent()], [dec()])
    assert [x["action"] for x in d] == ["specialize_hot_loop"]
    _, d = g.filter(3, [ent()], [dec()])
    assert d == []                                   # unchanged: nothing to send
    _, d = g.filter(4, [ent()], [])
    assert d == []                                   # disappeared once: held
    _, d = g.filter(5, [ent()], [])
    assert d[0]["action"] == "observe" and d[0]["evidence"]["previous_action"] == "specialize_hot_loop"


def test_decision_change_never_lost_at_final():
    g = PhaseGate()
    _, d = g.filter(1, [ent(eid=3)], [dec(eid=3, action="mitigate_contention")], final=True)
    assert [x["action"] for x in d] == ["mitigate_contention"]
    g = PhaseGate()
    g.filter(1, [ent(eid=3)], [dec(eid=3)])          # held, then the entity is not seen again
    _, d = g.filter(2, [ent(eid=4)], [], final=True)
    assert [(x["entity_id"], x["action"]) for x in d] == [(3, "specialize_hot_loop")]


def test_entity_not_in_cycle_keeps_its_decision():
    g = PhaseGate()
    g.filter(1, [ent()], [dec()])
    g.filter(2, [ent()], [dec()])
    _, d = g.filter(3, [ent(eid=2)], [], final=True)  # entity 1 untouched: its decision still holds
    assert d == []


def test_counters_and_bytes():
    g = PhaseGate()
    windows = [([ent(iterations=1000 + i)], [dec()]) for i in range(10)]
    sent_bytes = 0
    for i, (es, ds) in enumerate(windows):
        e, d = g.filter(i, es, ds, final=(i == 9))
        sent_bytes += (len(json.dumps(e, separators=(",", ":"))) if e else 0)
        sent_bytes += (len(json.dumps(d, separators=(",", ":"))) if d else 0)
    assert g.records_ungated == 20
    assert g.bytes_ungated == sum(len(json.dumps(es, separators=(",", ":"))) + len(json.dumps(ds, separators=(",", ":")))
                                  for es, ds in windows)
    assert g.bytes_sent == sent_bytes
    assert g.sent + g.held <= g.records_ungated and g.sent >= 2
    assert g.bytes_sent < g.bytes_ungated / 3
    assert g.counters()["gate_bytes_ungated"] == g.bytes_ungated


def test_trace_hook(tmp_path, monkeypatch):
    path = tmp_path / "trace.jsonl"
    monkeypatch.setenv("GYROSCOPE_GATE_TRACE", str(path))
    g = PhaseGate()
    g.filter(1, [ent()], [dec()])
    g.filter(2, [ent()], [], final=True)
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [x["window"] for x in lines] == [1, 2] and lines[1]["final"] is True
    assert lines[0]["decisions"][0]["action"] == "specialize_hot_loop"
