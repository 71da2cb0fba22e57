"""Gap-free, time-resolved stacks from `py-spy record`, in overlapping chunks.

py-spy (0.4.3) writes its output only when record ends (SIGINT, --duration, or the target's
exit), and of its formats only chrometrace keeps time: per thread, a begin ("B") event when a
frame appears in the sampled stack and an end ("E") event when it leaves, with `ts` in
microseconds since record started. Replaying those events gives, per thread, the stack that was
seen over each time span; a span of wall time W stands for W x rate samples. (`raw`/collapsed and
`speedscope` aggregate or drop time; neither has thread states either.)

So this recorder runs `py-spy record -f chrometrace --idle --threads --nonblocking` in chunks
that grow from 0.5 s to `chunk_s` (4 s; doubling: 0.5, 1, 2, 4, 4, ...; under `run`, from 0.25 s,
at least twice the overlap: 0.3, 0.5, 1, ...) and starts chunk k+1 before it stops chunk k with
SIGINT: 30 ms after chunk k+1's py-spy printed that it samples, at most `overlap_s` (0.25 s; 0.15 s
under `run`) after its start. py-spy needs
~10-70 ms from its start to its first sample (attaching, reading the interpreter's symbols),
which used to leave ~70 ms unsampled between chunks. The spans of each chunk are placed on the
monotonic clock (the time the chunk was started + ts; py-spy starts its clock ~1 ms after exec)
and clipped to what the previous chunk did not cover (`covered_until`), so nothing is counted
twice; a chunk whose first sample comes after `covered_until` leaves a gap, which is measured
(`gap_ns`), not hidden.

- Chunk length: each py-spy start costs ~8-9 ms of CPU (reading the target's binaries and
  symbols). Measured on a spinning target over 4 s, py-spy's CPU in % of one core: 3.0% with
  0.5 s chunks, 1.9% with 1 s, 1.4% with 2 s, against 0.87% for one `py-spy record -f raw` and
  1.04% for one `-f chrometrace --idle` (the format itself costs ~0.2%). Short chunks first
  make the first stacks arrive soon (live view, short programs); long ones later keep the cost
  near py-spy's own. Stacks reach the session one chunk late.
- `--idle`: every thread at every sample (waiting ones too); which samples were running is
  decided later from /proc CPU times (bridges/pyspy.py), not from py-spy's guess.
- `--nonblocking`: the target is never paused (its slowdown stays py-spy's own: ~1.03x).
- A young target (`fresh`): py-spy's "not a Python process" / "failed to find python version"
  while the interpreter is still starting is retried quietly every 20 ms.
- When the target exits, py-spy writes what it has and exits by itself: the last chunk is kept
  (a 0.15 s program gets its samples).
- Frames with line 0 (CPython 3.13's shim frames, py-spy's "thread (...)"/"process ..." labels)
  are not program code and are dropped from stacks.
"""
from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from gyroscope.bridges import procfs
from gyroscope.bridges.events import Frame
from gyroscope.bridges.stacks import StackMender

STOP_TIMEOUT_S = 10.0
FIRST_CHUNK_S = 0.5    # chunks grow from this (first stacks after ~0.75 s) to chunk_s, doubling
# `run` (a `fresh` target): a shorter first chunk and overlap, so that a program of 0.45 s or
# more has its first stacks classified (its files read, its library loops named) while it runs,
# not all after its end: the last chunk of a 0.5 s logging run took 10-15 ms to classify after
# the program had ended. py-spy's first sample comes 10-70 ms after its start.
RUN_FIRST_CHUNK_S = 0.25
OVERLAP_S = 0.25       # at most: the next chunk's py-spy says when it samples (OVERLAP_AFTER_BANNER_S)
RUN_OVERLAP_S = 0.15
# The overlap ends this long after the next chunk's py-spy said it samples (its banner), instead
# of after overlap_s: both py-spys sample meanwhile (twice the samples to take and classify).
OVERLAP_AFTER_BANNER_S = 0.03
# Every recorder samples faster while it is young, so that a 0.3 s program (or a short attach)
# gets ~120 samples, not 30 (since stop 23 attach too: an attach 0.2 s after a 0.4 s hot thread
# started got 10-20 samples of it and missed its decision in 4 of 6 runs). py-spy's CPU on a
# spinning target, % of one core (2 s, chrometrace --idle --nonblocking): 1.5% at 100 Hz, 4.5% at
# 250, 8% at 500, 22% at 1000. 10x/5x/2.5x was tried: the 1 s pyperformance runs then paid ~5%
# more (py-spy beside them on 2 cores) and the chunks' parsing at the end. Each sample may also
# cost the target's own CPU, though it is never paused (richards, the program's user time,
# alternating runs of 1.2 s, benchmarks/program_cpu.py: +14 ms at 100 Hz, +28 at 400, +56 at 1000
# in one series; +0 / +11 / +9 and +15 / +12 / -4 in two later ones: not resolved by this
# machine's noise). A program `run` started (`fresh`) is sampled at 4x in its first chunk
# (0-0.3 s) and 2x in its second (0.3-0.8 s; until stop 27 a 1 s program was sampled at 400 Hz
# all along); an attach keeps 4x until 0.75 s, 2x until 1.75 s: it lands at a random moment of a
# long program, and its decisions need those samples (shared workloads).
RAMP_X = ((0.15, 4.0), (0.55, 2.0))   # (until s after the recorder started, factor): run
ATTACH_RAMP_X = ((0.75, 4.0), (1.75, 2.0))
# Every chunk's rate is the nominal one times a factor of this cycle: a program whose work
# repeats with a period commensurate with a fixed sampling period (two functions alternating
# every ~2.8 ms, sampled every 10 ms) would be seen at the same phase every time (aliasing: one
# of the two got 0 samples of 30). Changing the period per chunk moves the phase.
JITTER_X = (1.0, 0.93, 1.07, 0.97, 1.04, 0.95, 1.02, 1.06)
_THREAD = re.compile(r"^thread \((\w+)\)(?::\s?(.*))?$")


