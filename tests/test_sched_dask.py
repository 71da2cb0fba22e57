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
