import threading
import time

import numpy as np
import pytest
from gyroscope.schedulers.dask_priority import coherence_priority, coherent_map, coherent_submit

distributed = pytest.importorskip("distributed")

ORDER: list = []
GATE = threading.Event()


def _block():
    GATE.wait(30)
    return "gate"


def _record(tag, _data=None):
    ORDER.append(tag)
    return tag


def test_priority_mapping():
    assert coherence_priority(1.0) == 100 > coherence_priority(0.5) == 50 > coherence_priority(0.29) == -71
    assert coherence_priority(None) == 50


def test_high_coherence_runs_first_on_busy_worker():
    ORDER.clear()
    GATE.clear()
    rng = np.random.default_rng(0)
    noisy = [rng.standard_normal(256) for _ in range(4)]
    smooth = [np.sin(np.linspace(0, 2 + i, 256)) for i in range(4)]
    import dask

    # worker-saturation inf: every task goes to the (busy) worker at once and waits in its ready heap,
    # which is ordered by priority. (With scheduler-side queuing, the first tasks of a group are not
    # yet "root-ish" and bypass the priority queue.)
    with dask.config.set({"distributed.scheduler.worker-saturation": "inf"}), \
            distributed.Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None) as client:
        gate = client.submit(_block, priority=1000, pure=False)
        deadline = time.monotonic() + 10
        while not client.processing() or not any(client.processing().values()):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        futs = [coherent_submit(client, _record, f"noisy{i}", d, data=d, pure=False) for i, d in enumerate(noisy)]
        futs += [coherent_submit(client, _record, f"smooth{i}", d, data=d, pure=False) for i, d in enumerate(smooth)]
        futs += coherent_map(client, np.sum, [np.ones(8)], pure=False)
        sched = client.cluster.scheduler
        while len(sched.tasks) < len(futs) + 1:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(0.2)
        GATE.set()
        client.gather(futs + [gate])
    assert sorted(ORDER) == sorted([f"noisy{i}" for i in range(4)] + [f"smooth{i}" for i in range(4)])
    assert all(t.startswith("smooth") for t in ORDER[:4]), ORDER


LANE = {"now": 0, "max": 0}
LANE_MU = threading.Lock()


def _dask_locked(i):
    with LANE_MU:
        LANE["now"] += 1
        LANE["max"] = max(LANE["max"], LANE["now"])
    time.sleep(0.01)
    with LANE_MU:
        LANE["now"] -= 1
    return i


def _dask_hot(n):
    s = 0
    for k in range(n):
        s += k
    return s


def _dec(fn, action, kind):
    c = fn.__code__
    return {"action": action, "kind": kind, "file": c.co_filename, "function": c.co_qualname,
            "line": c.co_firstlineno + 1, "threads": [], "call_sites": []}


class _FakeClient:
    def __init__(self, resources):
        self.resources, self.calls = resources, []

    def scheduler_info(self):
        return {"workers": {"tcp://w1": {"resources": self.resources}}}

    def submit(self, fn, *args, **kwargs):
        self.calls.append(kwargs)
        return kwargs


def test_live_decisions_give_priority_and_resources():
    from gyroscope.schedulers import dask_priority, live
    live.inject([_dec(_dask_locked, "mitigate_contention", "lock"), _dec(_dask_hot, "specialize_hot_loop", "loop")])
    try:
        with_res, without = _FakeClient({"gyroscope-lock": 1}), _FakeClient({})
        assert coherent_submit(with_res, _dask_hot, 10)["priority"] == 100           # hot: coherence 1.0
        assert coherent_submit(with_res, _dask_hot, 10, coherence=0.5)["priority"] == 50  # a caller's hint wins
        assert coherent_submit(with_res, _dask_locked, 1)["resources"] == {"gyroscope-lock": 1}
        assert coherent_submit(with_res, _dask_locked, 1, resources={"x": 1})["resources"] == {"x": 1}
        assert "resources" not in coherent_submit(without, _dask_locked, 1)        # nobody declares it: not bounded
        assert "resources" not in coherent_submit(with_res, len, [1])
        (act,) = [a for a in dask_priority.actions if a["lock"]["function"] == "_dask_locked"]
        assert act["action"] == "dask_lane" and act["routed"] == 3 and act["resource"] == "gyroscope-lock"
    finally:
        live.inject(None)


def test_decided_lock_tasks_are_bounded_by_the_worker_resource():
    from gyroscope.schedulers import live
    live.inject([_dec(_dask_locked, "mitigate_contention", "lock")])
    LANE.update(now=0, max=0)
    try:
        with distributed.Client(processes=False, n_workers=1, threads_per_worker=4, dashboard_address=None,
                                resources={"gyroscope-lock": 1}) as client:
            futs = [coherent_submit(client, _dask_locked, i, pure=False) for i in range(12)]
            assert client.gather(futs) == list(range(12))
    finally:
        live.inject(None)
    assert LANE["max"] == 1
