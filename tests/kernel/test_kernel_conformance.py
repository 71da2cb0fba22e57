"""Every conformance vector of /work/shared/conformance, for both engines."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from gyroscope.cyext import law, law_hash


def shared_dir() -> Path:
    env = os.environ.get("GYROSCOPE_SHARED")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "shared"


CONF = shared_dir() / "conformance"
pytestmark = pytest.mark.skipif(not CONF.is_dir(), reason=f"conformance vectors not found at {CONF}")

from tests.conftest import ENGINES  # noqa: E402  (the one engines list)


def _cells() -> list[dict]:
    with open(CONF / "cells.jsonl") as f:
        return [json.loads(line) for line in f if line.strip()]


def test_law_hash_matches() -> None:
    expected = (CONF / "LAW_SHA256").read_text().strip()
    assert law_hash() == expected
    assert law.LAW_HASH == expected


def test_byte_tables() -> None:
    rows = json.loads((CONF / "byte_tables.json").read_text())
    assert [r["byte"] for r in rows] == list(range(256))
    tables = {"intron": law.INTRON, "family": law.FAMILY, "micro_ref": law.MICRO_REF, "mask12": law.MASK12,
              "eps_a6": law.EPS_A6, "eps_b6": law.EPS_B6, "q6": law.Q6, "omega_sig": law.SIG1}
    for name, table in tables.items():
        assert table.tolist() == [r[name] for r in rows], name
    assert [law.word_signature([b]) for b in range(256)] == [r["omega_sig"] for r in rows]


def test_omega_step_table() -> None:
    expected = np.fromfile(CONF / "omega_step_4096x256_u16le.bin", dtype="<u2").reshape(4096, 256)
    assert np.array_equal(law.STEP_TABLE, expected)
    # the scalar step and the 24-bit step agree with the table on a sample
    rng = np.random.default_rng(7)
    for w, b in zip(rng.integers(0, 4096, 500).tolist(), rng.integers(0, 256, 500).tolist()):
        assert law.step_omega12(w, b) == expected[w, b]
        s = law.step_state24(law.omega12_to_state24(w), b)
        assert law.state24_to_omega12(s) == expected[w, b]


def test_state24_chart() -> None:
    expected = np.fromfile(CONF / "omega_state24_4096_u32le.bin", dtype="<u4")
    assert np.array_equal(law.STATE24, expected)
    assert [law.omega12_to_state24(w) for w in range(4096)] == expected.tolist()
    assert [law.state24_to_omega12(int(s)) for s in expected] == list(range(4096))
    assert law.omega12_to_state24(law.REST_OMEGA12) == (law.REST_A12 << 12) | law.REST_B12
    assert np.all(law.HORIZON_DISTANCE.astype(int) + law.AB_DISTANCE == 12)


def test_words() -> None:
    rows = json.loads((CONF / "words.json").read_text())
    words = np.array([r["word"] for r in rows], dtype=np.uint8)
    assert law.word_signatures(words).tolist() == [r["omega_sig"] for r in rows]
    o12, e12, pb = law.parity_commitments(words)
    assert o12.tolist() == [r["parity_O12"] for r in rows]
    assert e12.tolist() == [r["parity_E12"] for r in rows]
    assert pb.tolist() == [r["parity_bit"] for r in rows]
    for r in rows[:300]:
        assert law.word_signature(r["word"]) == r["omega_sig"]
        assert law.parity_commitment(r["word"]) == (r["parity_O12"], r["parity_E12"], r["parity_bit"])


def _seed(pool, d: dict) -> int:
    seed = d["seed"]
    if seed.startswith("shell"):
        cid = pool.allocate("shell", int(seed[5:]))
    elif seed == "omega":
        cid = pool.allocate("omega", d["seed_omega12"])
    else:
        cid = pool.allocate(seed)
    assert pool.record(cid)["omega12"] == d["seed_omega12"]
    return cid


def _assert_record(got: dict, exp: dict, where: str) -> None:
    for field, value in exp.items():
        g = np.asarray(got[field], dtype=np.float64)
        e = np.asarray(value, dtype=np.float64)
        assert g.shape == e.shape, f"{where} {field}: shape {g.shape} != {e.shape}"
        assert np.allclose(g, e, rtol=1e-9, atol=1e-12), f"{where} {field}: {got[field]} != {value}"
        if isinstance(value, int):
            assert got[field] == value, f"{where} {field}"


@pytest.mark.parametrize("engine", ENGINES)
def test_cells(engine) -> None:
    cells = _cells()
    assert len(cells) == 40
    pool = engine(64)
    for n_cell, d in enumerate(cells):
        cid = _seed(pool, d)
        # a neighbour cell fed other words must not disturb this one
        other = pool.allocate("rest")
        words = np.array(d["words"], dtype=np.uint8)
        done = 0
        for k in sorted(d["records"], key=int):
            upto = int(k)
            chunk = words[done:upto]
            ids = np.full(2 * len(chunk), cid, dtype=np.uint32)
            ids[1::2] = other
            inter = np.empty((2 * len(chunk), 4), dtype=np.uint8)
            inter[0::2] = chunk
            inter[1::2] = chunk[::-1]
            pool.ingest(ids, inter)
            done = upto
            rec = pool.record(cid)
            _assert_record(rec, d["records"][k], f"cell {n_cell} ({d['seed']}) after {k} words")
            assert rec["cell_id"] == cid
            assert rec["valid_len"] == min(64, 4 * upto)
            assert rec["has_closed_word"] == (upto > 0)
            if upto:
                assert rec["word4"] == words[upto - 1].tolist()
        pool.free(cid)
        pool.free(other)


@pytest.mark.parametrize("engine", ENGINES)
def test_records_vectorised_match_record(engine) -> None:
    cells = _cells()[:12]
    pool = engine(16)
    ids = [_seed(pool, d) for d in cells]
    for cid, d in zip(ids, cells):
        pool.ingest(np.full(len(d["words"]), cid, dtype=np.uint32), np.array(d["words"], dtype=np.uint8))
    recs = pool.records(np.array(ids))
    for i, cid in enumerate(ids):
        one = pool.record(cid)
        for field, arr in recs.items():
            assert np.asarray(arr[i]).tolist() == (one[field] if not isinstance(one[field], tuple)
                                                   else list(one[field])), field
        exp = cells[i]["records"][str(len(cells[i]["words"]))]
        _assert_record(one, exp, f"cell {i}")
