"""Actuators: the spec 002 §25.1 formulas against hand-computed values, and the decision rule."""
from __future__ import annotations

import copy
import math

import pytest
from gyroscope.agent import actuators as A
from gyroscope.agent.errors import SessionFileError
from gyroscope.agent.model import EntityRecord

WORKLOAD = "/tmp/some_program/app.py"


@pytest.mark.parametrize("s,h,p,hot,cont,action", [
    # 0.5*(1-s) + 0.3*(1-h) + 0.2*p  |  0.5*s + 0.3*h + 0.2*(1-p)
    (0.125, 0.8, 0.35, 0.4375 + 0.06 + 0.07, 0.0625 + 0.24 + 0.13, "observe"),
    (0.1, 0.2, 0.9, 0.45 + 0.24 + 0.18, 0.05 + 0.06 + 0.02, "specialize_hot_loop"),
    (0.9, 0.9, 0.1, 0.05 + 0.03 + 0.02, 0.45 + 0.27 + 0.18, "mitigate_contention"),
    (0.5, 0.5, 0.5, 0.25 + 0.15 + 0.1, 0.25 + 0.15 + 0.1, "observe"),
    (0.0, 0.0, 1.0, 1.0, 0.0, "specialize_hot_loop"),
    (1.0, 1.0, 0.0, 0.0, 1.0, "mitigate_contention"),
])
def test_spec_scores_hand_computed(s, h, p, hot, cont, action):
    assert A.hot_loop_score(s, h, p) == pytest.approx(hot)
    assert A.contention_score(s, h, p) == pytest.approx(cont)
    prof = A.profile_entity({"chi_support_ratio": s, "shell_entropy": h, "spectral_peak_ratio": p})
    assert prof["hot_loop_score"] == pytest.approx(hot, abs=1e-6)
    assert prof["contention_score"] == pytest.approx(cont, abs=1e-6)
    assert prof["action"] == action


def test_structural_action_thresholds_and_margin():
    assert A.structural_action(0.58, 0.42) == "specialize_hot_loop"
    assert A.structural_action(0.5799, 0.42) == "observe"
    assert A.structural_action(0.42, 0.58) == "mitigate_contention"
    assert A.structural_action(0.60, 0.58) == "observe"          # margin 0.03 not met either way
    assert A.structural_action(0.62, 0.58) == "specialize_hot_loop"


def test_inputs_from_raw_histograms():
    chi = [0] * 64
    for k in (1, 5, 9, 60):
        chi[k] = 8
    spectral = [0.0] * 64
    spectral[3] = -4.0
    s, h, p = A.structural_inputs({"chi_hist64": chi, "valid_len": 32, "shell_hist7": [3] * 7,
                                   "spectral64": spectral})
    assert s == pytest.approx(4 / 32)
    assert h == pytest.approx(1.0)
    assert p == pytest.approx(1.0)
    s, h, p = A.structural_inputs({"chi_hist64": chi, "valid_len": 32, "shell_hist7": [4, 4, 0, 0, 0, 0, 0],
                                   "spectral64": [3.0, 4.0] + [0.0] * 62})
    assert h == pytest.approx(1 / math.log2(7))
    assert p == pytest.approx(4 / 5)


def test_profile_of_empty_record_is_observe():
    assert A.profile_entity({})["action"] == "observe"
    assert A.profile_entity({"chi_support_ratio": float("nan")})["hot_loop_score"] == pytest.approx(0.5 + 0.3)


def ent(eid, kind, function, line, threads=(1,), file=WORKLOAD, **m):
    meas = {"iterations": 0, "iterations_per_s": 0.0, "calls": 0, "cpu_share": 0.0, "samples_running": 0,
            "samples_waiting": 0, "wait_s_total": 0.0, "wait_s_mean": 0.0, "waits": 0, "waiting_threads": 0}
    meas.update(m)
    return EntityRecord.from_json(
        {"id": eid, "kind": kind, "file": file, "function": function, "line": line, "detail": "",
         "threads": list(threads), "measurements": meas,
         "slcp": {"step": 100, "chi6": 3, "shell": 2, "resonance_key": 3, "chi_support_ratio": 0.2,
                  "shell_entropy": 0.6, "spectral_peak_ratio": 0.4}})


CTX = A.Context(duration_s=2.0, threads=4, samples=200, windows=10)


def ctx(duration_s, threads, samples):
    return A.Context(duration_s=duration_s, threads=threads, samples=samples)


def actions(decisions):
    return sorted((d.action, d.function, d.line) for d in decisions)


