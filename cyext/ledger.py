"""The ingest ledger (spec §15, §16.4): append-only, replayable, verifiable.

Byte layout, version 1, little-endian:

  offset  size  field
  0       4     magic       b"GYRL"
  4       4     version     uint32 = 1
  8       4     capacity    uint32 (of the pool that wrote it)
  12      2     profile_id  uint16
  14      2     flags       uint16 (0; reserved)
  16      32    kernel_law_hash (KERNEL §8)
  48            records, 8 bytes each, in the order the pool applied them:
                data record     uint32 cell_id (< 2**31) + word4 (4 bytes)      -- spec §16.4
                control record  uint32 (0x80000000 | cell_id) + op, 0, uint16 value
                  op 1 = seed: the cell becomes allocated (if free) and is reset to omega12 = value
                         (every seed, allocate included, reduces to an omega12; see cyext.api)
                  op 2 = free (value 0)

Allocation rule: the ledger records every allocate/seed/free as a control record, so replay
allocates exactly the cell ids the live pool used. A ledger attached to a restored pool starts
from that snapshot: replay it with `base=` that snapshot.

A truncated last record (a crash mid-write) is reported by `read_ledger` as truncated bytes;
the valid prefix still replays. decay_resonance() is not recorded: it changes no persisted
state (a snapshot stores membership counts). A writer opening an existing ledger checks its header and cuts
such a partial record off before appending.
"""
from __future__ import annotations

import errno
import os
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import law
from .errors import KernelError, LedgerError, SnapshotError

MAGIC = b"GYRL"
VERSION = 1
_HEADER = struct.Struct("<4sIIHH32s")
HEADER_SIZE = _HEADER.size  # 48
RECORD = np.dtype([("cell_id", "<u4"), ("word", "u1", (4,))])
CONTROL = 0x80000000
OP_SEED, OP_FREE = 1, 2


@dataclass(frozen=True)
class LedgerHeader:
    version: int
    capacity: int
    profile_id: int
    flags: int


# A corrupt header must not make replay allocate gigabytes: 4M cells is 640 MiB of pool.
MAX_LEDGER_CAPACITY = 1 << 22


def _header_bytes(capacity: int, profile_id: int) -> bytes:
    return _HEADER.pack(MAGIC, VERSION, capacity, profile_id, 0, law.LAW_HASH_BYTES)


def check_appendable(path: str | os.PathLike, capacity: int, profile_id: int) -> None:
    """Raise LedgerError when a pool of `capacity` / `profile_id` could not append to the ledger at
    `path` (what LedgerWriter would refuse), without opening it for writing."""
    path = os.fspath(path)
    try:
        if not os.path.exists(path) or not os.path.getsize(path):
            return
        with open(path, "rb") as f:
            h = _parse_header(f.read(HEADER_SIZE), path)
    except OSError as e:
        raise LedgerError(f"cannot open ledger {path}: {e.strerror or e}") from None
    if h.capacity != capacity or h.profile_id != profile_id:
        raise LedgerError(f"{path}: ledger was written by a pool of capacity {h.capacity}, "
                          f"profile {h.profile_id}; this pool has {capacity}, {profile_id}")


def _parse_header(data: bytes, path: str) -> LedgerHeader:
    if len(data) < 4 or data[:4] != MAGIC:
        raise LedgerError(f"{path}: not a gyroscope ledger (wrong magic, expected GYRL)")
    if len(data) < HEADER_SIZE:
        raise LedgerError(f"{path}: truncated ledger header ({len(data)} of {HEADER_SIZE} bytes)")
    _, version, cap, pid, flags, lh = _HEADER.unpack_from(data, 0)
    if version != VERSION:
        raise LedgerError(f"{path}: unsupported ledger version {version} (this kernel reads version {VERSION})")
    if lh != law.LAW_HASH_BYTES:
        raise LedgerError(f"{path}: kernel law hash mismatch: ledger has {lh.hex()}, this kernel is {law.LAW_HASH}")
    if pid not in law.N_BUCKETS:
        raise LedgerError(f"{path}: unknown resonance profile id {pid}")
    if not 1 <= cap <= MAX_LEDGER_CAPACITY:
        raise LedgerError(f"{path}: invalid capacity {cap} (a ledger names 1..{MAX_LEDGER_CAPACITY} cells)")
    return LedgerHeader(version, cap, pid, flags)


