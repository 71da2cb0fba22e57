"""The spec scores on real kernel cells (compiled pool and its pure-Python twin) fed word sequences."""
from __future__ import annotations

import random

import numpy as np
import pytest
from gyroscope.agent import actuators as A


def pools():
    out = []
    try:
        from gyroscope.cyext import CellPool
        out.append(CellPool)
    except ImportError:  # pragma: no cover
        pass
    from gyroscope.cyext.twin import TwinCellPool
    out.append(TwinCellPool)
    return out


@pytest.mark.parametrize("pool_cls", pools(), ids=lambda c: c.__name__)
def test_repetitive_cell_is_hotter_than_dispersed_cell(pool_cls):
    rng = random.Random(7)
    rep = [[1, 2, 3, 4]] * 200
    var = [[rng.getrandbits(8) for _ in range(4)] for _ in range(200)]
    pool = pool_cls(capacity=8)
    a, b = pool.allocate(), pool.allocate()
    pool.ingest(np.array([a] * 200 + [b] * 200, dtype=np.int64), np.array(rep + var, dtype=np.uint8))
    ra, rb = pool.record(a), pool.record(b)
    pa, pb = A.profile_entity(ra), A.profile_entity(rb)
    assert pa["hot_loop_score"] > pb["hot_loop_score"] and pb["contention_score"] > pa["contention_score"]
    assert pb["action"] == "mitigate_contention"
    for rec in (ra, rb):
        # the derived inputs equal the spec's definitions recomputed from the raw histograms
        raw = {k: rec[k] for k in ("chi_hist64", "shell_hist7", "spectral64", "valid_len")}
        s, h, p = A.structural_inputs(raw)
        assert s == pytest.approx(rec["chi_support_ratio"])
        assert h == pytest.approx(rec["shell_entropy"])
        assert p == pytest.approx(rec["spectral_peak_ratio"])
