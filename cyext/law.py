"""The kernel law of KERNEL.md as numpy tables and small functions.

Everything both engines (Cython `_engine.CellPool` and the pure-Python `twin.TwinCellPool`)
need about bytes, steps, the Ω chart, word signatures, parity commitments and the spectral
transforms lives here, in one place. Tables are computed from the definitions at import time;
the conformance tests compare them with /work/shared/conformance.
"""
from __future__ import annotations

try:   # CPython's own SHA-256 (3.12+): hashlib would load OpenSSL, ~4 MiB of the watcher's RSS
    from _sha2 import sha256 as _sha256
except ImportError:   # pragma: no cover - interpreters built without it
    from hashlib import sha256 as _sha256
from collections.abc import Sequence
from math import comb

import numpy as np

REST_OMEGA12 = 0x03F
REST_A12 = 0xAAA
REST_B12 = 0x555
EMPTY_LAST_BYTE = 0xAA
RING = 64
PROFILES = {"chirality": 0, "shell": 1}
PROFILE_NAMES = {v: k for k, v in PROFILES.items()}
N_BUCKETS = {0: 64, 1: 7}


def _expand_pairs(x6: int) -> int:
    """P: bit k of a 6-bit word -> bits 2k and 2k+1 of a 12-bit word."""
    out = 0
    for k in range(6):
        if (x6 >> k) & 1:
            out |= 3 << (2 * k)
    return out


def _collapse_pairs(x12: int) -> int:
    """Inverse of P on pair-diagonal words: bit 2k -> bit k."""
    return sum(((x12 >> (2 * k)) & 1) << k for k in range(6))


# ---- §1 byte tables -------------------------------------------------------------------------
_b = np.arange(256, dtype=np.int64)
INTRON = (_b ^ 0xAA).astype(np.uint8)
FAMILY = ((((INTRON >> 7) & 1) << 1) | (INTRON & 1)).astype(np.uint8)
MICRO_REF = ((INTRON >> 1) & 0x3F).astype(np.uint8)
MASK12 = np.array([_expand_pairs(int(m)) for m in MICRO_REF], dtype=np.uint16)
EPS_A6 = np.where(INTRON & 1, 0x3F, 0).astype(np.uint8)
EPS_B6 = np.where((INTRON >> 7) & 1, 0x3F, 0).astype(np.uint8)
Q6 = (MICRO_REF ^ np.where(((INTRON & 1) ^ ((INTRON >> 7) & 1)) == 1, 0x3F, 0)).astype(np.uint8)
# The v-part of a step: v_next = u ^ MR_EB[b]
MR_EB = (MICRO_REF ^ EPS_B6).astype(np.uint8)
POPCOUNT6 = np.array([bin(c).count("1") for c in range(64)], dtype=np.uint8)
EXPAND6 = np.array([_expand_pairs(c) for c in range(64)], dtype=np.uint16)

# ---- §2/§3 steps and the chart --------------------------------------------------------------


def step_state24(s: int, b: int) -> int:
    """One step of the 24-bit state by byte b (KERNEL §2)."""
    a12, b12 = (s >> 12) & 0xFFF, s & 0xFFF
    i = b ^ 0xAA
    a_mut = a12 ^ int(MASK12[b])
    a_next = b12 ^ (0xFFF if i & 1 else 0)
    b_next = a_mut ^ (0xFFF if (i >> 7) & 1 else 0)
    return (a_next << 12) | b_next


def step_omega12(w: int, b: int) -> int:
    """One step on Ω in the (u6, v6) chart (KERNEL §3)."""
    u, v = (w >> 6) & 0x3F, w & 0x3F
    return ((v ^ int(EPS_A6[b])) << 6) | (u ^ int(MR_EB[b]))


def omega12_to_state24(w: int) -> int:
    u, v = (w >> 6) & 0x3F, w & 0x3F
    return ((REST_A12 ^ _expand_pairs(u)) << 12) | (REST_A12 ^ _expand_pairs(v))


