"""Gyroscope's bytecode, written before a benchmark measures anything.

A wheel install has it; an editable install writes it on first use, unless
PYTHONDONTWRITEBYTECODE is set (it is on our CI machines), and then every measured run would
compile ~40 modules again (~0.1 s of CPU, 17 ms of it before the program starts). .ci/setup
compiles it too; this covers a checkout edited since.
"""
from __future__ import annotations

import compileall
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]


def compile_gyroscope() -> None:
    for pkg in ("agent", "bridges", "cyext", "schedulers"):
        compileall.compile_dir(str(PROJECT / pkg), quiet=1)
