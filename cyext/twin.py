"""TwinCellPool: the pure-Python engine, written straight from KERNEL.md.

It keeps the §7.2 layout literally (separate chi and family rings, uint16-style histograms,
omega_sig and parity computed at closure from the scalar law functions, explicit bucket
weights) so that the tests can cross-check the compact Cython engine against it. It is
slow; it is never used by the product.
"""
from __future__ import annotations

import os

import numpy as np

from . import law
from .api import PoolAPI
from .errors import KernelError
from .state import BODY, empty_state

_STEP = [[int(x) for x in row] for row in law.STEP_TABLE]
_FAMILY = [int(x) for x in law.FAMILY]
_POP = [int(x) for x in law.POPCOUNT6]


class _Cell:
    __slots__ = ("omega12", "step", "last_byte", "word4", "has_closed_word", "chi_ring", "family_ring",
                 "pos", "valid", "chi_hist", "shell_hist", "family_hist", "omega_sig", "parity_O12",
                 "parity_E12", "parity_bit", "resonance_key")

    def __init__(self, omega12: int, key: int) -> None:
        self.omega12 = omega12
        self.step = 0
        self.last_byte = law.EMPTY_LAST_BYTE
        self.word4 = [0, 0, 0, 0]
        self.has_closed_word = False
        self.chi_ring = [0] * 64
        self.family_ring = [0] * 64
        self.pos = 0
        self.valid = 0
        self.chi_hist = [0] * 64
        self.shell_hist = [0] * 7
        self.family_hist = [0] * 4
        self.omega_sig = 0
        self.parity_O12 = 0
        self.parity_E12 = 0
        self.parity_bit = 0
        self.resonance_key = key


