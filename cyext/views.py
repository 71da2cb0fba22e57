"""SLCP records (spec §13) computed, vectorised, from the §16.3 per-cell arrays.

Both engines hand `records_from_state` the same arrays (their `_gather(cids)`), so a record
means the same thing whichever engine made it; the engines differ only in how they evolve
state, which the conformance and cross-check tests compare.
"""
from __future__ import annotations

import numpy as np

from . import law

_BITS6 = ((np.arange(64)[:, None] >> np.arange(6)[None, :]) & 1).astype(np.float64)  # (64, 6)
_BITS2 = ((np.arange(4)[:, None] >> np.arange(2)[None, :]) & 1).astype(np.float64)  # (4, 2)
_SHELLS = np.arange(7, dtype=np.float64)
_LOG2_7 = float(np.log2(7.0))

SCALAR_FIELDS = ("cell_id", "step", "omega12", "state24", "last_byte", "family", "micro_ref", "q6", "chi6",
                 "shell", "horizon_distance", "ab_distance", "omega_sig", "parity_O12", "parity_E12",
                 "parity_bit", "resonance_key", "current_resonance", "effective_support", "occupation",
                 "spectral_damping", "stabilizer_type", "valid_len", "has_closed_word", "u6", "v6",
                 "chi_support_ratio", "shell_entropy", "spectral_peak_ratio")


def records_from_state(cell_ids: np.ndarray, st: dict[str, np.ndarray],
                       current_resonance: np.ndarray) -> dict[str, np.ndarray]:
    """Every §13.2 field and the optional views for the cells whose gathered arrays are `st`."""
    w = st["omega12"].astype(np.int64)
    lb = st["last_byte"].astype(np.int64)
    n = st["chi_valid_len"].astype(np.float64)
    has_n = n > 0
    safe_n = np.where(has_n, n, 1.0)
    chi_hist = st["chi_hist64"].astype(np.float64)
    shell_hist = st["shell_hist7"].astype(np.float64)
    fam_hist = st["family_hist4"].astype(np.float64)
    chi = law.CHI6[w].astype(np.int64)
    shell = law.POPCOUNT6[chi].astype(np.int64)

    spectral = law.wht64(chi_hist)
    p = chi_hist / safe_n[:, None]
    sum_p2 = (p * p).sum(axis=1)
    eff = np.where(has_n & (sum_p2 > 0), 64.0 / np.where(sum_p2 > 0, sum_p2, 1.0), 0.0)
    rho = np.where(has_n, (shell_hist @ _SHELLS) / (6.0 * safe_n), 0.0)
    eta = np.where(has_n, 1.0 - 2.0 * rho, 0.0)
    chi_aniso = np.where(has_n[:, None], 1.0 - 2.0 * (chi_hist @ _BITS6) / safe_n[:, None], 0.0)
    gauge_aniso = np.where(has_n[:, None], 1.0 - 2.0 * (fam_hist @ _BITS2) / safe_n[:, None], 0.0)
    ps = shell_hist / safe_n[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.where(ps > 0, ps * np.log2(np.where(ps > 0, ps, 1.0)), 0.0).sum(axis=1)
    ent = np.where(has_n, ent / _LOG2_7, 0.0)
    norm = np.sqrt((spectral * spectral).sum(axis=1))
    peak = np.where(norm > 0, np.abs(spectral).max(axis=1) / np.where(norm > 0, norm, 1.0), 0.0)
    support = np.where(has_n, (st["chi_hist64"] > 0).sum(axis=1) / safe_n, 0.0)
    shellf = shell.astype(np.float64)
    return {
        "cell_id": np.asarray(cell_ids, dtype=np.uint32),
        "step": st["step"].astype(np.uint64),
        "omega12": w.astype(np.int32),
        "state24": law.STATE24[w].astype(np.int32),
        "last_byte": lb.astype(np.uint8),
        "family": law.FAMILY[lb].astype(np.int64),
        "micro_ref": law.MICRO_REF[lb].astype(np.int64),
        "q6": law.Q6[lb].astype(np.int64),
        "chi6": chi,
        "shell": shell,
        "horizon_distance": law.HORIZON_DISTANCE[w].astype(np.int64),
        "ab_distance": law.AB_DISTANCE[w].astype(np.int64),
        "omega_sig": st["omega_sig"].astype(np.int32),
        "parity_O12": st["parity_O12"].astype(np.uint16),
        "parity_E12": st["parity_E12"].astype(np.uint16),
        "parity_bit": st["parity_bit"].astype(np.uint8),
        "resonance_key": st["resonance_key"].astype(np.uint32),
        "current_resonance": np.asarray(current_resonance, dtype=np.int64),
        "spectral64": spectral,
        "shell_spectral": law.krawtchouk7(shell_hist),
        "gauge_spectral": law.k4char4(fam_hist, n),
        "chi_hist64": st["chi_hist64"].astype(np.uint16),
        "shell_hist7": st["shell_hist7"].astype(np.uint16),
        "family_hist4": st["family_hist4"].astype(np.uint16),
        "effective_support": eff,
        "occupation": rho,
        "spectral_damping": eta,
        "chi_anisotropy": chi_aniso,
        "gauge_anisotropy": gauge_aniso,
        "optical_coordinates": np.stack([shellf / 6.0, (6.0 - shellf) / 6.0, (2.0 * shellf - 6.0) / 6.0], axis=1),
        "stabilizer_type": law.STABILIZER[chi],
        "valid_len": st["chi_valid_len"].astype(np.int64),
        "has_closed_word": st["has_closed_word"].astype(bool),
        "word4": st["word4"].astype(np.uint8),
        "u6": (w >> 6) & 0x3F,
        "v6": w & 0x3F,
        "chi_support_ratio": support,
        "shell_entropy": ent,
        "spectral_peak_ratio": peak,
    }


def record_at(recs: dict[str, np.ndarray], i: int) -> dict:
    """Row i of `records_from_state` as plain Python values (ints, floats, lists, str)."""
    out: dict = {}
    for k, arr in recs.items():
        v = arr[i]
        if isinstance(v, np.ndarray):
            out[k] = v.tolist()
        elif isinstance(v, (np.bool_, bool)):
            out[k] = bool(v)
        elif isinstance(v, np.integer):
            out[k] = int(v)
        elif isinstance(v, np.floating):
            out[k] = float(v)
        else:
            out[k] = v
    return out
