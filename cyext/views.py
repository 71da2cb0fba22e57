"""SLCP records (spec §13): every field of one cell's record, computed from its values.

Both engines hand `record_of` the same values (their `_row(cid)`), so a record means the same
thing whichever engine made it; the engines differ only in how they evolve state, which the
conformance and cross-check tests compare. It is plain Python (a session reads records without
numpy); `stack_records` turns several records into the numpy arrays of `PoolAPI.records`.
"""
from __future__ import annotations

import math
from typing import Any

from . import lawcore as law

# Each field's numpy dtype and per-cell shape in PoolAPI.records (the order of a record).
FIELDS: dict[str, tuple[str, tuple[int, ...]]] = {
    "cell_id": ("u4", ()), "step": ("u8", ()), "omega12": ("i4", ()), "state24": ("i4", ()),
    "last_byte": ("u1", ()), "family": ("i8", ()), "micro_ref": ("i8", ()), "q6": ("i8", ()),
    "chi6": ("i8", ()), "shell": ("i8", ()), "horizon_distance": ("i8", ()), "ab_distance": ("i8", ()),
    "omega_sig": ("i4", ()), "parity_O12": ("u2", ()), "parity_E12": ("u2", ()), "parity_bit": ("u1", ()),
    "resonance_key": ("u4", ()), "current_resonance": ("i8", ()), "spectral64": ("f8", (64,)),
    "shell_spectral": ("f8", (7,)), "gauge_spectral": ("f8", (4,)), "chi_hist64": ("u2", (64,)),
    "shell_hist7": ("u2", (7,)), "family_hist4": ("u2", (4,)), "effective_support": ("f8", ()),
    "occupation": ("f8", ()), "spectral_damping": ("f8", ()), "chi_anisotropy": ("f8", (6,)),
    "gauge_anisotropy": ("f8", (2,)), "optical_coordinates": ("f8", (3,)), "stabilizer_type": ("O", ()),
    "valid_len": ("i8", ()), "has_closed_word": ("?", ()), "word4": ("u1", (4,)), "u6": ("i8", ()),
    "v6": ("i8", ()), "chi_support_ratio": ("f8", ()), "shell_entropy": ("f8", ()),
    "spectral_peak_ratio": ("f8", ()),
}
_LOG2_7 = math.log2(7.0)


def record_of(cell_id: int, row: dict[str, Any], current_resonance: int) -> dict[str, Any]:
    """Every §13.2 field and the optional views of one cell, from its engine's `_row`."""
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


def stack_records(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Records field by field: {field: numpy array of len(records) rows} (dtypes in FIELDS)."""
    import numpy as np

    out = {}
    for name, (dt, shape) in FIELDS.items():
        if not records:
            out[name] = np.zeros((0, *shape), dtype=dt)
        elif dt == "O":
            a = np.empty(len(records), dtype=object)
            a[:] = [r[name] for r in records]
            out[name] = a
        else:
            out[name] = np.array([r[name] for r in records], dtype=dt)
    return out
