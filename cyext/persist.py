"""GYRG state files (spec §16.1-§16.3): save atomically, load with one clear error each.

Byte layout, version 1, all integers little-endian, no padding anywhere:

  offset  size  field
  0       4     magic            b"GYRG"
  4       4     version          uint32 = 1
  8       4     capacity         uint32 (number of cells, C)
  12      4     active_count     uint32 (must equal the number of allocated cells)
  16      2     profile_id       uint16 (0 chirality: 64 buckets, 1 shell: 7 buckets)
  18      2     flags            uint16 (bit 0 = ingest logging was enabled)
  20      8     created_unix_ns  uint64
  28      32    kernel_law_hash  SHA-256 of the law (KERNEL §8)
  60            body: the §16.3 arrays, C-contiguous, one after the other, in this order
                allocated        uint8  [C]
                has_closed_word  uint8  [C]
                omega12          int32  [C]
                step             uint64 [C]
                last_byte        uint8  [C]
                word4            uint8  [C, 4]
                chi_ring64       uint8  [C, 64]
                family_ring64    uint8  [C, 64]
                chi_ring_pos     uint8  [C]
                chi_valid_len    uint8  [C]
                chi_hist64       uint16 [C, 64]
                shell_hist7      uint16 [C, 7]
                family_hist4     uint16 [C, 4]
                omega_sig        int32  [C]
                parity_O12       uint16 [C]
                parity_E12       uint16 [C]
                parity_bit       uint8  [C]
                resonance_key    uint32 [C]
                resonance_buckets uint32 [B]   (B = 64 or 7; true membership counts)
  end of file right after resonance_buckets (a longer or shorter file is refused).

Free cells are stored as zero rows. Loading never unpickles anything; it refuses (SnapshotError):
a wrong magic, an unknown version, a law hash mismatch, a truncated or over-long file, an
unknown profile, an active_count that disagrees, and any state that `state.validate_state`
rejects (inconsistent bucket counts, histograms that disagree with the rings, ...).
"""
from __future__ import annotations

import os
import struct
import tempfile
from dataclasses import dataclass

import numpy as np

from . import law
from .errors import SnapshotError
from .state import BODY, BUCKETS, validate_state

MAGIC = b"GYRG"
VERSION = 1
_HEADER = struct.Struct("<4sIIIHHQ32s")
HEADER_SIZE = _HEADER.size  # 60


@dataclass(frozen=True)
class Header:
    version: int
    capacity: int
    active_count: int
    profile_id: int
    flags: int
    created_unix_ns: int
    law_hash: bytes


def body_size(capacity: int, profile_id: int) -> int:
    size = sum(capacity * int(np.prod(shape, dtype=np.int64)) * dt.itemsize for _, dt, shape in BODY)
    return size + law.N_BUCKETS[profile_id] * BUCKETS[1].itemsize


def encode(state: dict[str, np.ndarray], *, capacity: int, profile_id: int, flags: int = 0,
           created_unix_ns: int = 0) -> bytes:
    active = int(np.count_nonzero(state["allocated"]))
    parts = [_HEADER.pack(MAGIC, VERSION, capacity, active, profile_id, flags, created_unix_ns,
                          law.LAW_HASH_BYTES)]
    for name, dt, _ in BODY:
        parts.append(np.ascontiguousarray(state[name], dtype=dt.newbyteorder("<")).tobytes())
    parts.append(np.ascontiguousarray(state[BUCKETS[0]], dtype="<u4").tobytes())
    return b"".join(parts)


def save(path: str | os.PathLike, state: dict[str, np.ndarray], *, capacity: int, profile_id: int,
         flags: int = 0, created_unix_ns: int = 0) -> None:
    """Write atomically: temp file in the same directory, fsync, os.replace, fsync the directory."""
    data = encode(state, capacity=capacity, profile_id=profile_id, flags=flags,
                  created_unix_ns=created_unix_ns)
    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".gyrg-", suffix=".tmp", dir=d)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        dfd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def decode(data: bytes) -> tuple[Header, dict[str, np.ndarray]]:
    if len(data) < 4 or data[:4] != MAGIC:
        raise SnapshotError("not a gyroscope state file (wrong magic, expected GYRG)")
    if len(data) < HEADER_SIZE:
        raise SnapshotError(f"truncated state file: {len(data)} bytes, the header alone is {HEADER_SIZE}")
    _, version, cap, active, pid, flags, created, lh = _HEADER.unpack_from(data, 0)
    if version != VERSION:
        raise SnapshotError(f"unsupported state file version {version} (this kernel reads version {VERSION})")
    if lh != law.LAW_HASH_BYTES:
        raise SnapshotError(f"kernel law hash mismatch: file has {lh.hex()}, this kernel is {law.LAW_HASH}")
    if pid not in law.N_BUCKETS:
        raise SnapshotError(f"unknown resonance profile id {pid} in state file")
    if cap < 1 or cap >= 2**31:
        raise SnapshotError(f"invalid capacity {cap} in state file")
    expected = HEADER_SIZE + body_size(cap, pid)
    if len(data) < expected:
        raise SnapshotError(f"truncated state file: {len(data)} bytes, expected {expected}")
    if len(data) > expected:
        raise SnapshotError(f"state file has {len(data) - expected} unexpected trailing bytes")
    st: dict[str, np.ndarray] = {}
    off = HEADER_SIZE
    for name, dt, shape in BODY:
        count = cap * int(np.prod(shape, dtype=np.int64))
        a = np.frombuffer(data, dtype=dt.newbyteorder("<"), count=count, offset=off)
        st[name] = a.astype(dt).reshape((cap, *shape))
        off += count * dt.itemsize
    st[BUCKETS[0]] = np.frombuffer(data, dtype="<u4", count=law.N_BUCKETS[pid], offset=off).astype(BUCKETS[1])
    if int(np.count_nonzero(st["allocated"])) != active:
        raise SnapshotError(f"state file header says {active} active cells, the body has "
                            f"{int(np.count_nonzero(st['allocated']))}")
    validate_state(st, cap, pid)
    return Header(version, cap, active, pid, flags, created, lh), st


def load(path: str | os.PathLike) -> tuple[Header, dict[str, np.ndarray]]:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise SnapshotError(f"cannot read state file {os.fspath(path)}: {e.strerror or e}") from None
    return decode(data)
