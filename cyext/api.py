"""The public CellPool API, shared by the Cython engine and the pure-Python twin.

An engine class provides the `_core_*` primitives (state evolution, the hot loop) and this
mixin provides everything else: seeds, packet checks, records, graph queries, snapshots and
the ledger. Both engines therefore have exactly the same surface and the same error messages.

Conventions (documented here, once):
- Cell ids are 0..capacity-1; `allocate` takes the lowest free id.
- Seeding (allocate or seed_* on a live cell) starts a fresh history: omega12 = the seed,
  step 0, empty rings and histograms, no closed word, last_byte 0xAA, keyed from the seed.
- A freed cell keeps nothing (its §16.3 rows read zero).
- `co_resonant_cells(c)` excludes c itself; `bucket_cells(k)` lists every member of k.
- Every operation takes the pool's lock (the hot loop releases the GIL); share a pool between
  threads freely, but one ingest runs at a time.
- A bucket's weight is its member count; `decay_resonance()` halves every weight (integer
  shift) until that bucket's membership next changes, when it is its member count again.
"""
from __future__ import annotations

import array
import functools
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import lawcore, views
from .errors import KernelError

if TYPE_CHECKING:
    import numpy as np


def _np() -> Any:
    """numpy, imported on first use: allocating, ingesting `array`/bytes packets and reading
    records need none of it (a session never loads it); the array forms of the API do."""
    import numpy
    return numpy


