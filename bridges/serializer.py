"""Events -> kernel words: a fixed, structure-preserving vocabulary (no hashing).

Every aggregated Event becomes a few copies of one 4-byte word, fed to the kernel cell of its
(entity, role) (spec 002 §25.1). Similar events map to the same word; what differs in the
word is what differs in the behaviour:

    byte0  event kind          TABLE below (one row per EventKind; KIND_CODE is its first column)
    byte1  detail              loops/calls: 0x80 saturated (hit K in the window) or 0x81 not;
                               waits: WAIT_CODE of the WaitKind; samples running: 0x90, GIL: 0x91;
                               gc: 0xA0 + generation; threads: 0xB0
    byte2  thread slot         0x40 + (order of first appearance of the thread mod 8)
    byte3  magnitude           log2 bucket (0..31) of the count (loops, calls, samples) or of
                               the duration in microseconds (wait episodes, mean gc pause)

    copies = 1 + min(bit_length(count) // 2, 3)   (1..4: busier events weigh a little more)

Structural intent (spec Appendix B.1): a hot loop keeps producing the same word (one thread,
saturated, the same count bucket) -> its cell's chirality histogram concentrates; a contended
lock sees words from different threads and waits of different lengths -> dispersed chi,
broad shells. Measured on ../shared/workloads (chi_support_ratio of the entity's primary cell):
hot loops 0.12-0.25, contended locks / conditions 0.39-0.63, single-thread sleeps 0.09-0.25.
shell_entropy separates them much less (0.75-0.90 for all).

    kind           byte0  byte1                          byte3
    LOOP_ITER      0x11   0x80 saturated / 0x81 exact    log2(count)
    CALL           0x22   0x80 / 0x81                    log2(count)
    RESUME         0x23   0x80 / 0x81                    log2(count)
    YIELD          0x24   0x80 / 0x81                    log2(count)
    SAMPLE_RUN     0x35   0x90                           log2(samples)
    SAMPLE_WAIT    0x46   WAIT_CODE[detail]              log2(samples)
    SAMPLE_GIL     0x47   0x91                           log2(samples)
    LOCK_WAIT      0x58   WAIT_CODE[detail]              log2(episode duration us)
    LOCK_ACQUIRE   0x59   WAIT_CODE[detail]              log2(count)
    GC             0x6A   0xA0 + generation              log2(mean pause us)
    THREAD_START   0x7B   0xB0                           0
    THREAD_END     0x7C   0xB0                           0
"""
from __future__ import annotations

import numpy as np
from gyroscope.bridges.events import Event, EventKind, WaitKind

WAIT_CODE: dict[str, int] = {
    WaitKind.LOCK: 0x01, WaitKind.RLOCK: 0x02, WaitKind.CONDITION: 0x03, WaitKind.SEMAPHORE: 0x04,
    WaitKind.EVENT: 0x05, WaitKind.QUEUE: 0x06, WaitKind.SLEEP: 0x07, WaitKind.SOCKET: 0x08,
    WaitKind.SELECT: 0x09, WaitKind.JOIN: 0x0A, WaitKind.OTHER: 0x0B,
    # the profiled locks' finer kinds: a bounded semaphore blocks as a semaphore does; asyncio waits
    # are task waits on one thread (not thread blocking), so they get words of their own
    WaitKind.BOUNDED_SEMAPHORE: 0x04, WaitKind.BARRIER: 0x0C,
    WaitKind.ASYNCIO_LOCK: 0x11, WaitKind.ASYNCIO_SEMAPHORE: 0x12, WaitKind.ASYNCIO_BOUNDED_SEMAPHORE: 0x12,
    WaitKind.ASYNCIO_CONDITION: 0x13, WaitKind.ASYNCIO_EVENT: 0x14,
}
DETAIL_SATURATED = 0x80
DETAIL_EXACT = 0x81
DETAIL_RUN = 0x90
DETAIL_GIL = 0x91
DETAIL_GC = 0xA0
DETAIL_THREAD = 0xB0
THREAD_SLOT_BASE = 0x40
THREAD_SLOTS = 8

