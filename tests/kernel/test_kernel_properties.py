"""Properties of the law and of both engines (hypothesis), and the Cython == twin cross-check."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from gyroscope.cyext import CellPool, KernelError, law
from gyroscope.cyext.ledger import compare, read_ledger, replay, verify
from gyroscope.cyext.twin import TwinCellPool
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import ENGINES  # noqa: E402  (the one engines list)

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

omega = st.integers(0, 4095)
byte = st.integers(0, 255)
words_st = st.lists(st.lists(byte, min_size=4, max_size=4), min_size=0, max_size=40)


# ---- the law ------------------------------------------------------------------------------------

@settings(max_examples=30, deadline=None)
@given(omega)
def test_light_cone_one_byte(w: int) -> None:
    counts = Counter(law.STEP_TABLE[w].tolist())
    assert len(counts) == 128 and set(counts.values()) == {2}


@settings(max_examples=10, deadline=None)
@given(omega)
def test_light_cone_two_bytes(w: int) -> None:
    second = law.STEP_TABLE[law.STEP_TABLE[w].astype(np.int64)]  # (256, 256)
    counts = np.bincount(second.reshape(-1), minlength=4096)
    assert counts.min() == 16 and counts.max() == 16


def test_rest_reaches_exactly_omega() -> None:
    seen, frontier = {law.omega12_to_state24(law.REST_OMEGA12)}, [law.omega12_to_state24(law.REST_OMEGA12)]
    while frontier:
        nxt = []
        for s in frontier:
            for b in range(256):
                t = law.step_state24(s, b)
                if t not in seen:
                    seen.add(t)
                    nxt.append(t)
        frontier = nxt
    assert seen == set(law.STATE24.tolist())


@given(omega, byte)
def test_chirality_transport(w: int, b: int) -> None:
    assert law.CHI6[law.step_omega12(w, b)] == law.CHI6[w] ^ law.Q6[b]


@given(omega, st.lists(byte, min_size=0, max_size=9))
def test_signature_equals_stepping(w: int, word: list[int]) -> None:
    stepped = w
    for b in word:
        stepped = law.step_omega12(stepped, b)
    assert law.apply_signature(w, law.word_signature(word)) == stepped


@given(st.lists(st.lists(byte, min_size=4, max_size=4), min_size=1, max_size=30))
def test_vectorised_signatures(words: list[list[int]]) -> None:
    arr = np.array(words, dtype=np.uint8)
    assert law.word_signatures(arr).tolist() == [law.word_signature(x) for x in words]
    o, e, p = law.parity_commitments(arr)
    assert list(zip(o.tolist(), e.tolist(), p.tolist())) == [law.parity_commitment(x) for x in words]


def test_bijection_per_byte() -> None:
    for b in range(256):
        assert len(set(law.STEP_TABLE[:, b].tolist())) == 4096


# ---- engines -------------------------------------------------------------------------------------

def _random_batch(rng: np.random.Generator, ids: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    return rng.choice(ids, n).astype(np.uint32), rng.integers(0, 256, (n, 4), dtype=np.uint8)


def _same_state(a, b) -> None:
    sa, sb = a.export_state(), b.export_state()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and np.array_equal(sa[k], sb[k]), k
    assert np.array_equal(a.bucket_weights(), b.bucket_weights())


@FAST
@given(seed=st.integers(0, 2**32 - 1), profile=st.sampled_from(["chirality", "shell"]))
def test_cython_equals_twin(seed: int, profile: str) -> None:
    rng = np.random.default_rng(seed)
    cy, tw = CellPool(32, profile), TwinCellPool(32, profile)
    for pool in (cy, tw):
        pool.allocate_many(20)
        pool.seed_omega(3, 1234)
        pool.seed_shell(4, 2)
        pool.seed_equality_horizon(5)
    ids, words = _random_batch(rng, np.arange(20), int(rng.integers(1, 400)))
    for pool in (cy, tw):
        pool.ingest(ids, words)
        pool.decay_resonance()
        pool.free(7)
        pool.ingest(ids[ids != 7][:50], words[ids != 7][:50])
    _same_state(cy, tw)
    ra, rb = cy.records(cy.active_cells()), tw.records(tw.active_cells())
    for k in ra:
        assert np.array_equal(ra[k], rb[k]), k
    for key in range(len(cy.bucket_weights())):
        assert cy.bucket_cells(key).tolist() == tw.bucket_cells(key).tolist()
        assert cy.bucket_population(key) == tw.bucket_population(key)


@pytest.mark.parametrize("engine", ENGINES)
@FAST
@given(seed=st.integers(0, 2**32 - 1))
def test_batch_equals_one_by_one(engine, seed: int) -> None:
    rng = np.random.default_rng(seed)
    a, b = engine(16), engine(16)
    a.allocate_many(10)
    b.allocate_many(10)
    ids, words = _random_batch(rng, np.arange(10), 120)
    a.ingest(ids, words)
    cuts = np.sort(rng.choice(np.arange(1, 120), 5, replace=False))
    for part_ids, part_words in zip(np.split(ids, cuts), np.split(words, cuts)):
        b.ingest(part_ids, part_words)
    _same_state(a, b)
    c = engine(16)
    c.allocate_many(10)
    for i in range(40):
        c.ingest(ids[i:i + 1], words[i:i + 1])
    c.ingest_packets(_packets(ids[40:], words[40:]))
    _same_state(a, c)


def _packets(ids: np.ndarray, words: np.ndarray) -> bytes:
    rec = np.empty(len(ids), dtype=[("c", "<u4"), ("w", "u1", (4,))])
    rec["c"], rec["w"] = ids, words
    return rec.tobytes()


@pytest.mark.parametrize("engine", ENGINES)
def test_bad_packets_apply_nothing(engine) -> None:
    pool = engine(8)
    pool.allocate_many(4)
    before = pool.export_state()
    good = np.array([[1, 2, 3, 4]] * 3, dtype=np.uint8)
    cases = [
        (np.array([0, 1, 5], dtype=np.uint32), good, "not allocated"),
        (np.array([0, 1, 8], dtype=np.uint32), good, "out of range"),
        (np.array([0, 1, -1]), good, "out of range"),
        (np.array([0, 1, 2], dtype=np.uint32), np.zeros((3, 3), dtype=np.uint8), "4-byte"),
        (np.array([0, 1, 2], dtype=np.uint32), np.full((3, 4), 300), "0..255"),
    ]
    for ids, words, msg in cases:
        with pytest.raises(KernelError, match=msg):
            pool.ingest(ids, words)
    with pytest.raises(KernelError, match="multiple of 8"):
        pool.ingest_packets(b"\x00" * 12)
    with pytest.raises(KernelError, match="not allocated"):
        pool.ingest_packets(_packets(np.array([0, 6], dtype=np.uint32), good[:2]))
    after = pool.export_state()
    for k in before:
        assert np.array_equal(before[k], after[k]), k
    assert issubclass(KernelError, ValueError)


@pytest.mark.parametrize("engine", ENGINES)
def test_lifecycle_and_queries(engine) -> None:
    pool = engine(8, "chirality")
    assert pool.profile_id == 0 and len(pool) == 0
    a = pool.allocate()
    b = pool.allocate("equality")
    c = pool.allocate("shell", 3)
    d = pool.allocate("omega", 0xFFF)
    assert [a, b, c, d] == [0, 1, 2, 3] and len(pool) == 4
    assert pool.record(a)["omega12"] == 0x03F and pool.record(a)["last_byte"] == 0xAA
    assert pool.record(b)["stabilizer_type"] == "equality" and pool.record(a)["stabilizer_type"] == "complement"
    assert pool.record(c)["omega12"] == 7 and pool.record(d)["chi6"] == 0
    assert pool.bucket_cells(0).tolist() == [b, d] and pool.bucket_population(0) == 2
    assert pool.co_resonant_cells(b).tolist() == [d]
    assert pool.cells_on_shell(6).tolist() == [a] and pool.cells_with_chi6(7).tolist() == [c]
    assert pool.chirality_distance(a, b) == 6
    pool.decay_resonance()
    assert pool.bucket_population(0) == 1 and pool.bucket_population(63) == 0
    pool.free(d)  # membership of bucket 0 changes: its weight is its count again
    assert pool.bucket_population(0) == 1 and not pool.is_allocated(d)
    assert pool.allocate() == d
    word = np.array([[10, 20, 30, 40]], dtype=np.uint8)
    pool.ingest(np.array([a], dtype=np.uint32), word)
    sig = law.word_signature([10, 20, 30, 40])
    assert pool.cells_with_signature(sig).tolist() == [a]
    assert pool.record(a)["omega12"] == law.apply_signature(0x03F, sig)
    pool.seed_rest(a)
    r = pool.record(a)
    assert r["step"] == 0 and r["omega_sig"] == 0 and not r["has_closed_word"] and r["valid_len"] == 0
    for bad in (lambda: pool.allocate("shell", 7), lambda: pool.allocate("omega", 4096),
                lambda: pool.allocate("nope"), lambda: pool.record(7), lambda: pool.free(99),
                lambda: pool.seed_shell(a, -1)):
        with pytest.raises(KernelError):
            bad()
    with pytest.raises(KernelError):
        engine(4, "nope")
    full = engine(2)
    full.allocate_many(2)
    with pytest.raises(KernelError, match="full"):
        full.allocate()


@pytest.mark.parametrize("engine", ENGINES)
def test_ring_wraps_and_histograms(engine) -> None:
    pool = engine(2)
    cid = pool.allocate()
    rng = np.random.default_rng(3)
    pool.ingest(np.zeros(100, dtype=np.uint32), rng.integers(0, 256, (100, 4), dtype=np.uint8))
    r = pool.record(cid)
    assert r["valid_len"] == 64 and r["step"] == 400
    assert sum(r["chi_hist64"]) == 64 and sum(r["shell_hist7"]) == 64 and sum(r["family_hist4"]) == 64
    assert 0 < r["chi_support_ratio"] <= 1 and 0 <= r["shell_entropy"] <= 1
    assert 0 < r["spectral_peak_ratio"] <= 1


@pytest.mark.parametrize("engine", ENGINES)
@FAST
@given(seed=st.integers(0, 2**32 - 1), profile=st.sampled_from(["chirality", "shell"]))
def test_snapshot_round_trip(engine, seed: int, profile: str, tmp_path_factory) -> None:
    tmp = tmp_path_factory.mktemp("snap")
    rng = np.random.default_rng(seed)
    pool = engine(24, profile)
    pool.allocate_many(int(rng.integers(1, 24)))
    if len(pool) > 2:
        pool.free(1)
    ids, words = _random_batch(rng, pool.active_cells(), int(rng.integers(0, 300)))
    pool.ingest(ids, words)
    pool.snapshot(tmp / "s.gyrg")
    for other in (CellPool, TwinCellPool):
        back = other.restore(tmp / "s.gyrg")
        assert back.profile == profile
        _same_state(pool, back)
        more_ids, more_words = _random_batch(rng, pool.active_cells(), 50)
        twin = engine.from_state(pool.export_state(), profile)
        back.ingest(more_ids, more_words)
        twin.ingest(more_ids, more_words)
        _same_state(back, twin)


@pytest.mark.parametrize("engine", ENGINES)
@FAST
@given(seed=st.integers(0, 2**32 - 1))
def test_replay_equals_live(engine, seed: int, tmp_path_factory) -> None:
    tmp = tmp_path_factory.mktemp("ledger")
    rng = np.random.default_rng(seed)
    live = engine(16, "shell", ledger=tmp / "a.gyrl")
    live.allocate_many(6)
    for _ in range(3):
        ids, words = _random_batch(rng, live.active_cells(), int(rng.integers(0, 60)))
        live.ingest(ids, words)
        op = int(rng.integers(0, 3))
        if op == 0:
            live.free(int(rng.choice(live.active_cells())))
        elif op == 1:
            live.allocate("omega", int(rng.integers(0, 4096)))
        else:
            live.seed_shell(int(rng.choice(live.active_cells())), int(rng.integers(0, 7)))
    live.snapshot(tmp / "a.gyrg")
    live.close()
    for other in (CellPool, TwinCellPool):
        _same_state(live, replay(tmp / "a.gyrl", engine=other))
    res = verify(tmp / "a.gyrl", tmp / "a.gyrg", engine=engine)
    assert res.ok, res.message
    assert compare(tmp / "a.gyrl", tmp / "a.gyrl") is None


def test_ledger_truncation_mismatch_and_compare(tmp_path) -> None:
    pool = CellPool(8, ledger=tmp_path / "l.gyrl")
    pool.allocate_many(3)
    words = np.arange(40, dtype=np.uint8).reshape(10, 4)
    pool.ingest(np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0], dtype=np.uint32), words)
    pool.snapshot(tmp_path / "s.gyrg")
    pool.close()
    data = (tmp_path / "l.gyrl").read_bytes()
    (tmp_path / "cut.gyrl").write_bytes(data[:-3])
    ids, w, truncated = read_ledger(tmp_path / "cut.gyrl")
    assert truncated == 5 and len(ids) == 12  # 3 seed records + 9 whole word records
    short = replay(tmp_path / "cut.gyrl")
    assert short.record(0)["step"] == 12 and short.record(1)["step"] == 12
    res = verify(tmp_path / "cut.gyrl", tmp_path / "s.gyrg")
    assert not res.ok and "differs first at cell 0" in res.message and "truncated" in res.message
    assert compare(tmp_path / "l.gyrl", tmp_path / "cut.gyrl") == 12
    changed = bytearray(data)
    changed[-1] ^= 1
    (tmp_path / "x.gyrl").write_bytes(bytes(changed))
    assert compare(tmp_path / "l.gyrl", tmp_path / "x.gyrl") == 12
    # re-opening a truncated ledger cuts the partial record off and appends after it
    again = CellPool(8, ledger=tmp_path / "cut.gyrl")
    again.allocate()
    again.close()
    assert read_ledger(tmp_path / "cut.gyrl")[2] == 0
    assert len(read_ledger(tmp_path / "cut.gyrl")[0]) == 13


def test_threads_share_a_pool() -> None:
    import threading
    rng = np.random.default_rng(5)
    ids = rng.integers(0, 64, 20000).astype(np.uint32)
    words = rng.integers(0, 256, (20000, 4), dtype=np.uint8)
    seq, par = CellPool(128), CellPool(128)
    seq.allocate_many(128)
    par.allocate_many(128)
    other = ids + 64
    for _ in range(5):
        seq.ingest(ids, words)
        seq.ingest(other, words)

    def run(cells: np.ndarray) -> None:
        for _ in range(5):
            par.ingest(cells, words)

    threads = [threading.Thread(target=run, args=(c,)) for c in (ids, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _same_state(seq, par)
