"""What Linux's /proc says about a watched process and its threads (man 5 proc).

Used by the py-spy source (bridges/pyspy.py) for what py-spy's record output does not carry:
per-thread CPU time (exact nanoseconds from /proc/PID/task/TID/schedstat when the kernel has
CONFIG_SCHED_INFO, else utime+stime in clock ticks of 10 ms) and time spent runnable but
waiting for a CPU (schedstat's run delay: on a busy machine a spinning thread gets only part of a
core, and that is not a wait of the program), the kernel's state letter, which
threads exist, the process's age, command line and children, and why ptrace is refused.

Reading one thread's schedstat + stat costs ~15 us here; a poll of a 10-thread process every
50 ms is ~0.3% of one core.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

_TICK_NS = 1_000_000_000 // (os.sysconf("SC_CLK_TCK") or 100)
# gyroscope's own process (and the py-spy it starts, which inherits it) runs this much nicer than
# the program: where they compete for a core (two cores: the program, py-spy, gyroscope's
# imports and its chunk parsing), the program wins. Measured on pyperformance workers of ~0.4 s
# (benchmarks/run_phases.py): the program's own run -6..-10 ms, the whole command -8..-14 ms.
WATCHER_NICE = 10


def yield_to_program() -> None:
    """Lower this process's CPU priority by WATCHER_NICE (capped by the kernel at 19). Call it
    after the program's process is started, so that the program keeps its own."""
    try:
        os.nice(WATCHER_NICE)
    except OSError:
        pass


def _stat_fields(path: str) -> list[bytes]:
    """The fields of a /proc/.../stat file after the command name (fields[0] is the state letter,
    fields[11:13] utime and stime, fields[19] the start time, in clock ticks)."""
    with open(path, "rb") as f:
        return f.read().rsplit(b")", 1)[1].split()


