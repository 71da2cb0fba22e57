"""SLCP records (spec §13): every field of one cell's record, computed from its values.

Both engines hand `record_of` the same values (their `_row(cid)`), so a record means the same
thing whichever engine made it; the engines differ only in how they evolve state, which the
conformance and cross-check tests compare. `record_of` is compiled (cyext/_views.pyx: a session
reads every entity's record at its end, and without numpy); `stack_records` turns several
records into the numpy arrays of `PoolAPI.records`.
"""
from __future__ import annotations

from typing import Any

from ._views import record_of  # noqa: F401  (the one record_of: views.record_of)

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