def state24_to_omega12(s: int) -> int:
    """Inverse chart; raises ValueError for a state outside Ω."""
    a = ((s >> 12) & 0xFFF) ^ REST_A12
    b = (s & 0xFFF) ^ REST_A12
    u, v = _collapse_pairs(a), _collapse_pairs(b)
    if _expand_pairs(u) != a or _expand_pairs(v) != b:
        raise ValueError(f"state24 {s:#08x} is not in Omega")
    return (u << 6) | v


_w = np.arange(4096, dtype=np.int64)
_u, _v = (_w >> 6) & 0x3F, _w & 0x3F


def _step_table() -> np.ndarray:
    """STEP_TABLE, (4096, 256) uint16: next omega12 for every (omega12, byte). Built on first use
    (module __getattr__): 2 MiB that a session (the engines step with the byte tables) never
    reads, and the watcher's RSS is part of what attach costs. In uint16 throughout: int64
    temporaries of this shape would cost 8 MiB each."""
    table = globals().get("STEP_TABLE")
    if table is None:
        table = (((_v.astype(np.uint16)[:, None] ^ EPS_A6.astype(np.uint16)[None, :]) << np.uint16(6))
                 | (_u.astype(np.uint16)[:, None] ^ MR_EB.astype(np.uint16)[None, :]))
        globals()["STEP_TABLE"] = table
    return table

STATE24 = (((REST_A12 ^ EXPAND6[_u].astype(np.int64)) << 12)
           | (REST_A12 ^ EXPAND6[_v].astype(np.int64))).astype(np.uint32)
CHI6 = (_u ^ _v).astype(np.uint8)
SHELL = POPCOUNT6[CHI6]
HORIZON_DISTANCE = np.array([bin(((int(s) >> 12) ^ int(s) ^ 0xFFF) & 0xFFF).count("1") for s in STATE24],
                            dtype=np.uint8)
AB_DISTANCE = (12 - HORIZON_DISTANCE).astype(np.uint8)

# ---- §4 signatures and parity ---------------------------------------------------------------


def word_signature(word: Sequence[int]) -> int:
    """omega_sig (13 bits) of a word: run it from state24 = 0, collapse A and B."""
    s = 0
    for b in word:
        s = step_state24(s, int(b))
    tu, tv = _collapse_pairs((s >> 12) & 0xFFF), _collapse_pairs(s & 0xFFF)
    return ((len(word) & 1) << 12) | (tu << 6) | tv


def apply_signature(w: int, sig: int) -> int:
    u, v = (w >> 6) & 0x3F, w & 0x3F
    tu, tv = (sig >> 6) & 0x3F, sig & 0x3F
    if (sig >> 12) & 1:
        u, v = v, u
    return ((u ^ tu) << 6) | (v ^ tv)


def parity_commitment(word: Sequence[int]) -> tuple[int, int, int]:
    o12 = e12 = 0
    for k, b in enumerate(word):
        if k % 2 == 0:
            o12 ^= int(MASK12[int(b)])
        else:
            e12 ^= int(MASK12[int(b)])
    return o12, e12, len(word) & 1


SIG1 = np.array([word_signature([b]) for b in range(256)], dtype=np.uint16)


def word_signatures(words: np.ndarray) -> np.ndarray:
    """Vectorised omega_sig of (n, 4) uint8 words (even length: parity 0).

    From state24 = 0 the translation part evolves exactly like an omega12 step started at 0.
    """
    words = np.asarray(words, dtype=np.uint8).reshape(-1, 4)
    w = np.zeros(len(words), dtype=np.int64)
    for k in range(4):   # step_omega12, vectorised
        b = words[:, k]
        w = (((w & 0x3F) ^ EPS_A6[b]) << 6) | (((w >> 6) & 0x3F) ^ MR_EB[b])
    return w.astype(np.int32)


