import threading
from concurrent.futures import CancelledError, wait

import pytest
from gyroscope.schedulers.executor import CoherenceExecutor, PolicyQueue, Task
from hypothesis import given, settings
from hypothesis import strategies as st

hint = st.tuples(st.floats(0, 1, allow_nan=False), st.integers(-3, 3), st.one_of(st.none(), st.integers(0, 3)),
                 st.one_of(st.none(), st.integers(0, 63)))


def _noop():
    return None


def _policy_order(hints, **kw):
    q = PolicyQueue(**kw)
    for i, (c, u, k, chi) in enumerate(hints):
        q.push(Task(_noop, coherence=c, urgency=u, key=k, chi6=chi, args=(i,)))
    out = []
    while len(q):
        out.extend(t.args[0] for t in q.pop_batch())
    return out


def _run_gated(hints, **kw):
    """One worker blocked on a gate while all tasks are submitted; returns the execution order."""
    order, gate = [], threading.Event()
    with CoherenceExecutor(1, **kw) as ex:
        ex.submit_with(gate.wait, coherence=1.0, urgency=99)
        while ex.stats["pending"]:  # the worker has taken the gate task
            pass
        futs = [ex.submit_with(order.append, i, coherence=c, urgency=u, key=k, chi6=chi)
                for i, (c, u, k, chi) in enumerate(hints)]
        gate.set()
        wait(futs)
    return order


@settings(max_examples=25, deadline=None)
@given(st.lists(hint, max_size=25), st.sampled_from([0.0, 0.01, 0.2]), st.integers(1, 4))
def test_execution_order_equals_policy(hints, aging, batch):
    kw = {"aging_step": aging, "max_batch_size": batch}
    order = _run_gated(hints, **kw)
    assert sorted(order) == list(range(len(hints)))  # exactly once each
    expected = _policy_order_after_one_dispatch(hints, **kw)
    assert order == expected


def _policy_order_after_one_dispatch(hints, **kw):
    q = PolicyQueue(**kw)
    q.dispatched = 1
    for i, (c, u, k, chi) in enumerate(hints):
        q.push(Task(_noop, coherence=c, urgency=u, key=k, chi6=chi, args=(i,)))
    out = []
    while len(q):
        out.extend(t.args[0] for t in q.pop_batch())
    return out


def _reference_order(hints, aging_step, max_batch_size):
    """Brute force: at each dispatch sort all pending by rank; batch = head + co-resonant in order."""
    from gyroscope.schedulers.batching import co_resonant
    q = PolicyQueue(aging_step=aging_step, max_batch_size=max_batch_size)  # used for rank() only
    pending = []
    for i, (c, u, k, chi) in enumerate(hints):
        t = Task(_noop, coherence=c, urgency=u, key=k, chi6=chi, args=(i,))
        t.seq, t.submitted_at, t.deferred = i, 0, c < q.defer_below
        pending.append(t)
    out = []
    while pending:
        ordered = sorted(pending, key=q.rank, reverse=True)
        head = ordered[0]
        batch = [head] + [t for t in ordered[1:] if co_resonant(t.key, t.chi6, head.key, head.chi6)]
        batch = batch[:max_batch_size]
        out.extend(t.args[0] for t in batch)
        pending = [t for t in pending if t not in batch]
        q.dispatched += len(batch)
    return out


@settings(max_examples=100, deadline=None)
@given(st.lists(hint, max_size=30), st.sampled_from([0.0, 0.01, 0.3]), st.integers(1, 4))
def test_heap_policy_equals_brute_force(hints, aging, batch):
    assert _policy_order(hints, aging_step=aging, max_batch_size=batch) == _reference_order(hints, aging, batch)


def test_policy_without_aging_is_coherence_then_urgency_and_defers():
    hints = [(0.9, 0, None, None), (0.1, 5, None, None), (0.9, 3, None, None), (0.5, 0, None, None),
             (0.29, 9, None, None)]
    assert _policy_order(hints, aging_step=0.0, max_batch_size=1) == [2, 0, 3, 4, 1]


def test_deferred_task_is_not_dropped_and_ages_up():
    q = PolicyQueue(aging_step=0.1, max_batch_size=1)
    low = Task(_noop, coherence=0.0, args=("low",))
    q.push(low)
    ran = []
    for i in range(40):  # a stream of high-coherence work arriving one per dispatch
        q.push(Task(_noop, coherence=1.0, args=(i,)))
        ran.extend(t.args[0] for t in q.pop_batch())
        if "low" in ran:
            break
    assert "low" in ran and ran.index("low") <= 2 / 0.1 + 2  # the documented bound


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(hint, max_size=3), min_size=1, max_size=30), st.sampled_from([0.05, 0.25]),
       st.integers(1, 3))