@dataclass(slots=True)
class Span:
    """One thread seen with one stack (innermost first) from t0_ns to t1_ns (monotonic clock)."""
    pid: int
    tid: int
    thread_name: str
    frames: tuple[Frame, ...]
    t0_ns: int
    t1_ns: int


def _tid(text: str) -> int:
    try:
        return int(text, 16) if text.lower().startswith("0x") else int(text)
    except ValueError:
        return 0


def _thread_label(name: str) -> tuple[int, str] | None:
    """(native thread id, name) of py-spy's "thread (N): name" label frame; None for others."""
    m = _THREAD.match(name)
    return (_tid(m.group(1)), m.group(2) or "") if m else None


def parse_chrometrace(events: list[dict], origin_ns: int) -> list[Span]:
    """py-spy's chrometrace events -> Spans, in the order of their start per thread. `origin_ns` is
    the monotonic time of ts = 0 (when the chunk was started)."""
    open_frames: dict[tuple[int, int], list[tuple[Frame | None, tuple[int, str] | None]]] = {}
    last_ts: dict[tuple[int, int], int] = {}
    spans: list[Span] = []
    # py-spy's chrometrace `tid` is its own small index; the native id and the name are in the
    # "thread (N): name" label frame, which a stack can lack (e.g. a thread's first samples before
    # its name is set): take the best label seen for that index anywhere in the chunk
    labels: dict[tuple[int, int], tuple[int, str]] = {}
    for ev in events:
        if ev.get("ph") == "B" and not (ev.get("args") or {}).get("filename"):
            got = _thread_label(str(ev.get("name") or ""))
            if got:
                key = (int(ev.get("pid") or 0), int(ev.get("tid") or 0))
                if key not in labels or (got[1] and not labels[key][1]):
                    labels[key] = got

    def parsed(ev: dict) -> tuple[Frame | None, tuple[int, str] | None]:
        """(the frame, or None for a label or a shim frame; the thread label (native id, name))."""
        args = ev.get("args") or {}
        line = int(args.get("line") or 0)
        label = str(ev.get("name") or "")
        if line:
            return Frame(str(args.get("filename") or ""), label, line), None
        if not args.get("filename"):
            return None, _thread_label(label)     # "thread (...)" / "process ..." labels
        return None, None                         # shim frames (CPython 3.13 entry frames)

    def close(key: tuple[int, int], ts: int) -> None:
        stack = open_frames.get(key)
        t0 = last_ts.get(key)
        if stack and t0 is not None and ts > t0:
            tid, name, frames = 0, "", []
            for frame, label in stack:            # outermost first
                if frame is not None:
                    frames.append(frame)
                elif label is not None:
                    tid, name = label
            frames.reverse()
            best_tid, best_name = labels.get(key, (0, ""))
            tid, name = tid or best_tid, name or best_name
            if not tid:
                return                            # a thread py-spy could not name: not placeable
            spans.append(Span(int(key[0]), tid, name, tuple(frames),
                              origin_ns + t0 * 1000, origin_ns + ts * 1000))

    for ev in events:
        ph = ev.get("ph")
        if ph not in ("B", "E"):
            continue
        key = (int(ev.get("pid") or 0), int(ev.get("tid") or 0))
        ts = int(ev.get("ts") or 0)
        if last_ts.get(key) != ts:
            close(key, ts)
            last_ts[key] = ts
        stack = open_frames.setdefault(key, [])
        if ph == "B":
            stack.append(parsed(ev))   # once per frame, not once per sample it stays open in
        elif stack:
            stack.pop()
    return spans