def parity_commitments(words: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    words = np.asarray(words, dtype=np.uint8).reshape(-1, 4)
    o12 = MASK12[words[:, 0]] ^ MASK12[words[:, 2]]
    e12 = MASK12[words[:, 1]] ^ MASK12[words[:, 3]]
    return o12.astype(np.uint16), e12.astype(np.uint16), np.zeros(len(words), dtype=np.uint8)


# ---- §5 spectral transforms -----------------------------------------------------------------
_k = np.arange(64)
WHT_MATRIX = np.where(POPCOUNT6[(_k[:, None] & _k[None, :])] % 2 == 1, -1.0, 1.0) / 8.0
KRAWTCHOUK = np.array([[sum((-1) ** j * comb(w, j) * comb(6 - w, k - j) for j in range(0, k + 1))
                        for k in range(7)] for w in range(7)], dtype=np.float64)
# shell_spectral = f @ KRAW_MATRIX ; KRAW_MATRIX[w, k] = C(6,w) K[w][k] / (64 C(6,k))
KRAW_MATRIX = np.array([[comb(6, w) * KRAWTCHOUK[w, k] / (64.0 * comb(6, k)) for k in range(7)]
                        for w in range(7)])
K4_MATRIX = np.array([[(-1.0) ** bin(k & f).count("1") for k in range(4)] for f in range(4)])


def wht64(chi_hist64: np.ndarray) -> np.ndarray:
    """(..., 64) counts -> (..., 64) orthonormal Walsh-Hadamard spectrum."""
    return np.asarray(chi_hist64, dtype=np.float64) @ WHT_MATRIX


def krawtchouk7(shell_hist7: np.ndarray) -> np.ndarray:
    return np.asarray(shell_hist7, dtype=np.float64) @ KRAW_MATRIX


def k4char4(family_hist4: np.ndarray, n: np.ndarray | int) -> np.ndarray:
    fh = np.asarray(family_hist4, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    raw = fh @ K4_MATRIX
    safe = np.where(n > 0, n, 1.0)
    return np.where((n > 0)[..., None], raw / safe[..., None], 0.0)


# ---- §3/§6 helpers --------------------------------------------------------------------------
STABILIZER = np.array(["bulk"] * 64, dtype=object)
STABILIZER[0] = "equality"
STABILIZER[63] = "complement"


def seed_omega12(seed: str, value: int | None) -> int:
    """The omega12 a seed names (KERNEL §6); ValueError for anything else."""
    if seed == "rest":
        return REST_OMEGA12
    if seed == "equality":
        return 0
    if seed == "shell":
        if value is None or not isinstance(value, (int, np.integer)) or not 0 <= int(value) <= 6:
            raise ValueError(f"shell seed needs a shell 0..6, got {value!r}")
        return (1 << int(value)) - 1
    if seed == "omega":
        if value is None or not isinstance(value, (int, np.integer)) or not 0 <= int(value) <= 4095:
            raise ValueError(f"omega seed needs an omega12 0..4095, got {value!r}")
        return int(value)
    raise ValueError(f"unknown seed {seed!r} (rest, equality, shell, omega)")


def resonance_key_of(omega12: np.ndarray | int, profile_id: int) -> np.ndarray | int:
    chi = CHI6[omega12]
    return chi if profile_id == 0 else POPCOUNT6[chi]


# ---- §8 law hash ----------------------------------------------------------------------------


def law_hash() -> str:
    h = _sha256()
    h.update(_step_table().astype("<u2").tobytes())
    h.update(SIG1.astype("<u2").tobytes())
    return h.hexdigest()


def __getattr__(name: str) -> object:
    """STEP_TABLE, LAW_HASH and LAW_HASH_BYTES are made when first asked for (PEP 562): only
    snapshots, ledgers and the tests read them."""
    if name == "STEP_TABLE":
        return _step_table()
    if name in ("LAW_HASH", "LAW_HASH_BYTES"):
        digest = law_hash()
        globals()["LAW_HASH"], globals()["LAW_HASH_BYTES"] = digest, bytes.fromhex(digest)
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