class LedgerWriter:
    """Appends records; buffered, flushed on flush()/close() (close also fsyncs)."""

    def __init__(self, path: str | os.PathLike, capacity: int, profile_id: int) -> None:
        self.path = os.fspath(path)
        try:
            size = os.path.getsize(self.path) if os.path.exists(self.path) else 0
            if size:
                with open(self.path, "rb") as f:
                    h = _parse_header(f.read(HEADER_SIZE), self.path)
                if h.capacity != capacity or h.profile_id != profile_id:
                    raise LedgerError(f"{self.path}: ledger was written by a pool of capacity {h.capacity}, "
                                      f"profile {h.profile_id}; this pool has {capacity}, {profile_id}")
                extra = (size - HEADER_SIZE) % RECORD.itemsize
                if extra:
                    os.truncate(self.path, size - extra)
                self._f = open(self.path, "ab", buffering=1 << 20)
            else:
                self._f = open(self.path, "wb", buffering=1 << 20)
                self._f.write(_header_bytes(capacity, profile_id))
        except OSError as e:
            raise LedgerError(f"cannot open ledger {self.path}: {e.strerror or e}") from None

    def write_words(self, ids: Any, words: Any) -> None:
        """ids: n uint32 cell ids; words: their 4n bytes (any buffers: arrays, array('I'), bytes)."""
        rec = np.empty(len(ids), dtype=RECORD)
        rec["cell_id"] = np.frombuffer(ids, dtype=np.uint32)
        rec["word"] = np.frombuffer(words, dtype=np.uint8).reshape(-1, 4)
        self._f.write(rec.tobytes())

    def write_seed(self, cid: int, omega12: int) -> None:
        self._f.write(struct.pack("<IBBH", CONTROL | cid, OP_SEED, 0, omega12))

    def write_free(self, cid: int) -> None:
        self._f.write(struct.pack("<IBBH", CONTROL | cid, OP_FREE, 0, 0))

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        if not self._f.closed:
            try:
                self._f.flush()
                try:
                    os.fsync(self._f.fileno())
                except OSError as e:   # a device or FIFO (--ledger /dev/null) cannot be fsynced
                    if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EROFS):
                        raise
            finally:
                self._f.close()


def read_ledger_full(path: str | os.PathLike) -> tuple[LedgerHeader, np.ndarray, np.ndarray, int]:
    p = os.fspath(path)
    try:
        with open(p, "rb") as f:
            data = f.read()
    except OSError as e:
        raise LedgerError(f"cannot read ledger {p}: {e.strerror or e}") from None
    header = _parse_header(data, p)
    body = len(data) - HEADER_SIZE
    n = body // RECORD.itemsize
    rec = np.frombuffer(data, dtype=RECORD, count=n, offset=HEADER_SIZE)
    return header, rec["cell_id"].astype(np.uint32), rec["word"].copy(), body - n * RECORD.itemsize


def read_ledger(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, int]:
    """(cell_ids uint32 (n,), words uint8 (n, 4), truncated_bytes). Control records are included:
    their cell_id has bit 31 set (see the module docstring)."""
    _, ids, words, truncated = read_ledger_full(path)
    return ids, words, truncated