def test_hot_loop_needs_cpu_share_and_running_time():
    ents = [ent(1, "loop", "mandel", 12, cpu_share=0.97, samples_running=150, iterations_per_s=8e6),
            # the busiest loop of an idle program: all of its CPU, but 2 samples of 200
            ent(2, "loop", "poll", 30, cpu_share=1.0, samples_running=2)]
    assert actions(A.decide(ents, CTX)) == [("specialize_hot_loop", "mandel", 12)]
    assert actions(A.decide(ents[1:], CTX)) == []


def test_decision_carries_evidence_and_scores():
    e = ent(1, "loop", "Grid.relax", 16, cpu_share=0.9, samples_running=90, iterations_per_s=1e7, iterations=10**7)
    (d,) = A.decide([e], CTX)
    assert set(d.to_json()) == {"action", "entity_id", "entity_kind", "file", "function", "line", "pid",
                                "hot_loop_score", "contention_score", "evidence"}
    assert d.entity_id == 1 and d.entity_kind == "loop" and d.function == "Grid.relax"
    assert d.hot_loop_score == pytest.approx(0.5 * 0.8 + 0.3 * 0.4 + 0.2 * 0.4, abs=1e-6)
    ev = d.evidence
    assert ev["cpu_share"] == 0.9 and ev["running_share"] == pytest.approx(0.45)
    assert ev["iterations_per_s"] == 1e7 and "rule" in ev and ev["action_structural"] == "specialize_hot_loop"
    assert A.scores_of(e.slcp).action_structural == "specialize_hot_loop"


def test_decide_does_not_write_into_its_input():
    ents = [ent(1, "loop", "mandel", 12, cpu_share=0.97, samples_running=150, iterations_per_s=8e6),
            ent(2, "function", "mandel", 4, cpu_share=0.4, samples_running=80),
            ent(5, "lock", "worker", 21, threads=(1, 2, 3, 4), wait_s_total=3.6, waits=350, waiting_threads=4)]
    before = copy.deepcopy(ents)
    decisions = A.decide(ents, CTX)
    assert len(decisions) == 2
    assert ents == before and all(e.scores is None for e in ents)


def test_contended_lock_vs_rarely_contended_lock_vs_sleep():
    contended = ent(5, "lock", "worker", 21, threads=(1, 2, 3, 4), wait_s_total=3.6, waits=350, waiting_threads=4)
    rare = ent(6, "lock", "worker2", 40, threads=(1, 2), wait_s_total=0.02, waits=4, waiting_threads=2)
    one_waiter = ent(7, "lock", "worker3", 50, wait_s_total=1.5, waits=100, waiting_threads=1)
    sleeping = ent(8, "wait", "ticker", 29, threads=(1, 2, 3), wait_s_total=5.0, waits=100, waiting_threads=3)
    d = A.decide([contended, rare, one_waiter, sleeping], CTX)
    assert actions(d) == [("mitigate_contention", "worker", 21)]
    assert d[0].evidence["wait_share"] == pytest.approx(3.6 / (2.0 * 4))


def test_wait_share_scales_with_threads_and_duration():
    lock = ent(5, "lock", "worker", 21, wait_s_total=0.3, waits=30, waiting_threads=2)
    assert A.decide([lock], ctx(1.0, 2, 100))          # 15% of thread time
    assert not A.decide([lock], ctx(10.0, 8, 1000))    # 0.4%


def test_only_own_code():
    import sysconfig
    stdlib = sysconfig.get_paths()["stdlib"] + "/threading.py"
    ents = [ent(1, "loop", "wait", 300, file=stdlib, cpu_share=0.9, samples_running=100),
            ent(2, "lock", "x", 1, file="<frozen importlib._bootstrap>", wait_s_total=5.0, waits=9, waiting_threads=3),
            ent(3, "loop", "f", 1, file="/venv/lib/python3.12/site-packages/pkg/m.py", cpu_share=0.9,
                samples_running=100),
            ent(4, "loop", "g", 1, file="", cpu_share=0.9, samples_running=100)]
    assert A.decide(ents, CTX) == []


def test_loop_enclosing_a_contended_lock_is_not_hot():
    # attach mode: threads queued for the GIL behind the lock count as running in the loop
    loop = ent(1, "loop", "player", 13, threads=(2, 3, 4), cpu_share=0.96, samples_running=188)
    lock = ent(2, "lock", "player", 14, threads=(2, 3, 4), wait_s_total=8.0, waits=31, waiting_threads=3)
    other = ent(3, "loop", "crunch", 11, threads=(5,), cpu_share=0.5, samples_running=60)
    assert actions(A.decide([loop, lock, other], CTX)) == [("mitigate_contention", "player", 14),
                                                             ("specialize_hot_loop", "crunch", 11)]


def test_hot_function_with_its_own_hot_loop_gives_one_decision():
    fn = ent(1, "function", "mandel", 4, cpu_share=0.4, samples_running=80)
    loop = ent(2, "loop", "mandel", 12, cpu_share=0.6, samples_running=120)
    assert actions(A.decide([fn, loop], CTX)) == [("specialize_hot_loop", "mandel", 12)]
    assert actions(A.decide([fn], CTX)) == [("specialize_hot_loop", "mandel", 4)]