def process_state(pid: int) -> str:
    """The kernel's state letter for `pid` ("R", "S", "Z", ...), "" when there is no such process."""
    try:
        return _stat_fields(f"/proc/{pid}/stat")[0][:1].decode()
    except (OSError, ValueError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return ""
        except PermissionError:
            return "?"
        return "?"


def parent_pid(pid: int) -> int:
    """The parent of `pid` (its PPid), 0 when there is no such process."""
    try:
        return int(_stat_fields(f"/proc/{pid}/stat")[1])
    except (OSError, ValueError, IndexError):
        return 0


def is_alive(pid: int) -> bool:
    return process_state(pid) not in ("", "Z", "X")


def process_age_s(pid: int) -> float:
    """Seconds since `pid` started (a large number when unknown)."""
    try:
        start_ticks = int(_stat_fields(f"/proc/{pid}/stat")[19])
        with open("/proc/uptime", "rb") as f:
            uptime = float(f.read().split()[0])
        return uptime - start_ticks * _TICK_NS / 1e9
    except (OSError, ValueError, IndexError):
        return 1e9


def process_cpu_ns(pid: int) -> int | None:
    """CPU time of the whole process, ended threads included (utime + stime of /proc/PID/stat, in
    clock ticks of 10 ms); None when it is gone."""
    try:
        fields = _stat_fields(f"/proc/{pid}/stat")
        if fields[0][:1] in (b"Z", b"X"):
            return None
        return (int(fields[11]) + int(fields[12])) * _TICK_NS
    except (OSError, ValueError, IndexError):
        return None


def _children_cpu_ns() -> int:
    import resource
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return int((r.ru_utime + r.ru_stime) * 1e9)


# what this process's children had used before gyroscope's: a shell may exec gyroscope in the
# process that ran the commands before it (`bash -c 'make && gyroscope run app.py'`), and their
# CPU is in RUSAGE_CHILDREN too (a fresh clone's set-up: 38 s of "agent cpu" for a 1.6 s run).
# Read when this module is first imported, before gyroscope has reaped any child of its own.
_CHILDREN_CPU_BEFORE_NS = _children_cpu_ns()


def reaped_children_cpu_ns() -> int:
    """CPU time of the processes this one started and reaped (getrusage RUSAGE_CHILDREN, less what
    the process's children had used before gyroscope ran in it): the samplers' py-spy processes
    that ended, and under `gyroscope run` the program once reaped."""
    return _children_cpu_ns() - _CHILDREN_CPU_BEFORE_NS


def thread_ids(pid: int) -> list[int]:
    """The native ids of `pid`'s threads ([] when it is gone)."""
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except (OSError, ValueError):
        return []


@dataclass(slots=True)
class ThreadStat:
    tid: int
    cpu_ns: int      # CPU time consumed so far (user + system)
    runq_ns: int     # time spent runnable but waiting for a CPU (schedstat; 0 when unknown)
    state: str       # the kernel's state letter: R running/runnable, S sleeping, D disk, ...
    comm: str        # the kernel's name of the thread (15 characters at most)


def thread_stat(pid: int, tid: int) -> ThreadStat | None:
    """CPU time and state of one thread; None when it is gone."""
    base = f"/proc/{pid}/task/{tid}/"
    try:
        with open(base + "stat", "rb") as f:
            raw = f.read()
        head, _, tail = raw.rpartition(b")")
        fields = tail.split()
        comm = head.partition(b"(")[2].decode(errors="replace")
        if fields[0][:1] in (b"Z", b"X"):
            return None       # exited (a zombie's counters are not comparable: schedstat is gone)
        cpu = (int(fields[11]) + int(fields[12])) * _TICK_NS
        runq = 0
        try:
            with open(base + "schedstat", "rb") as f:
                sched = f.read().split()
            if int(sched[0]) > 0:
                cpu, runq = int(sched[0]), int(sched[1])
        except (OSError, ValueError, IndexError):
            pass
        return ThreadStat(tid, cpu, runq, fields[0][:1].decode(), comm)
    except (OSError, ValueError, IndexError):
        return None


def threads(pid: int) -> dict[int, ThreadStat]:
    """Every thread of `pid` with its CPU time and state ({} when the process is gone)."""
    out = {}
    for tid in thread_ids(pid):
        st = thread_stat(pid, tid)
        if st is not None:
            out[tid] = st
    return out


def children(pid: int) -> list[int]:
    """Direct children of `pid` (a wrapper such as a pyenv shim or `bash -c` runs Python as one)."""
    kids: list[int] = []
    for tid in thread_ids(pid):
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                kids += [int(k) for k in f.read().split()]
        except (OSError, ValueError):
            pass
    return kids


def exe(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""


def comm(pid: int) -> str:
    """The kernel's name of the process (/proc/PID/comm), "" when it cannot be read."""
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def looks_like_python(pid: int) -> bool:
    """The executable or a mapped library is a Python interpreter (python3.12, libpython3.13.so)."""
    if "python" in os.path.basename(exe(pid)).lower():
        return True
    try:
        with open(f"/proc/{pid}/maps", "rb") as f:
            return re.search(rb"libpython\d", f.read()) is not None
    except OSError:
        return False


def matching_pids(pattern: str, exclude: set[int] | None = None) -> list[int]:
    """Every live Python process whose command line (arguments joined by spaces) matches the
    regular expression `pattern`, oldest first; `exclude` (e.g. gyroscope itself) is skipped."""
    rx = re.compile(pattern)
    skip = set(exclude or ()) | {os.getpid()}
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        if pid in skip:
            continue
        cmd = cmdline(pid)
        if not cmd or not rx.search(" ".join(cmd)):
            continue
        if any(os.path.basename(a) == "py-spy" for a in cmd[:1]):
            continue
        if is_alive(pid) and looks_like_python(pid):
            found.append(pid)
    return sorted(found)


def _uids(pid: int) -> tuple[int, int] | None:
    """(real, effective) user id of `pid`."""
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("Uid:"):
                    parts = line.split()
                    return int(parts[1]), int(parts[2])
    except (OSError, ValueError, IndexError):
        pass
    return None


def has_cap_sys_ptrace() -> bool:
    """Whether this process (and so the py-spy it starts) holds CAP_SYS_PTRACE (bit 19)."""
    try:
        with open("/proc/self/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> 19 & 1)
    except (OSError, ValueError, IndexError):
        pass
    return os.geteuid() == 0


def ptrace_scope() -> int | None:
    """kernel.yama.ptrace_scope (None when Yama is not there)."""
    try:
        with open("/proc/sys/kernel/yama/ptrace_scope", encoding="ascii") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def ptrace_denied_reason(pid: int) -> str:
    """Why attaching to `pid` is refused, and what to run: one sentence (a different user, Yama's
    ptrace_scope, or a missing CAP_SYS_PTRACE, the usual case in containers)."""
    cap = has_cap_sys_ptrace()
    ids = _uids(pid)
    me = os.geteuid()
    if ids is not None and me != 0 and not cap and me not in ids:
        return (f"process {pid} belongs to user {ids[1]} and gyroscope runs as user {me}: run it as that "
                "user, or as root (sudo)")
    scope = ptrace_scope()
    if scope is not None and scope >= 3:
        return ("kernel.yama.ptrace_scope is 3 (ptrace disabled until reboot): no process can be attached; "
                "reboot with a lower value")
    if scope == 2 and not cap:
        return ("kernel.yama.ptrace_scope is 2 (only CAP_SYS_PTRACE may attach): run as root, or "
                "`sudo sysctl kernel.yama.ptrace_scope=1`")
    if scope == 1 and not cap:
        return ("kernel.yama.ptrace_scope is 1 (only a parent may attach to its child): "
                "`sudo sysctl kernel.yama.ptrace_scope=0`, or run as root, or use `gyroscope run`")
    if not cap:
        return ("gyroscope lacks CAP_SYS_PTRACE (in a container: `docker run --cap-add SYS_PTRACE`, or "
                "`securityContext.capabilities.add: [SYS_PTRACE]` in Kubernetes)")
    return ("ptrace is refused although gyroscope holds CAP_SYS_PTRACE (a seccomp or LSM policy, e.g. "
            "Docker's default seccomp profile before 19.03: add `--security-opt seccomp=unconfined` or "
            "`--cap-add SYS_PTRACE`)")