# The whole vocabulary in one table: EventKind -> (byte0, how byte1 is chosen, what byte3 measures).
TABLE: dict[EventKind, tuple[int, str, str]] = {
    EventKind.LOOP_ITER: (0x11, "saturated 0x80 / exact 0x81", "log2(count)"),
    EventKind.CALL: (0x22, "saturated 0x80 / exact 0x81", "log2(count)"),
    EventKind.RESUME: (0x23, "saturated 0x80 / exact 0x81", "log2(count)"),
    EventKind.YIELD: (0x24, "saturated 0x80 / exact 0x81", "log2(count)"),
    EventKind.SAMPLE_RUN: (0x35, "0x90", "log2(samples)"),
    EventKind.SAMPLE_WAIT: (0x46, "WAIT_CODE[detail]", "log2(samples)"),
    EventKind.SAMPLE_GIL: (0x47, "0x91", "log2(samples)"),
    EventKind.LOCK_WAIT: (0x58, "WAIT_CODE[detail]", "log2(duration us)"),
    EventKind.LOCK_ACQUIRE: (0x59, "WAIT_CODE[detail]", "log2(count)"),
    EventKind.GC: (0x6A, "0xA0 + generation", "log2(mean pause us)"),
    EventKind.THREAD_START: (0x7B, "0xB0", "0"),
    EventKind.THREAD_END: (0x7C, "0xB0", "0"),
}
KIND_CODE: dict[EventKind, int] = {kind: row[0] for kind, row in TABLE.items()}


def log2_bucket(x: int) -> int:
    """0 for x <= 0, else 1 + floor(log2(x)), capped at 31."""
    return min(int(x).bit_length(), 31) if x > 0 else 0


class Serializer:
    """Stateful only in the thread-slot numbering (order of first appearance)."""

    def __init__(self) -> None:
        self._slots: dict[int, int] = {}

    def thread_slot(self, thread: int) -> int:
        s = self._slots.get(thread)
        if s is None:
            s = self._slots[thread] = len(self._slots) % THREAD_SLOTS
        return s

    def word(self, ev: Event) -> tuple[int, int, int, int]:
        kind = ev.kind
        b0 = KIND_CODE[kind]
        if kind in (EventKind.LOOP_ITER, EventKind.CALL, EventKind.RESUME, EventKind.YIELD):
            b1 = DETAIL_SATURATED if ev.duration_ns else DETAIL_EXACT
            b3 = log2_bucket(ev.count)
        elif kind == EventKind.SAMPLE_RUN:
            b1, b3 = DETAIL_RUN, log2_bucket(ev.count)
        elif kind == EventKind.SAMPLE_GIL:
            b1, b3 = DETAIL_GIL, log2_bucket(ev.count)
        elif kind in (EventKind.SAMPLE_WAIT, EventKind.LOCK_ACQUIRE):
            b1, b3 = WAIT_CODE.get(ev.entity.detail, WAIT_CODE[WaitKind.OTHER]), log2_bucket(ev.count)
        elif kind == EventKind.LOCK_WAIT:
            b1 = WAIT_CODE.get(ev.entity.detail, WAIT_CODE[WaitKind.OTHER])
            b3 = log2_bucket(ev.duration_ns // 1000)
        elif kind == EventKind.GC:
            b1, b3 = DETAIL_GC + (ev.entity.line & 0x0F), log2_bucket(ev.duration_ns // max(ev.count, 1) // 1000)
        else:
            b1, b3 = DETAIL_THREAD, 0
        b2 = THREAD_SLOT_BASE + self.thread_slot(ev.thread)
        return b0, b1, b2, b3

    @staticmethod
    def copies(ev: Event) -> int:
        return 1 + min(max(ev.count, 0).bit_length() // 2, 3)

    def encode(self, cells: list[int], events: list[Event]) -> tuple[np.ndarray, np.ndarray]:
        """(cell_ids uint32[n], words uint8[n, 4]) for events[i] going to cells[i] (cells < 0 skipped)."""
        ids: list[int] = []
        words: list[tuple[int, int, int, int]] = []
        for cell, ev in zip(cells, events):
            if cell < 0:
                continue
            w = self.word(ev)
            for _ in range(self.copies(ev)):
                ids.append(cell)
                words.append(w)
        return (np.asarray(ids, dtype=np.uint32),
                np.asarray(words, dtype=np.uint8).reshape(-1, 4))
