"""Fuzz the state-file and ledger readers: random and mutated files raise only the documented
errors (SnapshotError / LedgerError), never another exception, and never hang."""
from __future__ import annotations

import struct

import numpy as np
import pytest
from gyroscope.cyext import CellPool, LedgerError, SnapshotError, law, persist
from gyroscope.cyext.ledger import read_ledger, replay, verify
from gyroscope.cyext.twin import TwinCellPool
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _valid_snapshot() -> bytes:
    pool = CellPool(6, "chirality")
    pool.allocate_many(4)
    pool.free(2)
    rng = np.random.default_rng(11)
    ids = rng.choice(pool.active_cells(), 40).astype(np.uint32)
    pool.ingest(ids, rng.integers(0, 256, (40, 4), dtype=np.uint8))
    st_ = pool.export_state()
    return persist.encode(st_, capacity=pool.capacity, profile_id=pool.profile_id)


SNAP = _valid_snapshot()


def _load_bytes(tmp_path, data: bytes) -> None:
    p = tmp_path / "f.gyrg"
    p.write_bytes(data)
    for engine in (CellPool, TwinCellPool):
        try:
            pool = engine.restore(p)
        except SnapshotError as e:
            assert str(e) and "\n" not in str(e)
        else:
            assert pool.capacity >= 1
            pool.export_state()


@FUZZ
@given(data=st.binary(max_size=400))
def test_random_snapshot_bytes(tmp_path_factory, data: bytes) -> None:
    _load_bytes(tmp_path_factory.mktemp("r"), data)


@FUZZ
@given(data=st.binary(max_size=200))
def test_random_snapshot_body_after_valid_magic(tmp_path_factory, data: bytes) -> None:
    _load_bytes(tmp_path_factory.mktemp("m"), b"GYRG" + data)


@FUZZ
@given(pos=st.integers(0, len(SNAP) - 1), value=st.integers(0, 255), cut=st.integers(0, len(SNAP) + 8))
def test_mutated_snapshot(tmp_path_factory, pos: int, value: int, cut: int) -> None:
    data = bytearray(SNAP)
    data[pos] = value
    data = bytes(data[:cut]) if cut <= len(SNAP) else bytes(data) + b"\x00" * (cut - len(SNAP))
    _load_bytes(tmp_path_factory.mktemp("x"), data)


def test_snapshot_messages(tmp_path) -> None:
    cases = {
        "wrong magic": b"GYRX" + SNAP[4:],
        "version 9": SNAP[:4] + struct.pack("<I", 9) + SNAP[8:],
        "law hash mismatch": SNAP[:28] + bytes(32) + SNAP[60:],
        "truncated": SNAP[:-1],
        "trailing": SNAP + b"\x00",
    }
    buckets = np.frombuffer(SNAP[-256:], dtype="<u4").copy()
    k = int(np.flatnonzero(buckets)[0])
    buckets[k] += 1
    cases["inconsistent bucket counts"] = SNAP[:-256] + buckets.astype("<u4").tobytes()
    for msg, data in cases.items():
        (tmp_path / "s").write_bytes(data)
        with pytest.raises(SnapshotError, match=msg):
            CellPool.restore(tmp_path / "s")
    with pytest.raises(SnapshotError, match="cannot read"):
        CellPool.restore(tmp_path / "missing")
    assert CellPool.restore(_write(tmp_path / "ok", SNAP)).capacity == 6


def _write(p, data: bytes):
    p.write_bytes(data)
    return p


def _valid_ledger(tmp_path) -> bytes:
    pool = CellPool(5, ledger=tmp_path / "v.gyrl")
    pool.allocate_many(3)
    pool.ingest(np.array([0, 1, 2, 1], dtype=np.uint32), np.arange(16, dtype=np.uint8).reshape(4, 4))
    pool.free(1)
    pool.seed_shell(2, 4)
    pool.close()
    return (tmp_path / "v.gyrl").read_bytes()


def _read_and_replay(path) -> None:
    try:
        ids, words, truncated = read_ledger(path)
        assert len(ids) == len(words) and 0 <= truncated < 8
        for engine in (CellPool, TwinCellPool):
            replay(path, engine=engine)
    except LedgerError as e:
        assert str(e) and "\n" not in str(e)


@FUZZ
@given(data=st.binary(max_size=300))
def test_random_ledger_bytes(tmp_path_factory, data: bytes) -> None:
    tmp = tmp_path_factory.mktemp("lr")
    _read_and_replay(_write(tmp / "r.gyrl", data))
    head = struct.pack("<4sIIHH32s", b"GYRL", 1, 4, 0, 0, law.LAW_HASH_BYTES)
    _read_and_replay(_write(tmp / "h.gyrl", head + data))


@FUZZ
@given(pos=st.integers(0, 100), value=st.integers(0, 255), cut=st.integers(0, 120))
def test_mutated_ledger(tmp_path_factory, pos: int, value: int, cut: int) -> None:
    tmp = tmp_path_factory.mktemp("lm")
    data = bytearray(_valid_ledger(tmp))
    data[pos % len(data)] = value
    _read_and_replay(_write(tmp / "m.gyrl", bytes(data[:cut])))


def test_ledger_messages(tmp_path) -> None:
    data = _valid_ledger(tmp_path)
    cases = {"wrong magic": b"XXXX" + data[4:], "version 7": data[:4] + struct.pack("<I", 7) + data[8:],
             "law hash mismatch": data[:16] + bytes(32) + data[48:], "truncated ledger header": data[:20]}
    for msg, bad in cases.items():
        with pytest.raises(LedgerError, match=msg):
            read_ledger(_write(tmp_path / "b.gyrl", bad))
    # a word for a cell that was never seeded cannot be replayed
    rec = struct.pack("<I4s", 3, b"abcd")
    with pytest.raises(LedgerError, match="not allocated"):
        replay(_write(tmp_path / "u.gyrl", data[:48] + rec))
    with pytest.raises(LedgerError, match="capacity"):
        CellPool(9, ledger=tmp_path / "v.gyrl")
    pool = CellPool(5)
    pool.snapshot(tmp_path / "empty.gyrg")
    res = verify(tmp_path / "v.gyrl", tmp_path / "empty.gyrg")
    assert not res.ok and "mismatch" in res.message
