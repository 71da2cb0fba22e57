"""Shared by every layer's tests (tests/kernel, bridges, agent, schedulers, e2e).

PROJECT   the repository; SHARED the shared folder beside it (../shared, or $GYROSCOPE_SHARED);
ENGINES   the kernel engines every kernel test runs (Cython and its pure-Python twin);
GYRO      the gyroscope command of this venv, and `gyroscope(*args)` runs it as a user would.
Tests that start py-spy or a real program are marked `slow`.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GYROSCOPE_SHARED", PROJECT.parent / "shared"))
GYRO = str(Path(sys.executable).with_name("gyroscope"))

def _engines() -> list:
    import pytest
    from gyroscope.cyext import CellPool
    from gyroscope.cyext.twin import TwinCellPool
    return [pytest.param(CellPool, id="cython"), pytest.param(TwinCellPool, id="twin")]


ENGINES = _engines()


def gyroscope(*args: str, cwd: str | os.PathLike[str] | None = None, timeout: float = 120,
              **kw: object) -> subprocess.CompletedProcess:
    """Run `gyroscope ARGS` as a user would (text output captured)."""
    return subprocess.run([GYRO, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, **kw)


def one_line_error(p: subprocess.CompletedProcess, code: int, *words: str) -> str:
    """A user-facing failure: exit `code`, one `gyroscope...` line on stderr containing `words`,
    no traceback. Returns the line."""
    assert p.returncode == code, (p.returncode, p.stderr)
    assert "Traceback" not in p.stderr, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gyroscope"), p.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


class ListSource:
    """A Source (bridges/events.py) that hands the session prepared Observations, one per poll."""

    def __init__(self, batches: list, name: str = "run") -> None:
        self.name = name
        self.batches = list(batches)

    def start(self) -> None:
        pass

    def poll(self):
        from gyroscope.bridges.events import Observation
        return self.batches.pop(0) if self.batches else Observation(0, 1)

    def stop(self):
        return self.poll()