class TwinCellPool(PoolAPI):
    bytes_per_cell = 0  # not meaningful for Python objects; see the Cython engine

    def __init__(self, capacity: int = 4096, profile: str = "chirality",
                 ledger: str | os.PathLike | None = None) -> None:
        self._api_init(capacity, profile, ledger)

    # ---- primitives -------------------------------------------------------------------------
    def _core_init(self, capacity: int, profile_id: int) -> None:
        self._cells: list[_Cell | None] = [None] * capacity
        nb = law.N_BUCKETS[profile_id]
        self._counts = [0] * nb
        self._weights = [0] * nb

    def _key(self, omega12: int) -> int:
        chi = (omega12 >> 6) ^ (omega12 & 63)
        return chi if self.profile_id == 0 else _POP[chi]

    def _join(self, key: int) -> None:
        self._counts[key] += 1
        self._weights[key] = self._counts[key]

    def _leave(self, key: int) -> None:
        self._counts[key] -= 1
        self._weights[key] = self._counts[key]

    def _is_alloc(self, cid: int) -> bool:
        return self._cells[cid] is not None

    def _alloc_mask(self) -> np.ndarray:
        return np.array([c is not None for c in self._cells], dtype=bool)

    def _first_free(self) -> int:
        return next((i for i, c in enumerate(self._cells) if c is None), -1)

    def _n_alloc(self) -> int:
        return sum(c is not None for c in self._cells)

    def _row(self, cid: int) -> dict:
        c = self._cells[cid]
        return {"omega12": c.omega12, "step": c.step, "has_closed_word": c.has_closed_word,
                "last_byte": c.last_byte, "word4": list(c.word4), "chi_valid_len": c.valid,
                "chi_hist64": list(c.chi_hist), "shell_hist7": list(c.shell_hist),
                "family_hist4": list(c.family_hist), "omega_sig": c.omega_sig, "parity_O12": c.parity_O12,
                "parity_E12": c.parity_E12, "parity_bit": c.parity_bit, "resonance_key": c.resonance_key}

    def _core_reset(self, cid: int, omega12: int) -> None:
        old = self._cells[cid]
        if old is not None:
            self._leave(old.resonance_key)
        cell = _Cell(omega12, self._key(omega12))
        self._cells[cid] = cell
        self._join(cell.resonance_key)

    def _core_free(self, cid: int) -> None:
        cell = self._cells[cid]
        self._leave(cell.resonance_key)
        self._cells[cid] = None

    def _core_ingest(self, ids: object, words: object) -> None:
        id_list = list(memoryview(ids).cast("B").cast("I"))
        raw = bytes(memoryview(words).cast("B"))
        for cid in id_list:  # validate the whole batch first
            if cid >= len(self._cells):
                raise KernelError(f"cell id {cid} out of range 0..{len(self._cells) - 1}")
            if self._cells[cid] is None:
                raise KernelError(f"cell {cid} is not allocated")
        for i, cid in enumerate(id_list):
            self._ingest_word(self._cells[cid], list(raw[4 * i:4 * i + 4]))

    def _ingest_word(self, c: _Cell, word: list[int]) -> None:
        for b in word:
            c.omega12 = _STEP[c.omega12][b]
            c.step += 1
            c.last_byte = b
            chi = (c.omega12 >> 6) ^ (c.omega12 & 63)
            fam = _FAMILY[b]
            p = c.pos
            if c.valid == 64:
                old_chi, old_fam = c.chi_ring[p], c.family_ring[p]
                c.chi_hist[old_chi] -= 1
                c.shell_hist[_POP[old_chi]] -= 1
                c.family_hist[old_fam] -= 1
            else:
                c.valid += 1
            c.chi_ring[p] = chi
            c.family_ring[p] = fam
            c.chi_hist[chi] += 1
            c.shell_hist[_POP[chi]] += 1
            c.family_hist[fam] += 1
            c.pos = (p + 1) % 64
        c.word4 = list(word)
        c.has_closed_word = True
        c.omega_sig = law.word_signature(word)
        c.parity_O12, c.parity_E12, c.parity_bit = law.parity_commitment(word)
        key = self._key(c.omega12)
        if key != c.resonance_key:
            self._leave(c.resonance_key)
            self._join(key)
            c.resonance_key = key

    def _core_counts(self) -> list[int]:
        return list(self._counts)

    def _core_weights(self) -> list[int]:
        return list(self._weights)

    def _core_decay(self) -> None:
        self._weights = [w >> 1 for w in self._weights]

    def _column(self, name: str) -> np.ndarray:
        return self._gather(np.arange(self.capacity), (name,))[name]

    def _gather(self, ids: np.ndarray, names: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
        ids = np.asarray(ids, dtype=np.int64)
        out = {name: np.zeros((len(ids), *shape), dtype=dt) for name, dt, shape in BODY
               if names is None or name in names}
        attrs = {"has_closed_word": "has_closed_word", "omega12": "omega12", "step": "step",
                 "last_byte": "last_byte", "word4": "word4", "chi_ring64": "chi_ring",
                 "family_ring64": "family_ring", "chi_ring_pos": "pos", "chi_valid_len": "valid",
                 "chi_hist64": "chi_hist", "shell_hist7": "shell_hist", "family_hist4": "family_hist",
                 "omega_sig": "omega_sig", "parity_O12": "parity_O12", "parity_E12": "parity_E12",
                 "parity_bit": "parity_bit", "resonance_key": "resonance_key"}
        for i, cid in enumerate(ids.tolist()):
            c = self._cells[cid]
            if c is None:
                continue
            for name, arr in out.items():
                arr[i] = 1 if name == "allocated" else getattr(c, attrs[name])
        return out

    def _core_load(self, st: dict[str, np.ndarray]) -> None:
        self._core_init(self.capacity, self.profile_id)
        for cid in np.flatnonzero(st["allocated"]).tolist():
            c = _Cell(int(st["omega12"][cid]), int(st["resonance_key"][cid]))
            c.step = int(st["step"][cid])
            c.last_byte = int(st["last_byte"][cid])
            c.word4 = st["word4"][cid].tolist()
            c.has_closed_word = bool(st["has_closed_word"][cid])
            c.chi_ring = st["chi_ring64"][cid].tolist()
            c.family_ring = st["family_ring64"][cid].tolist()
            c.pos = int(st["chi_ring_pos"][cid])
            c.valid = int(st["chi_valid_len"][cid])
            c.chi_hist = st["chi_hist64"][cid].tolist()
            c.shell_hist = st["shell_hist7"][cid].tolist()
            c.family_hist = st["family_hist4"][cid].tolist()
            c.omega_sig = int(st["omega_sig"][cid])
            c.parity_O12 = int(st["parity_O12"][cid])
            c.parity_E12 = int(st["parity_E12"][cid])
            c.parity_bit = int(st["parity_bit"][cid])
            self._cells[cid] = c
            self._join(c.resonance_key)


_ = empty_state  # re-exported for tests that build states by hand