class ChunkedRecorder:
    """Overlapping `py-spy record -f chrometrace` chunks on one target; `on_spans(spans, t_end_ns)`
    gets the new spans of each chunk (clipped: no time twice) from the recorder's thread;
    `on_error(message)` gets failures. `failure` is set when py-spy stopped working."""

    def __init__(self, py_spy: str, pid: int, rate_hz: float,
                 on_spans: Callable[[list[Span], int], None], on_error: Callable[[str], None],
                 tmpdir: str, chunk_s: float = 4.0, overlap_s: float | None = None, subprocesses: bool = False,
                 fresh: bool = False, explain: Callable[[int, str], Exception] | None = None,
                 on_tick: Callable[[], None] | None = None, tick_s: float = 0.1) -> None:
        self.py_spy, self.pid, self.rate_hz = py_spy, pid, rate_hz
        self.chunk_s = chunk_s
        self.overlap_s = overlap_s if overlap_s is not None else (RUN_OVERLAP_S if fresh else OVERLAP_S)
        self.first_chunk_s = min(chunk_s, RUN_FIRST_CHUNK_S if fresh else FIRST_CHUNK_S)
        self.subprocesses, self.fresh = subprocesses, fresh
        self.on_spans, self.on_error = on_spans, on_error
        self.tmpdir = tmpdir
        self.explain = explain
        self.on_tick, self.tick_s = on_tick, tick_s
        self._next_tick = 0.0
        self.interval_ns = int(1e9 / rate_hz)
        self.covered_until = 0        # monotonic ns up to which samples were delivered
        self.gap_ns = 0               # time between chunks that no chunk sampled
        self.chunks = 0
        self.sampling_errors = 0      # samples py-spy could not read (its "Errors: N")
        self.first_sample_ns = 0      # monotonic time of the first sample (0: none yet)
        self.started_ns = 0
        self.failure: str | None = None
        self.finished = threading.Event()
        self.spawned = threading.Event()   # the first py-spy was started (or could not be)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._n = 0
        self._retries = 0
        self._live: list[tuple[subprocess.Popen, str, int]] = []
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._said: dict[int, bytes] = {}   # py-spy's stdout read early (its banner), by pid
        self.overlaps = 0                   # chunk boundaries, and the time two py-spys ran at once
        self.overlap_ns = 0
        self.mender = StackMender()   # generator stacks a --nonblocking read cut short

    def start(self) -> None:
        self.started_ns = time.monotonic_ns()
        self._thread = threading.Thread(target=self._run, name="gyroscope-pyspy-record", daemon=True)
        self._thread.start()

    def stop(self, discard: bool = False) -> None:
        """Stop sampling; the chunks running now are ended and delivered before it returns."""
        if discard:
            self.on_spans = lambda spans, t_end_ns: None
        self.finish_soon()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=STOP_TIMEOUT_S + 5)

    def finish_soon(self) -> None:
        """Stop sampling without waiting: the chunk running now is ended (SIGINT) and delivered
        by the recorder's thread; stop() then waits for that."""
        self._stop.set()
        try:
            os.write(self._wake_w, b"x")   # wakes _wait at once
        except OSError:
            pass

    # ---- one chunk -----------------------------------------------------------------------
    def chunk_rate_hz(self, n: int, age_s: float) -> float:
        """The sampling rate of chunk n (1-based) started age_s after the recorder: RAMP_X (an
        attach's: ATTACH_RAMP_X) while the recorder is young, then the nominal rate moved by JITTER_X (on average the nominal
        rate)."""
        for until, factor in (RAMP_X if self.fresh else ATTACH_RAMP_X):
            if age_s < until:
                return self.rate_hz * factor
        return self.rate_hz * JITTER_X[(n - 1) % len(JITTER_X)]

    def _cmd(self, out: str) -> list[str]:
        rate = self.chunk_rate_hz(self._n, (time.monotonic_ns() - self.started_ns) / 1e9)
        cmd = [self.py_spy, "record", "-p", str(self.pid), "-r", str(max(1, int(round(rate)))),
               "-f", "chrometrace", "-t", "--idle", "--nonblocking", "--full-filenames", "-o", out]
        if self.subprocesses:
            cmd.append("--subprocesses")
        return cmd

    def _spawn(self) -> tuple[subprocess.Popen, str, int] | None:
        self._n += 1
        out = os.path.join(self.tmpdir, f"chunk{self._n}.json")
        t0 = time.monotonic_ns()
        try:
            # own session: a Ctrl-C in the terminal is for gyroscope, not for py-spy
            proc = subprocess.Popen(self._cmd(out), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, start_new_session=True,
                                    preexec_fn=_unblock_signals if _blocked_signals() else None)
        except OSError as e:
            self.failure = f"cannot run py-spy: {e.strerror or e}"
            self.on_error(f"py-spy record: {e.strerror or e}")
            return None
        finally:
            self.spawned.set()
        return proc, out, t0

    def _finish(self, chunk: tuple[subprocess.Popen, str, int]) -> tuple[bool, str]:
        """End one chunk (SIGINT if it still runs), deliver its spans; (delivered, py-spy's error)."""
        proc, out, t0 = chunk
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGINT)
            except OSError:
                pass
        try:
            said, err = proc.communicate(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            said, err = proc.communicate()
        said = self._said.pop(proc.pid, b"") + (said or b"")
        m = re.search(rb"Samples: (\d+) Errors: (\d+)", said or b"")
        if m:
            self.sampling_errors += int(m.group(2))
        events = None
        try:
            with open(out, "rb") as f:
                events = json.loads(f.read() or b"[]")
        except (OSError, ValueError):
            events = None
        finally:
            try:
                os.unlink(out)
            except OSError:
                pass
        if not isinstance(events, list):
            return False, (err or b"").decode(errors="replace") + (said or b"").decode(errors="replace")
        self.chunks += 1
        self._deliver(parse_chrometrace(events, t0))
        return True, ""

    def _deliver(self, spans: list[Span]) -> None:
        if not spans:
            return
        first = min(s.t0_ns for s in spans)
        end = max(s.t1_ns for s in spans)
        if not self.first_sample_ns:
            self.first_sample_ns = first
        lo = self.covered_until
        if lo and first > lo + self.interval_ns * 3 // 2:
            self.gap_ns += first - lo
        kept = []
        for s in spans:
            if s.t1_ns <= lo:
                continue
            if s.t0_ns < lo:
                s.t0_ns = lo
            s.frames = self.mender.mend(s.tid, s.frames)
            kept.append(s)
        self.covered_until = max(lo, end)
        if kept:
            self.on_spans(kept, self.covered_until)

    # ---- the loop ------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._loop()
        except Exception as e:  # never die silently
            self.failure = f"{type(e).__name__}: {e}"
            self.on_error(f"py-spy record: {self.failure}")
        finally:
            for chunk in self._live:
                self._finish(chunk)
            self._live = []
            self.finished.set()

    def __del__(self) -> None:
        for fd in (getattr(self, "_wake_r", -1), getattr(self, "_wake_w", -1)):
            try:
                os.close(fd)
            except OSError:
                pass

    def _loop(self) -> None:
        failures = 0
        current = self._spawn()
        if current is None:
            return
        self._live = [current]
        while True:
            proc, _, t0 = current
            length = min(self.chunk_s, self.first_chunk_s * 2 ** max(0, self._n - 1))
            deadline = t0 + int(max(length, 2 * self.overlap_s) * 1e9)
            ended = self._wait(proc, deadline)
            if ended or self._stop.is_set() or not procfs.is_alive(self.pid):
                # the target exited (py-spy ended by itself), or we stop: deliver what is there
                self._live = []
                ok, err = self._finish(current)
                if self._stop.is_set() or not procfs.is_alive(self.pid):
                    return
                if ok:
                    failures = 0
                else:
                    failures += 1
                    if self._young() and self._not_python_yet(err):
                        # quietly again, backing off (20 ms, doubling to 0.5 s): a program that
                        # is not Python at all must not cost a py-spy start every 20 ms
                        failures = 0
                        self._retries += 1
                        self._stop.wait(min(0.5, 0.02 * 2 ** min(self._retries - 1, 5)))
                    else:
                        msg = self._message(err)
                        if _exits_soon(self.pid):
                            return
                        self.on_error(f"py-spy record: {msg}")
                        if failures >= 3:
                            self.failure = msg
                            return
                        time.sleep(0.05)
                nxt = self._spawn()
                if nxt is None:
                    return
                current = nxt
                self._live = [current]
                continue
            # overlap: the next chunk starts before this one stops
            nxt = self._spawn()
            if nxt is None:
                return
            self._live = [current, nxt]
            end = time.monotonic() + self.overlap_s
            sampling = False
            while not self._stop.is_set() and time.monotonic() < end:
                self._tick()
                if sampling:
                    self._stop.wait(min(self.tick_s, max(0.0, end - time.monotonic())))
                elif self._says_sampling(nxt[0], min(self.tick_s, end - time.monotonic())):
                    sampling = True
                    end = min(end, time.monotonic() + OVERLAP_AFTER_BANNER_S)
            self._live = [nxt]
            self.overlaps += 1
            self.overlap_ns += time.monotonic_ns() - nxt[2]
            self._finish(current)
            current = nxt

    def _wait(self, proc: subprocess.Popen, deadline_ns: int) -> bool:
        """Wait until the deadline, a stop, or py-spy's own end (True). py-spy's end is seen at
        once through a pidfd (Popen.wait with a timeout polls, up to 50 ms late: the program's
        last samples then kept `gyroscope run` waiting after the program had ended)."""
        pidfd = _pidfd(proc.pid)
        try:
            while not self._stop.is_set():
                self._tick()
                left = (deadline_ns - time.monotonic_ns()) / 1e9
                if left <= 0:
                    return False
                timeout = min(left, self.tick_s, max(0.01, self._next_tick - time.monotonic()))
                if pidfd is None:
                    try:
                        proc.wait(timeout=timeout)
                        return True
                    except subprocess.TimeoutExpired:
                        continue
                if self._readable(pidfd, timeout):
                    proc.wait()
                    return True
            return False
        finally:
            if pidfd is not None:
                os.close(pidfd)

    def _readable(self, fd: int, timeout_s: float) -> bool:
        """Whether `fd` is readable within timeout_s; a stop (the wake pipe) ends the wait early."""
        poller = select.poll()   # not select(): descriptors past 1024 (many processes watched)
        poller.register(fd, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        return any(f == fd for f, _ in poller.poll(max(0.0, timeout_s) * 1000))

    def _says_sampling(self, proc: subprocess.Popen, timeout_s: float) -> bool:
        """Whether py-spy printed its banner ("Sampling process ..."), waiting up to timeout_s for
        its output (kept for _finish). py-spy prints it as it takes its first sample (0-2 ms
        before it, 9-14 ms after its start here)."""
        if proc.stdout is None:
            return False
        fd = proc.stdout.fileno()
        said = self._said.get(proc.pid, b"")
        if b"Sampling process" not in said and self._readable(fd, timeout_s):
            try:
                got = os.read(fd, 4096)
            except OSError:
                got = b""
            if not got:   # py-spy ended: its chunk is finished in the main loop
                self._stop.wait(max(0.0, timeout_s))
                return False
            said += got
            self._said[proc.pid] = said
        return b"Sampling process" in said

    def _tick(self) -> None:
        now = time.monotonic()
        if self.on_tick is not None and now >= self._next_tick:
            # 20 readings/s during the first second (short programs), then one per tick_s
            young = now - self.started_ns / 1e9 < 1.0
            self._next_tick = now + (min(self.tick_s, 0.05) if young else self.tick_s)
            self.on_tick()

    def _young(self) -> bool:
        return self.fresh and not self.chunks_with_samples() and procfs.process_age_s(self.pid) < 10.0

    def chunks_with_samples(self) -> bool:
        return bool(self.first_sample_ns)

    @staticmethod
    def _not_python_yet(err: str) -> bool:
        low = err.lower()
        return any(s in low for s in ("failed to find python version", "failed to find a python interpreter",
                                      "doesn't look like a python", "failed to get python version",
                                      "failed to find python", "failed to copy pyinterpreterstate",
                                      "not a python", "interpreter"))

    def _message(self, err: str) -> str:
        if self.explain is not None:
            e = self.explain(self.pid, err)
            return str(getattr(e, "message", e))
        first = next((ln.strip() for ln in err.splitlines() if ln.strip()), "no output")
        return first


def _pidfd(pid: int) -> int | None:
    """A descriptor that turns readable when process `pid` ends (Linux >= 5.3); None elsewhere."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _exits_soon(pid: int, within_s: float = 0.3) -> bool:
    deadline = time.monotonic() + within_s
    while procfs.is_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def _blocked_signals() -> set:
    """Signals this thread blocks (`gyroscope run` blocks SIGINT/SIGTERM/... to forward them)."""
    try:
        return signal.pthread_sigmask(signal.SIG_BLOCK, [])
    except (OSError, ValueError):
        return set()


def _unblock_signals() -> None:
    """In the forked py-spy, before exec: a blocked mask is inherited across exec, and py-spy must
    get the SIGINT that ends its chunk."""
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
