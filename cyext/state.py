"""The §16.3 state arrays: their order, dtypes and shapes, and the checks a restore makes.

`export_state()` of either engine returns exactly these arrays (unallocated rows zeroed);
`from_state()` and `persist.load()` accept only arrays that pass `validate_state`.
"""
from __future__ import annotations

import numpy as np

from . import law
from .errors import SnapshotError

# (name, dtype, per-cell shape); the last entry is per pool, shape (n_buckets,).
BODY: list[tuple[str, np.dtype, tuple[int, ...]]] = [
    ("allocated", np.dtype(np.uint8), ()),
    ("has_closed_word", np.dtype(np.uint8), ()),
    ("omega12", np.dtype(np.int32), ()),
    ("step", np.dtype(np.uint64), ()),
    ("last_byte", np.dtype(np.uint8), ()),
    ("word4", np.dtype(np.uint8), (4,)),
    ("chi_ring64", np.dtype(np.uint8), (64,)),
    ("family_ring64", np.dtype(np.uint8), (64,)),
    ("chi_ring_pos", np.dtype(np.uint8), ()),
    ("chi_valid_len", np.dtype(np.uint8), ()),
    ("chi_hist64", np.dtype(np.uint16), (64,)),
    ("shell_hist7", np.dtype(np.uint16), (7,)),
    ("family_hist4", np.dtype(np.uint16), (4,)),
    ("omega_sig", np.dtype(np.int32), ()),
    ("parity_O12", np.dtype(np.uint16), ()),
    ("parity_E12", np.dtype(np.uint16), ()),
    ("parity_bit", np.dtype(np.uint8), ()),
    ("resonance_key", np.dtype(np.uint32), ()),
]
BUCKETS = ("resonance_buckets", np.dtype(np.uint32))
PER_CELL = [name for name, _, _ in BODY]


def empty_state(capacity: int, profile_id: int) -> dict[str, np.ndarray]:
    st = {name: np.zeros((capacity, *shape), dtype=dt) for name, dt, shape in BODY}
    st[BUCKETS[0]] = np.zeros(law.N_BUCKETS[profile_id], dtype=BUCKETS[1])
    return st


def ring_hists(chi_ring: np.ndarray, fam_ring: np.ndarray, pos: np.ndarray,
               valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Histograms recomputed from rings: the valid slots are the `valid` ones before `pos`."""
    n = len(pos)
    slots = np.arange(64)[None, :]
    age = (pos.astype(np.int64)[:, None] - 1 - slots) % 64
    live = age < valid.astype(np.int64)[:, None]
    rows = np.repeat(np.arange(n), 64).reshape(n, 64)
    chi_h = np.zeros((n, 64), dtype=np.int64)
    np.add.at(chi_h, (rows[live], chi_ring.astype(np.int64)[live] & 63), 1)
    fam_h = np.zeros((n, 4), dtype=np.int64)
    np.add.at(fam_h, (rows[live], fam_ring.astype(np.int64)[live] & 3), 1)
    shell_h = np.zeros((n, 7), dtype=np.int64)
    for c in range(64):
        shell_h[:, law.POPCOUNT6[c]] += chi_h[:, c]
    return chi_h, shell_h, fam_h


def validate_state(st: dict[str, np.ndarray], capacity: int, profile_id: int) -> None:
    """Raise SnapshotError (one message) unless `st` is a state either engine could have made."""
    if profile_id not in law.N_BUCKETS:
        raise SnapshotError(f"unknown resonance profile id {profile_id}")
    for name, dt, shape in BODY:
        a = st.get(name)
        if not isinstance(a, np.ndarray) or a.dtype != dt or a.shape != (capacity, *shape):
            raise SnapshotError(f"state array {name!r} must be {dt} with shape {(capacity, *shape)}")
    b = st.get(BUCKETS[0])
    nb = law.N_BUCKETS[profile_id]
    if not isinstance(b, np.ndarray) or b.dtype != BUCKETS[1] or b.shape != (nb,):
        raise SnapshotError(f"state array 'resonance_buckets' must be uint32 with shape ({nb},)")
    alloc = st["allocated"]
    if (alloc > 1).any() or (st["has_closed_word"] > 1).any():
        raise SnapshotError("inconsistent state: allocated/has_closed_word must be 0 or 1")
    free = alloc == 0
    for name, _, _ in BODY[1:]:
        a = st[name][free]
        if a.size and a.any():
            raise SnapshotError(f"inconsistent state: {name!r} is not zero for a free cell")
    on = ~free
    w = st["omega12"][on]
    if ((w < 0) | (w > 4095)).any():
        raise SnapshotError("inconsistent state: omega12 outside 0..4095")
    if (st["chi_ring64"] > 63).any() or (st["family_ring64"] > 3).any():
        raise SnapshotError("inconsistent state: ring entry out of range")
    step = st["step"][on]
    hc = st["has_closed_word"][on].astype(bool)
    pos, valid = st["chi_ring_pos"][on], st["chi_valid_len"][on]
    if ((step % 4) != 0).any() or ((step == 0) == hc).any():
        raise SnapshotError("inconsistent state: step must be 4 x words ingested")
    if (pos.astype(np.uint64) != step % 64).any() or (valid.astype(np.uint64) != np.minimum(step, 64)).any():
        raise SnapshotError("inconsistent state: ring position/length disagree with step")
    chi_h, shell_h, fam_h = ring_hists(st["chi_ring64"][on], st["family_ring64"][on], pos, valid)
    if ((chi_h != st["chi_hist64"][on]).any() or (shell_h != st["shell_hist7"][on]).any()
            or (fam_h != st["family_hist4"][on]).any()):
        raise SnapshotError("inconsistent state: histograms disagree with the rings")
    w4 = st["word4"][on]
    if (w4[~hc] != 0).any():
        raise SnapshotError("inconsistent state: word4 set before any closed word")
    lb = np.where(hc, w4[:, 3], law.EMPTY_LAST_BYTE)
    if (lb != st["last_byte"][on]).any():
        raise SnapshotError("inconsistent state: last_byte disagrees with word4")
    sig = np.where(hc, law.word_signatures(w4), 0)
    o12, e12, pb = law.parity_commitments(w4)
    if ((sig != st["omega_sig"][on]).any() or (np.where(hc, o12, 0) != st["parity_O12"][on]).any()
            or (np.where(hc, e12, 0) != st["parity_E12"][on]).any() or (st["parity_bit"][on] != 0).any()):
        raise SnapshotError("inconsistent state: omega_sig/parity disagree with word4")
    keys = st["resonance_key"][on]
    if (keys != law.resonance_key_of(w, profile_id)).any():
        raise SnapshotError("inconsistent state: resonance_key disagrees with omega12")
    counts = np.bincount(keys.astype(np.int64), minlength=nb)
    if (counts != b).any():
        raise SnapshotError("inconsistent bucket counts: stored resonance_buckets disagree with the cells' keys")
