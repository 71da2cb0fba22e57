"""The stack store: aggregation, lock time, JSON round trip, and the memory bound."""
from __future__ import annotations

import json
import tracemalloc

from gyroscope.agent.profiles.store import OTHER_STACKS, StackStore, store_from_result
from gyroscope.bridges.events import Frame, StackSample

from tests import report_fixtures as fx

A, B, C = Frame("/w/app.py", "main", 10, 9), Frame("/w/app.py", "hot", 20, 18), Frame("/w/lib.py", "io", 5, 1)


def test_aggregates_per_thread_stack_and_state():
    st = StackStore()
    st.add_many([StackSample(1, 7, "MainThread", (B, A), "run", 3, 30, 28),
                 StackSample(1, 7, "MainThread", (B, A), "run", 2, 20, 19),
                 StackSample(1, 7, "MainThread", (B, A), "gil", 1, 10, 0),
                 StackSample(1, 8, "w", (C, A), "wait", 4, 40, 0)])
    rows = list(st.iter_rows())
    assert len(rows) == 3 and len(st.stacks) == 3     # (other stacks), (B, A), (C, A)
    run = next(r for r in rows if r.thread == 7 and r.state == "run")
    assert (run.samples, run.wall_ns, run.cpu_ns) == (5, 50, 47) and run.frames == (B, A)
    assert st.totals() == {"samples": 10, "wall": 100, "cpu": 47, "lock_wait": 0, "lock_hold": 0}
    assert len(st.frames) == 4                         # three frames plus "(other stacks)", each once


def test_lock_time_goes_to_the_stack_of_the_thread():
    st = StackStore()
    st.add_lock_time(1, 8, (C, A), wait_ns=500, hold_ns=0, thread_name="w")
    st.add_lock_time(1, 9, (B, A), wait_ns=0, hold_ns=700)
    t = st.totals()
    assert t["lock_wait"] == 500 and t["lock_hold"] == 700 and t["samples"] == 0
    rows = {(r.thread, r.state): r for r in st.iter_rows()}
    assert rows[(8, "wait")].frames == (C, A) and rows[(9, "run")].lock_hold_ns == 700


def test_json_round_trip_and_tolerance():
    st = fx.profile_store()
    doc = json.loads(json.dumps(st.to_json()))
    back = StackStore.from_json(doc)
    assert back.totals() == st.totals()
    assert list(back.iter_rows()) == list(st.iter_rows())
    assert store_from_result({}).totals()["samples"] == 0            # a session without stacks
    assert store_from_result({"profile": "garbage"}).totals()["samples"] == 0
    doc["rows"].append(["x", 1])                                      # a malformed row is skipped
    assert StackStore.from_json(doc).totals() == st.totals()


def test_a_sample_without_frames_gets_a_marker_leaf():
    st = StackStore()
    st.add(StackSample(1, 1, "m", (), "wait", 2, 20, 0))
    (row,) = list(st.iter_rows())
    assert [f.function for f in row.frames] == ["(no Python frames)"] and row.samples == 2


def test_deep_stacks_are_truncated_with_a_marker():
    st = StackStore(max_depth=8)
    deep = tuple(Frame("/w/r.py", "rec", i, 1) for i in range(100))
    st.add(StackSample(1, 1, "m", deep, "run", 1, 1, 1))
    (row,) = list(st.iter_rows())
    assert len(row.frames) == 8 and row.frames[:7] == deep[:7]       # the innermost frames are kept
    assert row.frames[-1].function == "(93 outer frames truncated)"
    assert st.dropped["truncated_stacks"] == 1


def test_bound_merges_into_other_stacks_and_counts():
    st = StackStore(max_stacks=10)
    for i in range(50):
        st.add(StackSample(1, 1, "m", (Frame("/w/a.py", f"f{i}", i, 1), A), "run", 2, 20, 20))
    assert len(st.stacks) == 10
    other = [r for r in st.iter_rows() if r.frames == (OTHER_STACKS,)]
    assert len(other) == 1 and other[0].samples == 2 * (50 - 9)
    assert st.dropped["samples_merged"] == 2 * 41 and st.dropped["stacks"] == 41
    assert st.totals()["samples"] == 100                              # nothing lost, only the call paths
    assert st.to_json()["dropped"]["samples_merged"] == 82


def test_memory_stays_within_the_bound():
    """Many distinct deep stacks (recursion of varying depth through many functions): the store keeps
    at most its bound of stacks and frame references, and its traced memory stops growing."""
    bound = dict(max_stacks=500, max_frames=5_000, max_frame_refs=30_000, max_depth=128)
    pool = [Frame(f"/w/m{i % 40}.py", f"rec{i % 300}", i % 7, 1) for i in range(2100)]
    st = StackStore(**bound)
    tracemalloc.start()
    try:
        peaks = []
        for batch in range(4):
            for i in range(1_500):
                n = batch * 1_500 + i
                frames = tuple(pool[n % 2000: n % 2000 + 20 + n % 100])   # distinct: start x depth
                st.add(StackSample(1, 1 + n % 16, f"t{n % 16}", frames, ("run", "wait")[n % 2], 1, 10, 5))
            peaks.append(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()
    assert len(st.stacks) <= bound["max_stacks"] and st.frame_refs <= bound["max_frame_refs"]
    assert len(st.frames) <= bound["max_frames"]
    assert st.dropped["samples_merged"] > 0 and st.totals()["samples"] == 6_000
    # once full, more distinct stacks cost (almost) nothing: the last batches grow memory by < 5%
    assert peaks[-1] <= peaks[1] * 1.05, peaks
