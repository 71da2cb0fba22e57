"""The memory of a process tree, as the benchmarks quote it (attach_overhead.py, startup.py).

RSS is the sum of each process's Rss; PSS the sum of its Pss (a page two processes share split
between them: two overlapping py-spy share ~4 MiB of their binary's text). A child that shares
its parent's address space (CLONE_VM: posix_spawn and subprocess's vfork, between the spawn and
its exec) is not counted again: it is the same memory, and summing it would add a whole
watcher's RSS for the ~1 ms before each py-spy's exec.
"""
from __future__ import annotations

import ctypes
import platform

from gyroscope.bridges.procfs import children, cmdline

_KCMP = {"x86_64": 312, "aarch64": 272}.get(platform.machine())
_KCMP_VM = 1
_libc = ctypes.CDLL(None, use_errno=True)


def same_vm(a: int, b: int) -> bool:
    """Do processes a and b share one address space (kcmp KCMP_VM)? False where unknown."""
    if _KCMP is None:
        return False
    return _libc.syscall(_KCMP, a, b, _KCMP_VM, 0, 0) == 0


def tree_memory_kib(root: int, skip_argv1_suffix: str = "") -> tuple[int, int]:
    """(RSS, PSS) of `root` and its descendants, KiB. A process whose argv[1] ends with
    skip_argv1_suffix (the watched program, when it is the watcher's child) is left out."""
    rss = pss = 0
    counted: list[int] = []
    todo, seen = [root], set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        todo += children(pid)
        if skip_argv1_suffix and pid != root:
            argv = cmdline(pid)
            if len(argv) >= 2 and argv[1].endswith(skip_argv1_suffix):
                continue
        if any(same_vm(pid, c) for c in counted):
            continue
        try:
            with open(f"/proc/{pid}/smaps_rollup", encoding="ascii", errors="replace") as f:
                for line in f:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1])
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1])
        except OSError:
            continue
        counted.append(pid)
    return rss, pss
