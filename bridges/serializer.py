"""Events -> kernel words: a fixed, structure-preserving vocabulary (no hashing).

Every aggregated Event becomes a few copies of one 4-byte word, fed to the kernel cell of its
(entity, role) (spec 002 §25.1). Similar events map to the same word; what differs in the
word is what differs in the behaviour:

    byte0  event kind          TABLE below (one row per EventKind; KIND_CODE is its byte0 column)
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

The vocabulary is written once, in TABLE below (kind -> byte0, the rule for byte1, the rule
for byte3), and `Serializer.word()` reads it; `describe()` prints it as a table.
"""
from __future__ import annotations

import array
from collections.abc import Callable
from dataclasses import dataclass

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

def log2_bucket(x: int) -> int:
    """0 for x <= 0, else 1 + floor(log2(x)), capped at 31."""
    return min(int(x).bit_length(), 31) if x > 0 else 0


def _saturation(ev: Event) -> int:
    return DETAIL_SATURATED if ev.duration_ns else DETAIL_EXACT


def _wait_code(ev: Event) -> int:
    return WAIT_CODE.get(ev.entity.detail, WAIT_CODE[WaitKind.OTHER])


def _gc_generation(ev: Event) -> int:
    return DETAIL_GC + (ev.entity.line & 0x0F)


def _count(ev: Event) -> int:
    return log2_bucket(ev.count)


def _duration_us(ev: Event) -> int:
    return log2_bucket(ev.duration_ns // 1000)


def _mean_pause_us(ev: Event) -> int:
    return log2_bucket(ev.duration_ns // max(ev.count, 1) // 1000)


def _const(value: int, label: str) -> Callable[[Event], int]:
    def rule(ev: Event) -> int:
        return value
    rule.__doc__ = label
    return rule


@dataclass(frozen=True, slots=True)
class Row:
    """One word rule: byte0 is the kind's code; byte1 and byte3 are computed from the event."""
    byte0: int
    detail: Callable[[Event], int]       # byte1
    magnitude: Callable[[Event], int]    # byte3
    detail_text: str
    magnitude_text: str


def _row(byte0: int, detail: Callable[[Event], int], detail_text: str,
         magnitude: Callable[[Event], int], magnitude_text: str) -> Row:
    return Row(byte0, detail, magnitude, detail_text, magnitude_text)


# The whole vocabulary: EventKind -> the rule of its word. byte2 is always the thread slot.
TABLE: dict[EventKind, Row] = {
    EventKind.LOOP_ITER: _row(0x11, _saturation, "0x80 saturated / 0x81 exact", _count, "log2(count)"),
    EventKind.CALL: _row(0x22, _saturation, "0x80 saturated / 0x81 exact", _count, "log2(count)"),
    EventKind.RESUME: _row(0x23, _saturation, "0x80 saturated / 0x81 exact", _count, "log2(count)"),
    EventKind.YIELD: _row(0x24, _saturation, "0x80 saturated / 0x81 exact", _count, "log2(count)"),
    EventKind.SAMPLE_RUN: _row(0x35, _const(DETAIL_RUN, "0x90"), "0x90", _count, "log2(samples)"),
    EventKind.SAMPLE_WAIT: _row(0x46, _wait_code, "WAIT_CODE[detail]", _count, "log2(samples)"),
    EventKind.SAMPLE_GIL: _row(0x47, _const(DETAIL_GIL, "0x91"), "0x91", _count, "log2(samples)"),
    EventKind.LOCK_WAIT: _row(0x58, _wait_code, "WAIT_CODE[detail]", _duration_us, "log2(episode duration us)"),
    EventKind.LOCK_ACQUIRE: _row(0x59, _wait_code, "WAIT_CODE[detail]", _count, "log2(count)"),
    EventKind.GC: _row(0x6A, _gc_generation, "0xA0 + generation", _mean_pause_us, "log2(mean pause us)"),
    EventKind.THREAD_START: _row(0x7B, _const(DETAIL_THREAD, "0xB0"), "0xB0", _const(0, "0"), "0"),
    EventKind.THREAD_END: _row(0x7C, _const(DETAIL_THREAD, "0xB0"), "0xB0", _const(0, "0"), "0"),
    EventKind.LOOP_BLOCK: _row(0x8D, _const(0xC0, "0xC0"), "0xC0", _duration_us, "log2(blocked us)"),
}
KIND_CODE: dict[EventKind, int] = {kind: row.byte0 for kind, row in TABLE.items()}


def describe() -> str:
    """TABLE as text: kind, byte0, byte1 rule, byte3 rule."""
    lines = [f"{'kind':<14} byte0  {'byte1':<30} byte3"]
    for kind, row in TABLE.items():
        lines.append(f"{kind.name:<14} 0x{row.byte0:02X}   {row.detail_text:<30} {row.magnitude_text}")
    return "\n".join(lines)


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
        """The event's 4-byte word, by its kind's row of TABLE."""
        row = TABLE[ev.kind]
        return row.byte0, row.detail(ev), THREAD_SLOT_BASE + self.thread_slot(ev.thread), row.magnitude(ev)

    @staticmethod
    def copies(ev: Event) -> int:
        return 1 + min(max(ev.count, 0).bit_length() // 2, 3)

    def encode(self, cells: list[int], events: list[Event]) -> tuple[array.array, bytes]:
        """(cell ids as array('I'), their 4-byte words as 4n bytes) for events[i] going to
        cells[i] (cells < 0 skipped): what CellPool.ingest takes without numpy."""
        ids = array.array("I")
        words = bytearray()
        for cell, ev in zip(cells, events):
            if cell < 0:
                continue
            w = bytes(self.word(ev))
            k = self.copies(ev)
            ids.extend([cell] * k)
            words += w * k
        return ids, bytes(words)
