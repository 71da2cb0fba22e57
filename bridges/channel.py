"""The gyroscope side of the process boundary: receives what the in-process bridge ships.

Every process of a `gyroscope run` session (the program, and each python process it forks or
starts when subprocesses are followed) connects once to a Unix socket in the session's private
directory and sends binary frames (their layout is in the docstring of bridges/_inproc.pyx).
One reader thread in the gyroscope process accepts the connections and decodes the frames;
`poll()` hands the session, once per window, an Observation with the events of every process
since the last poll.

Conventions of the events (see bridges/events.py):
- LOOP_ITER / CALL / RESUME / YIELD: `count` = hits seen in the window; `duration_ns` is 0 when
  the location was not saturated (the count is exact), else the estimated time of count - 1
  iterations without the callbacks (rate = (count - 1) / duration): the gaps between hits WARM
  to K (each from the return of one callback to the start of the next), less the calibrated
  dispatch cost of a callback per gap (`dispatch_ns`: (near, far), by how many of the jump's
  offsets are past the small-int cache), measured by each process on itself at its first window
  (shipped with every window), else by the gyroscope process.
- Loops counted from their range iterator (bridges/_inproc.pyx "spans") come as
  Observation.loop_reads (LoopRead: iterations no hit counted, the uninstrumented iterations and
  thread CPU time that give the loop's own rate, and whether the window's count may be
  incomplete: "coverage"), not as events.
- GC: the collections of one generation in the window (`count`), `duration_ns` their pause.
Entities of the program's first process have pid 0; those of other processes carry their pid.
"""
from __future__ import annotations

import marshal
import os
import select
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gyroscope.bridges import codemap, procfs
from gyroscope.bridges.events import Entity, EntityKind, Event, EventKind, LockWindow, LoopRead, Observation
from gyroscope.bridges.lockstats import LockStats

T_HELLO, T_SLOTS, T_WINDOW, T_FINAL, T_EXTRA, T_EXITING, T_LIVE = 1, 2, 3, 4, 5, 6, 16
WARM, CALL_WARM = 256, 8   # bridges/_inproc.pyx WARM_HITS (loops) and CALL_WARM (the other slots)
_KIND_EVENT = {0: EventKind.LOOP_ITER, 1: EventKind.CALL, 2: EventKind.RESUME, 3: EventKind.YIELD}
_SLOT = struct.Struct("=IIiiiII")
_HIT = struct.Struct("=IIqqQQQQqQq")
_HEAD = struct.Struct("=qQQQII")
_GC = struct.Struct("=qqqq")
_THREAD = struct.Struct("=QQ")
_HELLO = struct.Struct("=qqqB")
_STEP = struct.Struct("=IIIIqqqq")
MAX_FRAME = 64 << 20


@dataclass
class ProcessInfo:
    """One process of the session, as its bridge introduced itself."""
    pid: int
    ppid: int
    python: str = ""
    executable: str = ""
    forked: bool = False
    command: list[str] = field(default_factory=list)
    connected_unix_s: float = 0.0
    ended: bool = False          # its bridge sent the final frame (normal interpreter exit)
    cut_short: bool = False      # its connection closed (or the session stopped) without that frame
    raw_events: int = 0
    dropped: int = 0
    callback_errors: int = 0
    slots: dict[int, tuple[int, int, int, int, str, str]] = field(default_factory=dict)
    far: dict[int, int] = field(default_factory=dict)   # slot -> offsets past 256 (0-2; see dispatch_ns)
    dispatch_ns: tuple[float, float] | None = None      # the process's own (near, far) calibration
    natives: dict[int, int] = field(default_factory=dict)   # thread ident -> native id


class _Conn:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.out = b""                # bytes to gyroscope's program side not sent yet
        self.proc: ProcessInfo | None = None


