"""`--pprof PATH`: the stack store as a gzipped pprof profile (profile.proto), for `go tool pprof`,
Pyroscope, Parca and every other pprof reader.

The protobuf encoding is written here (~40 lines: varints, length-delimited fields, packed repeated
integers) rather than taken from a package: the pprof message set is small and fixed, the only PyPI
candidates either generate code from the .proto at build time (protobuf + a vendored profile_pb2) or
are unmaintained, and the encoder is checked against the real client (`go tool pprof`) in
tests/test_profiles_writers.py.

Layout (github.com/google/pprof/proto/profile.proto):
  sample_type   samples/count, wall/nanoseconds, cpu/nanoseconds, lock_wait/nanoseconds,
                lock_hold/nanoseconds (the store's five sums), then running/count: the samples that
                found the thread on a CPU (state "run"), what py-spy's own profiles count
  sample        one per store row: location ids innermost first, the five values, labels
                pid (num), thread_id (num), thread_name (str), state (str: run / gil / wait)
  location      one per distinct frame, one line each (function id, line number)
  function      one per distinct (function name, file, first line)
  default_sample_type  "cpu" when any CPU time was recorded, else "running" (attach through py-spy
                has no per-stack CPU time; "samples" would rank a thread waiting on a lock above the
                hot loop, as a first test on mixed_hot_and_lock showed: append_log 52% vs crunch 31%)
  period_type / period  wall/nanoseconds, the sampling interval when the caller knows it
"""
from __future__ import annotations

import gzip
import os
import time
from typing import Any

from gyroscope.agent.profiles.store import SAMPLE_TYPES, StackStore


# ---- a minimal protobuf encoder ----------------------------------------------------------------
def _varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64          # int64 negatives: ten-byte two's complement
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


_SMALL = [_varint(i) for i in range(1 << 14)]   # one- and two-byte varints: location ids, counts


def _key(field: int, wire: int) -> bytes:
    return _varint((field << 3) | wire)


def f_int(field: int, n: int) -> bytes:
    """A varint field (int64 / uint64 / bool); zero is the default and is omitted."""
    return _key(field, 0) + _varint(int(n)) if n else b""


def f_bytes(field: int, data: bytes) -> bytes:
    return _key(field, 2) + _varint(len(data)) + data


def f_packed(field: int, values: list[int]) -> bytes:
    if not values:
        return b""
    small = _SMALL
    return f_bytes(field, b"".join(small[v] if 0 <= v < 16384 else _varint(int(v)) for v in values))


class _Strings:
    def __init__(self) -> None:
        self.table: list[str] = [""]
        self.ids: dict[str, int] = {"": 0}

    def __call__(self, s: str) -> int:
        i = self.ids.get(s)
        if i is None:
            i = self.ids[s] = len(self.table)
            self.table.append(s)
        return i


def encode_profile(store: StackStore, time_unix_ns: int = 0, duration_ns: int = 0, period_ns: int = 0) -> bytes:
    """The uncompressed profile.proto message of a store."""
    s = _Strings()
    out = bytearray()
    for name, unit in (*SAMPLE_TYPES, ("running", "count")):
        out += f_bytes(1, f_int(1, s(name)) + f_int(2, s(unit)))
    functions: dict[tuple[str, str, int], int] = {}
    locations: dict[int, int] = {}     # frame index -> location id
    loc_msgs = bytearray()
    fn_msgs = bytearray()

    def location(frame_index: int) -> int:
        lid = locations.get(frame_index)
        if lid is not None:
            return lid
        f = store.frames[frame_index]
        fkey = (f.function, f.file, f.first_line)
        fid = functions.get(fkey)
        if fid is None:
            fid = functions[fkey] = len(functions) + 1
            fn_msgs.extend(f_bytes(5, f_int(1, fid) + f_int(2, s(display_name(f.function))) + f_int(3, s(f.function))
                                   + f_int(4, s(f.file)) + f_int(5, f.first_line)))
        lid = locations[frame_index] = len(locations) + 1
        line = f_int(1, fid) + f_int(2, f.line)
        loc_msgs.extend(f_bytes(4, f_int(1, lid) + f_bytes(4, line)))
        return lid

    k_pid, k_tid, k_tname, k_state = s("pid"), s("thread_id"), s("thread_name"), s("state")
    for (pid, tid, stack, state), v in store.rows.items():
        locs = [location(i) for i in store.stacks[stack]]
        labels = (f_bytes(3, f_int(1, k_pid) + f_int(3, pid)) + f_bytes(3, f_int(1, k_tid) + f_int(3, tid))
                  + f_bytes(3, f_int(1, k_tname) + f_int(2, s(store.threads.get((pid, tid), ""))))
                  + f_bytes(3, f_int(1, k_state) + f_int(2, s(state))))
        out += f_bytes(2, f_packed(1, locs) + f_packed(2, [*v, v[0] if state == "run" else 0]) + labels)
    out += loc_msgs
    out += fn_msgs
    default = "cpu" if any(v[2] for v in store.rows.values()) else "running"
    tail = (f_int(9, time_unix_ns) + f_int(10, duration_ns)
            + f_bytes(11, f_int(1, s("wall")) + f_int(2, s("nanoseconds"))) + f_int(12, period_ns)
            + (f_int(13, s(f"gyroscope: bound hit, {_dropped_text(store.dropped)}")) if any(store.dropped.values()) else b"")
            + f_int(14, s(default)))
    for text in s.table:   # the string table goes last: every string has been interned by now
        out += f_bytes(6, text.encode("utf-8"))
    out += tail
    return bytes(out)


def display_name(function: str) -> str:
    """pprof simplifies C++ names by dropping text in angle brackets, which would turn Python's
    `<module>`, `<lambda>` and `f.<locals>.g` into `<unknown>`: show them with parentheses instead
    (system_name keeps the original)."""
    return function.replace("<", "(").replace(">", ")")


def _dropped_text(d: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(d.items()))


def write_pprof(path: str | os.PathLike[str], store: StackStore, time_unix_ns: int = 0, duration_ns: int = 0,
                period_ns: int = 0) -> None:
    """Write the store as a gzipped profile.proto through the one output writer (agent/outputs.py)."""
    from gyroscope.agent.outputs import write_bytes
    data = gzip.compress(encode_profile(store, time_unix_ns or time.time_ns(), duration_ns, period_ns), mtime=0)
    write_bytes(path, data)

