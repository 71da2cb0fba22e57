"""The kernel law of KERNEL.md in plain Python: byte tables, steps, the Ω chart, signatures,
parity and the spectral transforms of one cell.

This is where the law is defined. The tables are computed here from the definitions (bytes for
8-bit tables, tuples otherwise), with no numpy: the Cython engine and a session's records read
only this module, so a watcher never loads numpy (~14 MiB of RSS and ~70 ms of start-up).
`law` builds the numpy forms the vectorised code uses (snapshots, ledgers, the twin, tests) from
these tables; the conformance tests check both.
"""
from __future__ import annotations

import sys
from collections.abc import Sequence
from math import comb

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


def _popcount(x: int) -> int:
    return bin(x).count("1")


# ---- §1 byte tables -------------------------------------------------------------------------
INTRON = bytes(b ^ 0xAA for b in range(256))
FAMILY = bytes((((i >> 7) & 1) << 1) | (i & 1) for i in INTRON)
MICRO_REF = bytes((i >> 1) & 0x3F for i in INTRON)
MASK12 = tuple(_expand_pairs(m) for m in MICRO_REF)
EPS_A6 = bytes(0x3F if i & 1 else 0 for i in INTRON)
EPS_B6 = bytes(0x3F if (i >> 7) & 1 else 0 for i in INTRON)
Q6 = bytes(m ^ (0x3F if (i & 1) ^ ((i >> 7) & 1) else 0) for m, i in zip(MICRO_REF, INTRON))
# The v-part of a step: v_next = u ^ MR_EB[b]
MR_EB = bytes(m ^ e for m, e in zip(MICRO_REF, EPS_B6))
POPCOUNT6 = bytes(_popcount(c) for c in range(64))
EXPAND6 = tuple(_expand_pairs(c) for c in range(64))

# ---- §2/§3 steps and the chart --------------------------------------------------------------


def step_state24(s: int, b: int) -> int:
    """One step of the 24-bit state by byte b (KERNEL §2)."""
    a12, b12 = (s >> 12) & 0xFFF, s & 0xFFF
    i = b ^ 0xAA
    a_mut = a12 ^ MASK12[b]
    a_next = b12 ^ (0xFFF if i & 1 else 0)
    b_next = a_mut ^ (0xFFF if (i >> 7) & 1 else 0)
    return (a_next << 12) | b_next


def step_omega12(w: int, b: int) -> int:
    """One step on Ω in the (u6, v6) chart (KERNEL §3)."""
    u, v = (w >> 6) & 0x3F, w & 0x3F
    return ((v ^ EPS_A6[b]) << 6) | (u ^ MR_EB[b])


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


STATE24 = tuple(((REST_A12 ^ EXPAND6[w >> 6]) << 12) | (REST_A12 ^ EXPAND6[w & 0x3F]) for w in range(4096))
CHI6 = bytes((w >> 6) ^ (w & 0x3F) for w in range(4096))
SHELL = bytes(POPCOUNT6[c] for c in CHI6)
HORIZON_DISTANCE = bytes(_popcount(((s >> 12) ^ s ^ 0xFFF) & 0xFFF) for s in STATE24)
AB_DISTANCE = bytes(12 - d for d in HORIZON_DISTANCE)

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
            o12 ^= MASK12[int(b)]
        else:
            e12 ^= MASK12[int(b)]
    return o12, e12, len(word) & 1


SIG1 = tuple(word_signature([b]) for b in range(256))

# ---- §5 spectral transforms of one cell -----------------------------------------------------
# KRAW[w][k] = C(6,w) K_k(w) / (64 C(6,k)): shell_spectral[k] = sum_w shell_hist7[w] KRAW[w][k]
KRAWTCHOUK = tuple(tuple(float(sum((-1) ** j * comb(w, j) * comb(6 - w, k - j) for j in range(k + 1)))
                         for k in range(7)) for w in range(7))
KRAW = tuple(tuple(comb(6, w) * KRAWTCHOUK[w][k] / (64.0 * comb(6, k)) for k in range(7)) for w in range(7))
K4 = tuple(tuple((-1.0) ** _popcount(k & f) for k in range(4)) for f in range(4))


def wht64(chi_hist64: Sequence[int]) -> list[float]:
    """The orthonormal Walsh-Hadamard spectrum of 64 counts (fast transform; counts are
    integers, so every butterfly is exact and the result equals the matrix form's)."""
    a = [int(x) for x in chi_hist64]
    h = 1
    while h < 64:
        for i in range(0, 64, 2 * h):
            for j in range(i, i + h):
                x, y = a[j], a[j + h]
                a[j], a[j + h] = x + y, x - y
        h *= 2
    return [x / 8.0 for x in a]


def krawtchouk7(shell_hist7: Sequence[int]) -> list[float]:
    return [sum(float(shell_hist7[w]) * KRAW[w][k] for w in range(7)) for k in range(7)]


def k4char4(family_hist4: Sequence[int], n: int) -> list[float]:
    if n <= 0:
        return [0.0] * 4
    return [sum(float(family_hist4[f]) * K4[f][k] for f in range(4)) / n for k in range(4)]


# ---- §3/§6 helpers --------------------------------------------------------------------------
def stabilizer(chi6: int) -> str:
    return "equality" if chi6 == 0 else "complement" if chi6 == 63 else "bulk"


def seed_omega12(seed: str, value: int | None) -> int:
    """The omega12 a seed names (KERNEL §6); ValueError for anything else."""
    if seed == "rest":
        return REST_OMEGA12
    if seed == "equality":
        return 0
    if seed == "shell":
        if not is_int(value) or not 0 <= int(value) <= 6:
            raise ValueError(f"shell seed needs a shell 0..6, got {value!r}")
        return (1 << int(value)) - 1
    if seed == "omega":
        if not is_int(value) or not 0 <= int(value) <= 4095:
            raise ValueError(f"omega seed needs an omega12 0..4095, got {value!r}")
        return int(value)
    raise ValueError(f"unknown seed {seed!r} (rest, equality, shell, omega)")


def is_int(x: object) -> bool:
    """An integer, Python's or numpy's, and not a bool: what the API accepts as an id or a seed."""
    if isinstance(x, int):
        return not isinstance(x, bool)
    np = sys.modules.get("numpy")   # a numpy integer exists only if numpy is loaded
    return np is not None and isinstance(x, np.integer)
