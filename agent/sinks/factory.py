"""Build the sinks a user asked for on the command line.

STUB: owned by the export/report work (issue 6). Signatures are fixed.
"""
from __future__ import annotations

import argparse

from agent.sinks.base import Sink


def add_sink_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --otlp, --stream, --trace, --ledger, -q/--quiet (shared by run and attach)."""
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")


def build_sinks(args: argparse.Namespace, source: str) -> list[Sink]:
    """The sinks to feed during the session, from parsed arguments."""
    return []