def test_bad_fields_are_refused_when_read_and_missing_ones_decide_nothing():
    bad = {"id": 1, "kind": "loop", "file": WORKLOAD, "function": "f", "line": 3,
           "measurements": {"cpu_share": None, "samples_running": "x"}, "slcp": None}
    with pytest.raises(SessionFileError, match="cpu_share must be a number"):
        EntityRecord.from_json(bad)
    bare = EntityRecord.from_json({"id": 1, "kind": "loop", "file": WORKLOAD, "function": "f", "line": 3})
    assert bare.slcp is None and A.decide([bare], A.Context()) == []
    assert A.decide([], A.Context()) == []
    nan = ent(1, "loop", "f", 3, cpu_share=float("nan"), samples_running=100)
    assert A.decide([nan], CTX) == []


def test_polling_loop_whose_thread_sleeps_is_not_hot():
    # attach mode: the sampler caught the polling loop running a few times, but its thread
    # sleeps in the same function for nearly all of the session
    loop = ent(1, "loop", "wait_for_done", 15, threads=(7,), cpu_share=1.0, samples_running=11)
    sleep = ent(2, "wait", "wait_for_done", 16, threads=(7,), wait_s_total=1.8, waits=1, waiting_threads=1)
    c = ctx(1.9, 2, 21)
    assert A.decide([loop, sleep], c) == []
    # the same loop computing, with a short sleep in its function, stays hot
    short = ent(2, "wait", "wait_for_done", 16, threads=(7,), wait_s_total=0.2, waits=1, waiting_threads=1)
    (d,) = A.decide([loop, short], c)
    assert d.evidence["idle_share"] == pytest.approx(0.2 / 1.9, abs=1e-3)
    # a wait in another thread does not count
    other = ent(2, "wait", "wait_for_done", 16, threads=(8,), wait_s_total=1.8, waits=1, waiting_threads=1)
    assert len(A.decide([loop, other], c)) == 1


def test_function_that_sleeps_under_a_lock_is_not_hot():
    # lock_many_threads: slow_update computes 5 us, then sleeps 200 us while its caller holds the
    # lock; it is the only code running (cpu_share 1.0) but blocked ~95% of its time on the stack
    fn = ent(1, "function", "slow_update", 9, threads=(2, 3), cpu_share=1.0, samples_running=3,
             run_s_total=0.03)
    sleep = ent(2, "wait", "slow_update", 13, threads=(2, 3), wait_s_total=0.09, waits=3, waiting_threads=2)
    c = ctx(0.4, 9, 8)
    assert A.idle_share(A.decide([fn], c)[0], [fn, sleep], c) == pytest.approx(0.09 / 0.12)
    assert A.decide([fn, sleep], c) == []
    # the same function with most of its time computing stays hot
    busy = ent(1, "function", "slow_update", 9, threads=(2, 3), cpu_share=1.0, samples_running=30,
               run_s_total=0.3)
    (d,) = A.decide([busy, sleep], c)
    assert d.evidence["idle_share"] == pytest.approx(0.09 / 0.39, abs=1e-3)


def test_running_share_prefers_sampled_running_seconds():
    e = ent(1, "loop", "f", 3, cpu_share=1.0, samples_running=20, run_s_total=0.05)
    (d,) = A.decide([e], ctx(0.5, 1, 20))   # 10% of wall time
    assert d.evidence["running_share"] == pytest.approx(0.1)
    e = ent(1, "loop", "f", 3, cpu_share=1.0, samples_running=20, run_s_total=0.05)
    assert A.decide([e], ctx(5.0, 1, 20)) == []   # 1%: not hot


def test_no_decision_on_gyroscopes_own_code():
    """A hot loop that would be decided in the program's file is not, in gyroscope's own file (the
    executor's worker loop or policy lock inside a program is not the program's to fix)."""
    from gyroscope.bridges.owncode import GYROSCOPE_DIRS, is_gyroscope
    inside = GYROSCOPE_DIRS[-1] + "executor.py"
    assert is_gyroscope(inside) and not is_gyroscope(WORKLOAD) and not is_gyroscope("")
    hot = dict(cpu_share=0.9, samples_running=90, iterations_per_s=1e7, iterations=10**7)
    assert actions(A.decide([ent(1, "loop", "Grid.relax", 16, **hot)], CTX)) == [("specialize_hot_loop", "Grid.relax", 16)]
    assert A.decide([ent(1, "loop", "Grid.relax", 16, file=inside, **hot)], A.Context(
        duration_s=2.0, threads=4, samples=200, windows=10, all_code=True)) == []