def _locked[F: Callable[..., Any]](fn: F) -> F:
    """Serialise a pool operation: the hot loop runs without the GIL, so a pool carries a lock."""
    @functools.wraps(fn)
    def wrapper(self, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return fn(self, *args, **kwargs)
    return wrapper  # type: ignore[return-value]


class PoolAPI:
    capacity: int
    profile: str
    profile_id: int

    # ---- construction -----------------------------------------------------------------------
    def _api_init(self, capacity: int, profile: str, ledger: str | os.PathLike | None) -> None:
        if profile not in lawcore.PROFILES:
            raise KernelError(f"unknown resonance profile {profile!r} (chirality, shell)")
        if not lawcore.is_int(capacity) or not 1 <= int(capacity) < 2**31:
            raise KernelError(f"capacity must be an int in 1..2**31-1, got {capacity!r}")
        self._lock = threading.RLock()
        self.capacity = int(capacity)
        self.profile = profile
        self.profile_id = lawcore.PROFILES[profile]
        self.created_unix_ns = time.time_ns()
        self._core_init(self.capacity, self.profile_id)
        self._ledger = None
        self.ledger_path = None
        if ledger is not None:
            from .ledger import LedgerWriter
            self._ledger = LedgerWriter(ledger, self.capacity, self.profile_id)
            self.ledger_path = os.fspath(ledger)

    def __len__(self) -> int:
        return int(self._n_alloc())

    def __enter__(self):
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @_locked
    def close(self) -> None:
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} capacity={self.capacity} profile={self.profile} active={len(self)}>"

    # ---- lifecycle --------------------------------------------------------------------------
    def _check_cell(self, cid: Any) -> int:
        if not lawcore.is_int(cid):
            raise KernelError(f"cell id must be an int, got {cid!r}")
        c = int(cid)
        if not 0 <= c < self.capacity:
            raise KernelError(f"cell id {c} out of range 0..{self.capacity - 1}")
        if not self._is_alloc(c):
            raise KernelError(f"cell {c} is not allocated")
        return c

    @staticmethod
    def _seed(seed: str, value: int | None) -> int:
        try:
            return lawcore.seed_omega12(seed, value)
        except ValueError as e:
            raise KernelError(str(e)) from None

    @_locked
    def _reset(self, cid: int, omega12: int) -> None:
        self._core_reset(cid, omega12)
        if self._ledger is not None:
            self._ledger.write_seed(cid, omega12)

    @_locked
    def allocate(self, seed: str = "rest", value: int | None = None) -> int:
        w = self._seed(seed, value)
        cid = self._first_free()
        if cid < 0:
            raise KernelError(f"cell pool is full ({self.capacity} cells)")
        self._reset(cid, w)
        return cid

    @_locked
    def allocate_many(self, n: int, seed: str = "rest", value: int | None = None) -> np.ndarray:
        np = _np()
        w = self._seed(seed, value)
        free = np.flatnonzero(~self._alloc_mask())
        if n < 0 or len(free) < n:
            raise KernelError(f"cannot allocate {n} cells: {len(free)} free of {self.capacity}")
        ids = free[:n].astype(np.uint32)
        for cid in ids:
            self._reset(int(cid), w)
        return ids

    @_locked
    def free(self, cell_id: int) -> None:
        c = self._check_cell(cell_id)
        self._core_free(c)
        if self._ledger is not None:
            self._ledger.write_free(c)

    def seed_rest(self, cell_id: int) -> None:
        self._reset(self._check_cell(cell_id), lawcore.REST_OMEGA12)

    def seed_equality_horizon(self, cell_id: int) -> None:
        self._reset(self._check_cell(cell_id), 0)

    def seed_shell(self, cell_id: int, s: int) -> None:
        c = self._check_cell(cell_id)
        self._reset(c, self._seed("shell", s))

    def seed_omega(self, cell_id: int, w: int) -> None:
        c = self._check_cell(cell_id)
        self._reset(c, self._seed("omega", w))

    def active_cells(self) -> np.ndarray:
        np = _np()
        return np.flatnonzero(self._alloc_mask()).astype(np.uint32)

    def is_allocated(self, cell_id: int) -> bool:
        try:
            c = int(cell_id)
        except (TypeError, ValueError):
            return False
        return 0 <= c < self.capacity and bool(self._is_alloc(c))

    # ---- ingestion --------------------------------------------------------------------------
    def _packets(self, cell_ids: Any, words: Any) -> tuple[Any, Any]:
        """(uint32 ids, their 4n word bytes) as buffers the engine reads. array('I') ids with
        bytes/bytearray words (what a session sends) pass as they are; anything else goes
        through numpy and its checks."""
        if (isinstance(cell_ids, array.array) and cell_ids.typecode == "I" and cell_ids.itemsize == 4
                and isinstance(words, (bytes, bytearray))):
            if len(words) != 4 * len(cell_ids):
                raise KernelError(f"words must be 4 bytes per cell id: {len(words)} bytes for {len(cell_ids)} ids")
            return cell_ids, words
        np = _np()
        ids = np.asarray(cell_ids)
        if ids.ndim != 1:
            raise KernelError(f"cell_ids must be one-dimensional, got shape {ids.shape}")
        if ids.dtype != np.uint32:
            if ids.size and ids.dtype.kind not in "iu":
                raise KernelError(f"cell ids must be integers, got dtype {ids.dtype}")
            if ids.size and (ids.min() < 0 or ids.max() >= self.capacity):
                bad = ids[(ids < 0) | (ids >= self.capacity)]
                raise KernelError(f"cell id {int(bad[0])} out of range 0..{self.capacity - 1}")
            ids = ids.astype(np.uint32)
        w = np.asarray(words)
        if w.ndim != 2 or w.shape[1] != 4 or w.shape[0] != ids.shape[0]:
            raise KernelError(f"words must have shape ({ids.shape[0]}, 4) (4-byte words), got {w.shape}")
        if w.dtype != np.uint8:
            if w.size and (w.dtype.kind not in "iu" or w.min() < 0 or w.max() > 255):
                raise KernelError("word bytes must be integers 0..255")
            w = w.astype(np.uint8)
        return np.ascontiguousarray(ids), np.ascontiguousarray(w).reshape(-1)

    @_locked
    def ingest(self, cell_ids: Any, words: Any) -> None:
        """Apply words in order; on any bad packet raise KernelError and apply nothing.
        cell_ids: n ids; words: an (n, 4) array of bytes, or, with array('I') ids, 4n bytes."""
        ids, w = self._packets(cell_ids, words)
        if len(ids) == 0:
            return
        self._core_ingest(ids, w)
        if self._ledger is not None:
            self._ledger.write_words(ids, w)

    def ingest_packets(self, data: bytes | bytearray | memoryview | np.ndarray) -> None:
        """Packed records: uint32 LE cell_id + 4 word bytes, 8 bytes each."""
        np = _np()
        try:
            raw = (np.ascontiguousarray(data).reshape(-1).view(np.uint8) if isinstance(data, np.ndarray)
                   else np.frombuffer(data, np.uint8))
        except (TypeError, ValueError) as e:
            raise KernelError(f"packet data must be bytes or a contiguous array: {e}") from None
        if raw.size % 8:
            raise KernelError(f"packet data length {raw.size} is not a multiple of 8 (uint32 cell_id + word4)")
        rec = raw.view(np.dtype([("cell_id", "<u4"), ("word", "u1", (4,))]))
        self.ingest(rec["cell_id"].astype(np.uint32), rec["word"])

    # ---- records ----------------------------------------------------------------------------
    @_locked
    def records(self, cell_ids: Any) -> dict[str, np.ndarray]:
        """The records of several cells, field by field, as numpy arrays (views.stack_records)."""
        np = _np()
        ids = np.atleast_1d(np.asarray(cell_ids)).reshape(-1)
        if ids.size:
            if ids.dtype.kind not in "iu" or ids.min() < 0 or ids.max() >= self.capacity:
                raise KernelError(f"cell ids must be in 0..{self.capacity - 1}")
            for c in ids.tolist():
                if not self._is_alloc(c):
                    raise KernelError(f"cell {c} is not allocated")
        weights = self._core_weights()
        return views.stack_records([self._record(c, weights) for c in ids.tolist()])

    @_locked
    def record(self, cell_id: int) -> dict:
        """One cell's record as plain Python values (views.record_of)."""
        return self._record(self._check_cell(cell_id), self._core_weights())

    def _record(self, cid: int, weights: list[int]) -> dict:
        row = self._row(cid)
        return views.record_of(cid, row, weights[row["resonance_key"]])

    # ---- graph queries ----------------------------------------------------------------------
    def bucket_weights(self) -> np.ndarray:
        return _np().array(self._core_weights(), dtype="int64")

    def _members(self, mask: np.ndarray) -> np.ndarray:
        np = _np()
        return np.flatnonzero(mask & self._alloc_mask()).astype(np.uint32)

    def co_resonant_cells(self, cell_id: int) -> np.ndarray:
        c = self._check_cell(cell_id)
        keys = self._column("resonance_key")
        m = keys == keys[c]
        m[c] = False
        return self._members(m)

    def bucket_population(self, key: int) -> int:
        k = int(key)
        w = self._core_weights()
        if not 0 <= k < len(w):
            raise KernelError(f"resonance key {k} out of range 0..{len(w) - 1}")
        return int(w[k])

    def bucket_cells(self, key: int) -> np.ndarray:
        self.bucket_population(key)
        return self._members(self._column("resonance_key") == int(key))

    def cells_on_shell(self, s: int) -> np.ndarray:
        from . import law
        return self._members(law.SHELL[self._column("omega12")] == int(s))

    def cells_with_chi6(self, c: int) -> np.ndarray:
        from . import law
        return self._members(law.CHI6[self._column("omega12")] == int(c))

    def cells_with_signature(self, sig: int) -> np.ndarray:
        from . import law
        np = _np()
        hc = self._column("has_closed_word").astype(bool)
        sigs = np.where(hc, law.word_signatures(self._column("word4")), 0)
        return self._members(hc & (sigs == int(sig)))

    def chirality_distance(self, a: int, b: int) -> int:
        ca, cb = self._check_cell(a), self._check_cell(b)
        wa, wb = self._row(ca)["omega12"], self._row(cb)["omega12"]
        return lawcore.POPCOUNT6[lawcore.CHI6[wa] ^ lawcore.CHI6[wb]]

    @_locked
    def decay_resonance(self) -> None:
        self._core_decay()

    # ---- state, snapshot, restore -----------------------------------------------------------
    @_locked
    def export_state(self) -> dict[str, np.ndarray]:
        """The §16.3 arrays (unallocated rows zero); resonance_buckets = membership counts."""
        from .state import BODY, BUCKETS
        np = _np()
        st = self._gather(np.arange(self.capacity))
        alloc = self._alloc_mask()
        out: dict[str, np.ndarray] = {}
        for name, dt, _ in BODY:
            a = np.ascontiguousarray(st[name], dtype=dt) if name != "allocated" else alloc.astype(np.uint8)
            a = a.copy()
            a[~alloc] = 0
            out[name] = a
        out[BUCKETS[0]] = np.array(self._core_counts(), dtype=BUCKETS[1])
        return out

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray], profile: str = "chirality",
                   ledger: str | os.PathLike | None = None):
        from .state import validate_state
        np = _np()
        if profile not in lawcore.PROFILES:
            raise KernelError(f"unknown resonance profile {profile!r} (chirality, shell)")
        alloc = state.get("allocated")
        if not isinstance(alloc, np.ndarray) or alloc.ndim != 1 or not 1 <= alloc.shape[0] < 2**31:
            from .errors import SnapshotError
            raise SnapshotError("state array 'allocated' must be a 1-D uint8 array of the pool capacity")
        validate_state(state, alloc.shape[0], lawcore.PROFILES[profile])
        pool = cls(alloc.shape[0], profile, None)
        pool._core_load(state)
        if ledger is not None:
            from .ledger import LedgerWriter
            pool._ledger = LedgerWriter(ledger, pool.capacity, pool.profile_id)
            pool.ledger_path = os.fspath(ledger)
        return pool

    @_locked
    def snapshot(self, path: str | os.PathLike) -> None:
        from . import persist
        if self._ledger is not None:
            self._ledger.flush()
        persist.save(path, self.export_state(), capacity=self.capacity, profile_id=self.profile_id,
                     flags=1 if self._ledger is not None else 0, created_unix_ns=self.created_unix_ns)

    @classmethod
    def restore(cls, path: str | os.PathLike, ledger: str | os.PathLike | None = None):
        from . import persist
        header, state = persist.load(path)
        pool = cls.from_state(state, lawcore.PROFILE_NAMES[header.profile_id], ledger)
        pool.created_unix_ns = header.created_unix_ns
        return pool