def test_starvation_bound(arrivals, aging, batch):
    """Each task runs within batch * (N0 + A + 1) dispatches (see executor module docstring)."""
    q = PolicyQueue(aging_step=aging, max_batch_size=batch)
    k = int(-(-2.0 // aging))
    info, arrived_at, ran_at, seq = {}, [], {}, 0
    step = 0
    while step < len(arrivals) or len(q):
        for c, u, key, chi in (arrivals[step] if step < len(arrivals) else []):
            info[seq] = (len(q), q.dispatched)
            arrived_at.append(q.dispatched)
            q.push(Task(_noop, coherence=c, urgency=u, key=key, chi6=chi, args=(seq,)))
            seq += 1
        for t in q.pop_batch():
            ran_at[t.args[0]] = q.dispatched
        step += 1
    assert sorted(ran_at) == list(range(seq))
    for tid, (n0, d0) in info.items():
        a = sum(1 for d in arrived_at if d0 <= d <= d0 + k) - 1
        assert ran_at[tid] - d0 <= batch * (n0 + a + 1)


def test_batches_run_back_to_back_on_one_worker():
    seen, gate = [], threading.Event()
    with CoherenceExecutor(2, max_batch_size=4) as ex:
        blockers = [ex.submit_with(gate.wait, coherence=1.0) for _ in range(2)]
        while ex.stats["pending"]:
            pass
        futs = [ex.submit_with(lambda i: seen.append((i, threading.get_ident())), i, coherence=0.5, key=i % 2)
                for i in range(8)]
        gate.set()
        wait(futs + blockers)
        assert ex.stats["tasks_in_multi_batches"] == 8
    by_key = {}
    for i, ident in seen:
        by_key.setdefault(i % 2, set()).add(ident)
    assert all(len(v) == 1 for v in by_key.values())


def test_exceptions_propagate_and_map():
    with CoherenceExecutor(3) as ex:
        f = ex.submit(lambda: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            f.result()
        assert list(ex.map(pow, [2, 3], [3, 2])) == [8, 9]
        # hints never clash with fn's kwargs through submit()
        assert ex.submit(dict, coherence=3, urgency=4).result() == {"coherence": 3, "urgency": 4}
        assert ex.submit_with(dict, coherence=0.9, x=1).result() == {"x": 1}


def test_shutdown_semantics():
    ex = CoherenceExecutor(1)
    gate = threading.Event()
    first = ex.submit(gate.wait)
    while ex.stats["pending"]:
        pass
    rest = [ex.submit(int, i) for i in range(5)]
    ex.shutdown(wait=False, cancel_futures=True)
    with pytest.raises(RuntimeError):
        ex.submit(int)
    gate.set()
    ex.shutdown(wait=True)
    assert first.result() is True
    for f in rest:
        assert f.cancelled()
        with pytest.raises(CancelledError):
            f.result()


def test_shutdown_wait_runs_pending():
    ex = CoherenceExecutor(2)
    futs = [ex.submit_with(sum, [i, 1], coherence=0.05) for i in range(20)]  # all deferred
    ex.shutdown(wait=True)
    assert [f.result() for f in futs] == [i + 1 for i in range(20)]
    assert ex.stats["deferred"] == 20


def test_invalid_max_workers():
    with pytest.raises(ValueError):
        CoherenceExecutor(0)


def test_concurrent_submitters_lose_no_wakeup():
    """Submits do not take the policy lock (an inbox the workers move into the policy); idle
    workers are woken exactly when needed: with several threads submitting in small bursts
    separated by idle gaps, every task runs exactly once and nothing is left waiting."""
    import time
    ran: list[int] = []
    with CoherenceExecutor(3) as ex:
        def submitter(base: int) -> list:
            futs = []
            for burst in range(40):
                futs += [ex.submit(ran.append, base + burst * 10 + k) for k in range(10)]
                if burst % 4 == 0:
                    time.sleep(0.001)   # the workers go idle in between
            return futs
        with CoherenceExecutor(4) as submitters:
            all_futs = [f for fs in submitters.map(submitter, range(0, 4000, 1000)) for f in fs]
        done, not_done = wait(all_futs, timeout=60)
        assert not not_done
        assert ex.stats["pending"] == 0
    assert sorted(ran) == sorted(b + i for b in range(0, 4000, 1000) for i in range(400))


def test_shutdown_racing_submits_runs_or_cancels_each_task_once():
    """A submit either lands before shutdown (its task runs, or is cancelled with
    cancel_futures) or raises RuntimeError after it; nothing runs twice or hangs."""
    ran: list[int] = []
    ex = CoherenceExecutor(2)
    accepted, refused = [], 0
    stop = threading.Event()

    def submitter() -> None:
        nonlocal refused
        i = 0
        while not stop.is_set():
            try:
                accepted.append(ex.submit(ran.append, i))
            except RuntimeError:
                refused += 1
                return
            i += 1

    t = threading.Thread(target=submitter)
    t.start()
    while len(accepted) < 2000:
        pass
    ex.shutdown(wait=True, cancel_futures=True)
    stop.set()
    t.join(timeout=30)
    assert refused == 1
    assert all(f.done() for f in accepted)   # shutdown(wait=True) returned: run or cancelled
    ok = [f for f in accepted if not f.cancelled()]
    assert len(ran) == len(ok) and len(set(ran)) == len(ran)


def test_plain_mode_is_the_policy_order_and_a_hint_switches_to_the_policy():
    """submit() only and no decision: the workers take tasks in submission order without the
    policy lock (the policy's order for tasks without hints). A hinted task then ranks among
    the plain tasks still pending exactly as the policy says."""
    order, gate = [], threading.Event()
    with CoherenceExecutor(1) as ex:
        first = ex.submit(gate.wait)
        while ex.stats["pending"]:
            pass
        futs = [ex.submit(order.append, i) for i in range(5)]
        futs.append(ex.submit_with(order.append, "urgent", coherence=0.9))
        futs += [ex.submit(order.append, i) for i in range(5, 8)]
        gate.set()
        wait(futs + [first])
        assert ex.stats["dispatched"] == 10
    assert order == ["urgent", 0, 1, 2, 3, 4, 5, 6, 7]
    plain = []
    with CoherenceExecutor(1) as ex:
        wait([ex.submit(plain.append, i) for i in range(200)])
        assert ex.stats["dispatched"] == 200
    assert plain == list(range(200))
