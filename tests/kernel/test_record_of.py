"""cyext/_views.pyx: the compiled record of a cell is, bit for bit, what the formulas give in
Python (the reference below), on random cells and on the kernel's own."""
from __future__ import annotations

import math
import random
import struct
from typing import Any

import pytest
from gyroscope.cyext import lawcore as law
from gyroscope.cyext.views import record_of

_LOG2_7 = math.log2(7.0)


def python_record_of(cell_id: int, row: dict[str, Any], current_resonance: int) -> dict[str, Any]:
    """The record's formulas as plain Python (the compiled record_of's reference)."""
    w = int(row["omega12"])
    lb = int(row["last_byte"])
    n = int(row["chi_valid_len"])
    safe_n = n if n > 0 else 1
    chi_hist = [int(x) for x in row["chi_hist64"]]
    shell_hist = [int(x) for x in row["shell_hist7"]]
    fam_hist = [int(x) for x in row["family_hist4"]]
    chi = law.CHI6[w]
    shell = law.POPCOUNT6[chi]

    spectral = law.wht64(chi_hist)
    sum_p2 = sum((h / safe_n) ** 2 for h in chi_hist)
    eff = 64.0 / sum_p2 if n > 0 and sum_p2 > 0 else 0.0
    rho = sum(s * h for s, h in enumerate(shell_hist)) / (6.0 * safe_n) if n > 0 else 0.0
    eta = 1.0 - 2.0 * rho if n > 0 else 0.0
    chi_aniso = [1.0 - 2.0 * sum(h for c, h in enumerate(chi_hist) if (c >> b) & 1) / safe_n if n > 0 else 0.0
                 for b in range(6)]
    gauge_aniso = [1.0 - 2.0 * sum(h for f, h in enumerate(fam_hist) if (f >> b) & 1) / safe_n if n > 0 else 0.0
                   for b in range(2)]
    ent = 0.0
    if n > 0:
        ent = -sum(p * math.log2(p) for p in (h / safe_n for h in shell_hist) if p > 0) / _LOG2_7
    norm = math.sqrt(sum(x * x for x in spectral))
    peak = max(abs(x) for x in spectral) / norm if norm > 0 else 0.0
    support = sum(1 for h in chi_hist if h > 0) / safe_n if n > 0 else 0.0
    return {
        "cell_id": int(cell_id),
        "step": int(row["step"]),
        "omega12": w,
        "state24": law.STATE24[w],
        "last_byte": lb,
        "family": law.FAMILY[lb],
        "micro_ref": law.MICRO_REF[lb],
        "q6": law.Q6[lb],
        "chi6": chi,
        "shell": shell,
        "horizon_distance": law.HORIZON_DISTANCE[w],
        "ab_distance": law.AB_DISTANCE[w],
        "omega_sig": int(row["omega_sig"]),
        "parity_O12": int(row["parity_O12"]),
        "parity_E12": int(row["parity_E12"]),
        "parity_bit": int(row["parity_bit"]),
        "resonance_key": int(row["resonance_key"]),
        "current_resonance": int(current_resonance),
        "spectral64": spectral,
        "shell_spectral": law.krawtchouk7(shell_hist),
        "gauge_spectral": law.k4char4(fam_hist, n),
        "chi_hist64": chi_hist,
        "shell_hist7": shell_hist,
        "family_hist4": fam_hist,
        "effective_support": eff,
        "occupation": rho,
        "spectral_damping": eta,
        "chi_anisotropy": chi_aniso,
        "gauge_anisotropy": gauge_aniso,
        "optical_coordinates": [shell / 6.0, (6.0 - shell) / 6.0, (2.0 * shell - 6.0) / 6.0],
        "stabilizer_type": law.stabilizer(chi),
        "valid_len": n,
        "has_closed_word": bool(row["has_closed_word"]),
        "word4": [int(x) for x in row["word4"]],
        "u6": (w >> 6) & 0x3F,
        "v6": w & 0x3F,
        "chi_support_ratio": support,
        "shell_entropy": ent,
        "spectral_peak_ratio": peak,
    }


def _bits(v: Any) -> Any:
    """A value with every float replaced by its bits (so -0.0 != 0.0 and nan == nan)."""
    if isinstance(v, float):
        return ("f", struct.pack("<d", v))
    if isinstance(v, (list, tuple)):
        return [_bits(x) for x in v]
    return (type(v).__name__, v)


def _row(rng: random.Random, n_mode: str) -> dict[str, Any]:
    scale = {"empty": 0, "small": 3, "large": 10_000_000}[n_mode]
    chi = [rng.randrange(scale + 1) if rng.random() < 0.6 else 0 for _ in range(64)]
    n = sum(chi)
    shell = [0] * 7
    for c, h in enumerate(chi):
        shell[law.POPCOUNT6[c]] += h
    fam = [rng.randrange(n + 1) for _ in range(3)]
    fam.append(max(0, n - sum(fam)))
    w4 = [rng.randrange(256) for _ in range(4)]
    return {"omega12": rng.randrange(4096), "step": rng.randrange(1 << 40), "has_closed_word": rng.random() < 0.5,
            "last_byte": w4[3], "word4": w4, "chi_valid_len": n, "chi_hist64": chi, "shell_hist7": shell,
            "family_hist4": fam, "omega_sig": rng.randrange(1 << 13), "parity_O12": rng.randrange(4096),
            "parity_E12": rng.randrange(4096), "parity_bit": rng.randrange(2), "resonance_key": rng.randrange(1 << 20)}


@pytest.mark.parametrize("n_mode", ["empty", "small", "large"])
def test_compiled_record_is_the_python_formulas_bit_for_bit(n_mode):
    rng = random.Random(20261202)
    for i in range(400):
        row = _row(rng, n_mode)
        got, want = record_of(i, row, 7), python_record_of(i, row, 7)
        assert list(got) == list(want)
        for field in want:
            assert _bits(got[field]) == _bits(want[field]), (field, got[field], want[field])


@pytest.mark.parametrize("engine", ["CellPool", "TwinCellPool"])
def test_records_of_the_kernels_cells_are_the_python_formulas(engine):
    import numpy as np
    from gyroscope.cyext import CellPool
    from gyroscope.cyext.twin import TwinCellPool
    pool = {"CellPool": CellPool, "TwinCellPool": TwinCellPool}[engine](16, "chirality")
    ids = pool.allocate_many(12)
    rng = np.random.default_rng(7)
    for _ in range(30):
        chosen = rng.choice(ids, size=40)
        pool.ingest(chosen, rng.integers(0, 256, size=(40, 4)))
    weights = pool._core_weights()
    for cid in ids.tolist():
        row = pool._row(cid)
        want = python_record_of(cid, row, weights[row["resonance_key"]])
        assert _bits(list(pool.record(cid).items())) == _bits(list(want.items()))