def replay(path: str | os.PathLike, capacity: int | None = None, engine: Any = None,
           base: str | os.PathLike | None = None):
    """Rebuild the pool a ledger describes (from empty, or from the snapshot `base`)."""
    if engine is None:
        from . import CellPool as engine  # noqa: N813
    header, ids, words, _ = read_ledger_full(path)
    cap = header.capacity if capacity is None else int(capacity)
    profile = law.PROFILE_NAMES[header.profile_id]
    if base is not None:
        pool = engine.restore(base)
        if pool.capacity != cap or pool.profile_id != header.profile_id:
            raise LedgerError(f"base snapshot has capacity {pool.capacity}, profile {pool.profile_id}; "
                              f"the ledger needs {cap}, {header.profile_id}")
    else:
        try:
            pool = engine(cap, profile)
        except KernelError as e:
            raise LedgerError(f"cannot build a pool for ledger: {e}") from None
    ctrl = np.flatnonzero(ids & CONTROL)
    start = 0
    for idx in [*ctrl.tolist(), len(ids)]:
        if idx > start:
            try:
                pool.ingest(ids[start:idx], words[start:idx])
            except KernelError as e:
                raise LedgerError(f"ledger record in {start}..{idx - 1} cannot be replayed: {e}") from None
        if idx < len(ids):
            cid = int(ids[idx] & ~np.uint32(CONTROL))
            op, value = int(words[idx, 0]), int(words[idx, 2]) | (int(words[idx, 3]) << 8)
            if cid >= pool.capacity or op not in (OP_SEED, OP_FREE) or value > 4095 or words[idx, 1]:
                raise LedgerError(f"ledger record {idx} is not a valid control record")
            if op == OP_SEED:
                pool._core_reset(cid, value)
            elif not pool.is_allocated(cid):
                raise LedgerError(f"ledger record {idx} frees cell {cid}, which is not allocated")
            else:
                pool._core_free(cid)
        start = idx + 1
    return pool


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    message: str
    records: int
    truncated_bytes: int

    def __bool__(self) -> bool:
        return self.ok


def verify(ledger_path: str | os.PathLike, snapshot_path: str | os.PathLike, engine: Any = None,
           base: str | os.PathLike | None = None) -> VerifyResult:
    """Replay the ledger and compare the result with a snapshot, array by array."""
    from . import persist
    _, ids, _, truncated = read_ledger_full(ledger_path)
    pool = replay(ledger_path, engine=engine, base=base)
    try:
        header, snap = persist.load(snapshot_path)
    except SnapshotError as e:
        return VerifyResult(False, f"snapshot cannot be read: {e}", len(ids), truncated)
    note = f" ({truncated} truncated trailing bytes ignored)" if truncated else ""
    if header.capacity != pool.capacity or header.profile_id != pool.profile_id:
        return VerifyResult(False, f"mismatch: snapshot capacity/profile {header.capacity}/{header.profile_id}, "
                            f"ledger {pool.capacity}/{pool.profile_id}{note}", len(ids), truncated)
    live = pool.export_state()
    for name, a in live.items():
        b = snap[name]
        if not np.array_equal(a, b):
            diff = np.flatnonzero((a != b).reshape(len(a), -1).any(axis=1)) if a.ndim else [0]
            where = "bucket" if name == "resonance_buckets" else "cell"
            return VerifyResult(False, f"mismatch: {name} differs first at {where} {int(diff[0])}{note}",
                                len(ids), truncated)
    return VerifyResult(True, f"ledger replays to the snapshot ({len(ids)} records){note}", len(ids), truncated)


def compare(a: str | os.PathLike, b: str | os.PathLike) -> int | None:
    """Index of the first record where two ledgers differ (the shorter length if one is a prefix
    of the other), or None when their records are identical. Headers must agree."""
    ha, ia, wa, _ = read_ledger_full(a)
    hb, ib, wb, _ = read_ledger_full(b)
    if (ha.capacity, ha.profile_id) != (hb.capacity, hb.profile_id):
        return 0
    n = min(len(ia), len(ib))
    diff = np.flatnonzero((ia[:n] != ib[:n]) | (wa[:n] != wb[:n]).any(axis=1))
    if diff.size:
        return int(diff[0])
    return None if len(ia) == len(ib) else n