class ChannelServer:
    """Listens on `path`; decodes frames of every connected process into events."""

    name = "run"

    def __init__(self, listener: Any, path: str, dispatch_ns: tuple[float, float] | None = None,
                 main_pid_getter: Callable[[], int] | None = None) -> None:
        """`listener`: a listening AF_UNIX socket bound at `path` (made before the program starts;
        a bare _socket.socket is fine)."""
        self.path = path
        # (near, far): bridges/_inproc.pyx calibrate() in this process, a fallback measured at the
        # first poll that needs it (a window without the program's own calibration: its bridge
        # found no free sys.monitoring tool id); such windows are priced again then
        self.dispatch_ns = dispatch_ns
        self._unpriced: list[tuple[Event, int, int, int, int, int]] = []
        self._main_pid = main_pid_getter or (lambda: 0)
        # called (in the reader's thread) when the program's main process begins its exit: its
        # atexit callbacks ran, its finalisation (~10 ms) is all that is left (run_source.py)
        self.on_main_exiting: Callable[[], None] | None = None
        if not isinstance(listener, socket.socket):
            listener = socket.socket(fileno=listener.detach())
        self.listener = listener
        self.listener.setblocking(False)
        self.processes: dict[int, ProcessInfo] = {}
        self.errors: list[str] = []
        self._events: list[Event] = []
        self._loop_reads: list[LoopRead] = []
        self._lock_windows: list[LockWindow] = []
        self.lockstats: dict[int, LockStats] = {}   # per process: the profiled locks' sites
        self._actions: list[tuple[int, int, dict[str, Any]]] = []   # (pid, index, action): live.report()
        self._lock = threading.Lock()
        self._sel = selectors.DefaultSelector()
        self._sel.register(self.listener, selectors.EVENT_READ, None)
        self._wake_r, self._wake_w = socket.socketpair()   # stop() wakes the reader at once
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._conns: list[_Conn] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t_last = time.monotonic_ns()
        self._entities: dict[tuple[int, int], Entity] = {}
        self._gc_entities: dict[tuple[int, int], Entity] = {}
        self._raw = 0
        self._dropped = 0

    # ---- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="gyroscope-channel", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._pump(1.0)

    def _pump(self, timeout: float) -> int:
        """Accept and read whatever is ready; return the bytes read."""
        n = 0
        for key, _ in self._sel.select(timeout):
            if key.data == "wake":
                continue
            if key.data is None:
                try:
                    sock, _addr = self.listener.accept()
                except (BlockingIOError, OSError):
                    continue
                sock.setblocking(False)
                conn = _Conn(sock)
                self._conns.append(conn)
                self._sel.register(sock, selectors.EVENT_READ, conn)
                continue
            conn = key.data
            try:
                data = conn.sock.recv(1 << 20)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                self._close(conn)
                continue
            n += len(data)
            conn.buf += data
            self._frames(conn)
        return n

    def send_live(self, decisions: list[dict[str, Any]]) -> int:
        """Send the live decisions to every process of the session (never blocks: what a full
        socket does not take now is sent at the next call). Returns the processes reached."""
        payload = marshal.dumps(decisions)
        frame = struct.pack("=IB", len(payload) + 1, T_LIVE) + payload
        reached = 0
        for conn in list(self._conns):
            if conn.proc is None:
                continue
            conn.out = frame if not conn.out else conn.out + frame
            try:
                n = conn.sock.send(conn.out)
                conn.out = conn.out[n:]
                reached += 1
            except BlockingIOError:
                pass
            except OSError:
                conn.out = b""
        return reached

    def _cut_short(self, proc: ProcessInfo | None) -> None:
        """A process whose connection closed without its final frame (os._exit, a signal, a crash)
        or that still runs when the session stops: its last window never arrives, so no count of
        its loops is whole (a LoopRead with `gap` for each loop it has reported)."""
        if proc is None or proc.ended or proc.cut_short:
            return
        proc.cut_short = True
        reads = [LoopRead(ent, gap=True, lost=True) for slot, desc in proc.slots.items() if desc[0] == 0
                 and (ent := self._entities.get((id(proc.slots), slot))) is not None]
        with self._lock:
            self._loop_reads.extend(reads)

    def _close(self, conn: _Conn) -> None:
        self._cut_short(conn.proc)
        try:
            self._sel.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.sock.close()
        if conn in self._conns:
            self._conns.remove(conn)

    def drain(self, timeout_s: float = 0.5) -> None:
        """After the program ended: read what its processes still have in flight (stops early when
        every connection is closed and nothing more is ready)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._thread is not None and self._thread.is_alive():
                if not self._conns and not self._pending():   # every connection read to its end
                    break
                time.sleep(0.001)
                continue
            if self._pump(0.02) == 0 and not self._conns:
                break

    def _pending(self) -> bool:
        """A connection waits in the listener's backlog (not accepted yet)."""
        try:
            return bool(select.select([self.listener], [], [], 0)[0])
        except (OSError, ValueError):
            return False

    def stop(self) -> Observation:
        """Everything left; closes the socket."""
        self._stop.set()
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        self._pump(0)
        for conn in list(self._conns):
            self._cut_short(conn.proc)
        obs = self.poll()
        for conn in list(self._conns):
            self._close(conn)
        try:
            self._sel.unregister(self.listener)
        except (KeyError, ValueError):
            pass
        self.listener.close()
        self._sel.close()
        self._wake_r.close()
        self._wake_w.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass
        return obs

    @staticmethod
    def _fallback_dispatch() -> tuple[float, float]:
        from gyroscope.bridges import _inproc
        return _inproc.calibrate(far=False), _inproc.calibrate(far=True)

    def _duration(self, span: int, count: int, far: int, own: tuple[float, float] | None = None,
                  warm: int = WARM, others: int = 0) -> int:
        """The time of count - 1 iterations without the callbacks, from the gaps of the timed ones
        (span = (count - warm) x the mean gap, the other callbacks' durations left out; module
        docstring), less the process's `own` calibrated dispatch cost for the slot's own callback
        and each of the `others`, else the gyroscope process's; uncalibrated: the gaps as they are."""
        n = count - warm
        near, far_ns = own or self.dispatch_ns or (0.0, 0.0)
        cost = near + (far_ns - near) * far / 2
        # another location's callback (a return, a resume, another loop's jump): halfway between
        # near and far (a generator loop's rate, medians of 5: -10% here, -15% with near; -45% with
        # none taken off)
        other = (near + far_ns) / 2
        per = max(span - n * cost - others * other, span / 8) / n
        return max(1, int(per * (count - 1)))

    def poll(self) -> Observation:
        now = time.monotonic_ns()
        if self._unpriced and self.dispatch_ns is None:
            self.dispatch_ns = self._fallback_dispatch()
        with self._lock:
            if self._unpriced and self.dispatch_ns is not None:
                for ev, span, count, far, warm, others in self._unpriced:
                    ev.duration_ns = self._duration(span, count, far, None, warm, others)
                self._unpriced = []
            events, self._events = self._events, []
            reads, self._loop_reads = self._loop_reads, []
            locks, self._lock_windows = self._lock_windows, []
            actions, self._actions = self._actions, []
            raw, self._raw = self._raw, 0
            dropped, self._dropped = self._dropped, 0
            errors, self.errors = self.errors, []
        obs = Observation(self._t_last, now, events=events, raw_events=raw, dropped=dropped, errors=errors,
                          locks=locks, actions=actions, loop_reads=reads)
        self._t_last = now
        return obs

    # ---- frames -----------------------------------------------------------------------------
    def _frames(self, conn: _Conn) -> None:
        buf = conn.buf
        pos = 0
        while len(buf) - pos >= 5:
            (length,) = struct.unpack_from("=I", buf, pos)
            if length < 1 or length > MAX_FRAME:
                self._error(f"channel: a corrupt frame ({length} bytes); connection dropped")
                self._close(conn)
                return
            if len(buf) - pos - 4 < length:
                break
            kind = buf[pos + 4]
            payload = bytes(buf[pos + 5:pos + 4 + length])
            pos += 4 + length
            try:
                self._frame(conn, kind, payload)
            except Exception as e:   # a bad frame is reported, never fatal
                self._error(f"channel: frame {kind}: {type(e).__name__}: {e}")
        del buf[:pos]

    def _frame(self, conn: _Conn, kind: int, payload: bytes) -> None:
        if kind == T_HELLO:
            pid, ppid, _t, forked = _HELLO.unpack_from(payload, 0)
            version, executable = (payload[_HELLO.size:].split(b"\0") + [b"", b""])[:2]
            proc = ProcessInfo(pid, ppid, version.decode(), executable.decode(errors="replace"), bool(forked),
                               procfs.cmdline(pid), time.time())
            parent = self.processes.get(ppid)
            if forked and parent is not None:
                proc.natives = dict(parent.natives)
            with self._lock:
                self.processes[pid] = proc
            conn.proc = proc
            return
        proc = conn.proc
        if proc is None:
            raise ValueError("a frame before the hello")
        if kind == T_SLOTS:
            pos = 0
            while pos + _SLOT.size <= len(payload):
                slot, skind, first, line, dline, lf, lq = _SLOT.unpack_from(payload, pos)
                pos += _SLOT.size
                fname = payload[pos:pos + lf].decode("utf-8", "surrogateescape")
                pos += lf
                qual = payload[pos:pos + lq].decode("utf-8", "surrogateescape")
                pos += lq
                proc.slots[slot] = (skind & 0xFF, first, line, dline, fname, qual)
                proc.far[slot] = (skind >> 8) & 3
        elif kind in (T_WINDOW, T_FINAL):
            self._window(proc, payload)
            if kind == T_FINAL:
                proc.ended = True
        elif kind == T_EXITING:
            if proc.pid == self._main_pid() and self.on_main_exiting is not None:
                self.on_main_exiting()
        elif kind == T_EXTRA:
            obj = marshal.loads(payload)
            if isinstance(obj, tuple) and len(obj) == 4 and obj[0] == "locks":
                self._locks(proc, obj[1], obj[2], obj[3])
            elif isinstance(obj, tuple) and len(obj) == 2 and obj[0] == "actions":   # schedulers/live.py
                with self._lock:
                    self._actions.extend((proc.pid, int(i), a) for i, a in obj[1] if isinstance(a, dict))
            else:
                raise ValueError(f"an unknown EXTRA record ({type(obj).__name__})")

    def _locks(self, proc: ProcessInfo, sites: Any, rows: Any, counters: Any) -> None:
        """One window of the profiled locks of one process (bridges/lockstats.py)."""
        epid = self._entity_pid(proc)
        stats = self.lockstats.get(proc.pid)
        if stats is None:
            stats = self.lockstats[proc.pid] = LockStats(epid)
        tmp = Observation(0, 0)
        stats.apply(tmp, sites, rows)
        stats.note_counters(tmp, counters)
        with self._lock:
            self._events.extend(tmp.events)
            self._lock_windows.extend(tmp.locks)
            self.errors.extend(tmp.errors[:5])

    def covers(self, pid: int, file: str, line: int) -> bool:
        """A sampled lock wait at file:line in process `pid` (0: the main one) is already measured
        exactly by a profiled lock."""
        for stats in self.lockstats.values():
            if stats.pid == pid and stats.covers(file, line) is not None:
                return True
        return False

    def _entity_pid(self, proc: ProcessInfo) -> int:
        return 0 if proc.pid == self._main_pid() else proc.pid

    def _window(self, proc: ProcessInfo, payload: bytes) -> None:
        _t, raw, dropped, errors, n_hits, n_threads = _HEAD.unpack_from(payload, 0)
        pos = _HEAD.size
        hits = [_HIT.unpack_from(payload, pos + i * _HIT.size) for i in range(n_hits)]
        pos += n_hits * _HIT.size
        for i in range(n_threads):
            ident, native = _THREAD.unpack_from(payload, pos + i * _THREAD.size)
            proc.natives[ident] = native
        pos += n_threads * _THREAD.size
        gcs = [_GC.unpack_from(payload, pos + g * _GC.size) for g in range(3)]
        pos += 3 * _GC.size
        steps = []
        if pos + 4 <= len(payload):
            (n_steps,) = struct.unpack_from("=I", payload, pos)
            steps = [_STEP.unpack_from(payload, pos + 4 + i * _STEP.size) for i in range(n_steps)]
            pos += 4 + n_steps * _STEP.size
        if pos + 16 <= len(payload):
            near, far = struct.unpack_from("=dd", payload, pos)
            if near > 0 and far > 0:
                proc.dispatch_ns = (near, far)
        epid = self._entity_pid(proc)
        events: list[Event] = []
        unpriced: list[tuple[Event, int, int, int, int, int]] = []
        reads: list[LoopRead] = []
        # another thread may run a loop while its slot is disarmed, unseen: with more than one
        # thread in the process, no window's count of a loop is taken as complete
        threaded = n_threads > 1
        for slot, count, t_first, span, ident, ident2, read, free_iters, free_ns, flags, others in hits:
            ent, ekind = self._entity(proc, epid, slot)
            if ent is None:
                continue
            if read or free_ns or flags & 7 or (threaded and ekind == EventKind.LOOP_ITER):
                reads.append(LoopRead(ent, read, free_iters, free_ns, bool(flags & 1) or threaded, bool(flags & 2),
                                      bool(flags & 4)))
            if not count:
                continue
            thread = proc.natives.get(ident, ident)
            thread2 = proc.natives.get(ident2, ident2) if ident2 else 0
            dur = 0
            warm = WARM if ekind == EventKind.LOOP_ITER else CALL_WARM
            if span > 0 and count > warm:
                dur = self._duration(span, count, proc.far.get(slot, 0), proc.dispatch_ns, warm, others)
            role = "iter" if ekind == EventKind.LOOP_ITER else "call"
            saturated = bool(flags & 8)   # its last hit disarmed it (a short burst times no gap)
            if thread2 and count > 1:
                ev = Event(ent, role, ekind, thread, t_first, count - 1, dur, saturated)
                events.append(Event(ent, role, ekind, thread2, t_first, 1, 0, saturated))
            else:
                ev = Event(ent, role, ekind, thread, t_first, count, dur, saturated)
            events.append(ev)
            if dur and proc.dispatch_ns is None and self.dispatch_ns is None:   # priced again at poll
                unpriced.append((ev, span, count, proc.far.get(slot, 0), warm, others))
        for g, (count, total, _longest, first) in enumerate(gcs):
            if count:
                key = (epid, g)
                ent = self._gc_entities.get(key)
                if ent is None:
                    ent = self._gc_entities[key] = Entity(EntityKind.GC, "", "gc", g, f"generation {g}", epid)
                events.append(Event(ent, "gc", EventKind.GC, 0, first, count, total))
        for slot, n, n_long, _z, total, longest, long_total, long_t0 in steps:
            ent, _k = self._entity(proc, epid, slot)
            if ent is not None:
                events.extend(coroutine_step_events(ent, n, n_long, total, longest, long_total, long_t0))
        with self._lock:
            self._events.extend(events)
            self._loop_reads.extend(reads)
            self._unpriced.extend(unpriced)
            self._raw += max(0, raw - proc.raw_events) + sum(g[0] for g in gcs)
            self._dropped += max(0, dropped - proc.dropped)
            if errors > proc.callback_errors and proc.callback_errors == 0:
                self.errors.append(f"in-process bridge of pid {proc.pid}: {errors} callback errors")
            proc.raw_events, proc.dropped, proc.callback_errors = raw, dropped, errors

    def _entity(self, proc: ProcessInfo, epid: int, slot: int) -> tuple[Entity | None, EventKind]:
        desc = proc.slots.get(slot)
        if desc is None:
            return None, EventKind.LOOP_ITER
        skind, first, line, dline, fname, qual = desc
        key = (id(proc.slots), slot)
        ent = self._entities.get(key)
        if ent is None:
            if skind == 0:
                header = loop_header_of_jump(fname, qual, line, dline)
                if header:
                    ent = Entity(EntityKind.LOOP, fname, qual, header, "", epid)
            if ent is None:
                ent = Entity(EntityKind.FUNCTION, fname, qual, first, "", epid)
            self._entities[key] = ent
        return ent, _KIND_EVENT.get(skind, EventKind.CALL)

    def _error(self, msg: str) -> None:
        with self._lock:
            if len(self.errors) < 20:
                self.errors.append(msg)


def loop_header_of_jump(path: str, qualname: str, line: int, dest_line: int) -> int:
    """The header of the loop a backward jump closes: a for loop's jump targets its header line
    (dest_line), a while loop's jump sits on its header (the repeated test) and targets the body."""
    name = qualname.rsplit(".", 1)[-1]
    at_dest = codemap.loop_header(path, dest_line, name) if dest_line > 0 else None
    if at_dest == dest_line:
        return at_dest
    at_jump = codemap.loop_header(path, line, name) if line > 0 else None
    if at_jump == line:
        return at_jump
    return at_dest or at_jump or 0


def coroutine_step_events(ent: Entity, steps: int, long_steps: int, total_ns: int, longest_ns: int,
                          long_total_ns: int, long_t0: int) -> list[Event]:
    """The steps of one coroutine in a window (the time each held its thread), as events: the
    steps that blocked the event loop (>= 100 ms) on an `event_loop` entity at the coroutine."""
    if not long_steps:
        return []
    loop = Entity(EntityKind.EVENT_LOOP, ent.file, ent.function, ent.line, "asyncio", ent.pid)
    return [Event(loop, "block", EventKind.LOOP_BLOCK, 0, long_t0, long_steps, long_total_ns)]
