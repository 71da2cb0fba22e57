"""Argument types shared by the commands: one validator for every number option."""
from __future__ import annotations

import math


def finite_positive(text: str) -> float | None:
    """The rule of every float option (--window, --timeout, --duration, --rate, ...): a finite
    number > 0, else None. nan slips through `v <= 0` and inf makes a window that never ends or
    a timeout that never fires, so both are refused here, in one place. (No argparse here:
    `gyroscope run` reads its options with this before argparse is imported, agent/launch.py.)"""
    try:
        v = float(text)
    except ValueError:
        return None
    return v if math.isfinite(v) and v > 0 else None


def positive_float(text: str) -> float:
    """argparse type for every float option: finite_positive, or an error that says why not."""
    v = finite_positive(text)
    if v is not None:
        return v
    import argparse
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
