"""The kernel law of KERNEL.md as numpy tables and vectorised functions.

The law is defined in `lawcore` (plain Python, what the engine and a session read); this module
re-exports it and adds the numpy forms that snapshots, ledgers, the twin and the tests use: the
same tables as arrays (law.FAMILY is lawcore.FAMILY as uint8, ...), the omega12 step table, the
law hash and the vectorised signatures and transforms. The conformance tests check both.
"""
from __future__ import annotations

try:   # CPython's own SHA-256 (3.12+): hashlib would load OpenSSL, ~4 MiB of RSS
    from _sha2 import sha256 as _sha256
except ImportError:   # pragma: no cover - interpreters built without it
    from hashlib import sha256 as _sha256

import numpy as np

from . import lawcore as core
from .lawcore import (  # noqa: F401 - the scalar law, re-exported
    EMPTY_LAST_BYTE,
    N_BUCKETS,
    PROFILE_NAMES,
    PROFILES,
    REST_A12,
    REST_B12,
    REST_OMEGA12,
    RING,
    apply_signature,
    omega12_to_state24,
    parity_commitment,
    seed_omega12,
    state24_to_omega12,
    step_omega12,
    step_state24,
    word_signature,
)


def _u8(t: bytes) -> np.ndarray:
    return np.frombuffer(t, dtype=np.uint8).copy()


# ---- §1 byte tables -------------------------------------------------------------------------
INTRON = _u8(core.INTRON)
FAMILY = _u8(core.FAMILY)
MICRO_REF = _u8(core.MICRO_REF)
MASK12 = np.array(core.MASK12, dtype=np.uint16)
EPS_A6 = _u8(core.EPS_A6)
EPS_B6 = _u8(core.EPS_B6)
Q6 = _u8(core.Q6)
MR_EB = _u8(core.MR_EB)
POPCOUNT6 = _u8(core.POPCOUNT6)
EXPAND6 = np.array(core.EXPAND6, dtype=np.uint16)

# ---- §2/§3 the chart and the step table -----------------------------------------------------
_w = np.arange(4096, dtype=np.int64)
_u, _v = (_w >> 6) & 0x3F, _w & 0x3F


def _step_table() -> np.ndarray:
    """STEP_TABLE, (4096, 256) uint16: next omega12 for every (omega12, byte). Built on first use
    (module __getattr__): 2 MiB that only the law hash (snapshots, ledgers) and the twin read.
    In uint16 throughout: int64 temporaries of this shape would cost 8 MiB each."""
    table = globals().get("STEP_TABLE")
    if table is None:
        table = (((_v.astype(np.uint16)[:, None] ^ EPS_A6.astype(np.uint16)[None, :]) << np.uint16(6))
                 | (_u.astype(np.uint16)[:, None] ^ MR_EB.astype(np.uint16)[None, :]))
        globals()["STEP_TABLE"] = table
    return table


STATE24 = np.array(core.STATE24, dtype=np.uint32)
CHI6 = _u8(core.CHI6)
SHELL = _u8(core.SHELL)
HORIZON_DISTANCE = _u8(core.HORIZON_DISTANCE)
AB_DISTANCE = _u8(core.AB_DISTANCE)

# ---- §4 signatures and parity ---------------------------------------------------------------
SIG1 = np.array(core.SIG1, dtype=np.uint16)


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


def resonance_key_of(omega12: np.ndarray, profile_id: int) -> np.ndarray:
    """The resonance key of each omega12: chi6 (profile chirality) or its shell (profile shell)."""
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
