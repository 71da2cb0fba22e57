"""Argument types shared by the commands: one validator for every number option."""
from __future__ import annotations

import argparse
import math


def positive_float(text: str) -> float:
    """argparse type for every float option (--window, --timeout, --duration, --rate, ...): a
    finite number > 0. nan slips through `v <= 0` and inf makes a window that never ends or a
    timeout that never fires, so both are refused here, in one place."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return v
