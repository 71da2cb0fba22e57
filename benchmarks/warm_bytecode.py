"""Gyroscope's bytecode, written before a benchmark measures anything.

A wheel install has it; an editable install writes it on first use, unless
PYTHONDONTWRITEBYTECODE is set (it is on our CI machines), and then every measured run would
compile ~40 modules again (~0.1 s of CPU, 17 ms of it before the program starts). .ci/setup
compiles it too; this covers a checkout edited since.
"""
from __future__ import annotations

import compileall

from gyroscope.bridges.owncode import GYROSCOPE_DIRS


def compile_gyroscope() -> None:
    for pkg in GYROSCOPE_DIRS:
        compileall.compile_dir(pkg, quiet=1)
