"""Kernel ingestion throughput: Cython engine vs the pure-Python twin, side by side.

    python benchmarks/kernel_throughput.py            # human table
    python benchmarks/kernel_throughput.py --json     # one JSON object on stdout

Batch: N random 4-byte words over C random cells (default 2,000,000 over 4,096), one thread.
"cython" ingests the batch in arrival order, "cython_sorted" the same words stably sorted by
cell (the order a bridge can hand it); both give the same final state. The twin is measured on
a smaller batch (--python-words) and its rate is reported as measured (words/s does not
depend on the batch size for it); the JSON says so.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gyroscope.agent.result import write_text_atomic  # noqa: E402
from gyroscope.cyext import CellPool  # noqa: E402
from gyroscope.cyext.twin import TwinCellPool  # noqa: E402


def _rate(engine, ids: np.ndarray, words: np.ndarray, cells: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        pool = engine(cells)
        pool.allocate_many(cells)
        t0 = time.perf_counter()
        pool.ingest(ids, words)
        best = min(best, time.perf_counter() - t0)
    return len(ids) / best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--words", type=int, default=2_000_000)
    ap.add_argument("--cells", type=int, default=4096)
    ap.add_argument("--python-words", type=int, default=50_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=12345)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--out", help="also write the JSON object to this file")
    args = ap.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    ids = rng.integers(0, args.cells, args.words).astype(np.uint32)
    words = rng.integers(0, 256, (args.words, 4), dtype=np.uint8)
    order = np.argsort(ids, kind="stable")
    ids_sorted, words_sorted = np.ascontiguousarray(ids[order]), np.ascontiguousarray(words[order])

    cy = _rate(CellPool, ids, words, args.cells, args.repeats)
    cy_sorted = _rate(CellPool, ids_sorted, words_sorted, args.cells, args.repeats)
    pn = min(args.python_words, args.words)
    py = _rate(TwinCellPool, ids[:pn], words[:pn], args.cells, 1)

    # same final state either way (a benchmark that computed something else would be worthless)
    a, b = CellPool(args.cells), CellPool(args.cells)
    a.allocate_many(args.cells)
    b.allocate_many(args.cells)
    a.ingest(ids, words)
    b.ingest(ids_sorted, words_sorted)
    same = all(np.array_equal(x, y) for x, y in zip(a.export_state().values(), b.export_state().values()))

    result = {
        "benchmark": "kernel_throughput",
        "words": args.words,
        "cells": args.cells,
        "threads": 1,
        "repeats": args.repeats,
        "words_per_s": {"cython": round(cy), "cython_sorted": round(cy_sorted), "python": round(py)},
        "bytes_per_s": {"cython": round(4 * cy), "cython_sorted": round(4 * cy_sorted)},
        "ratio_cython_over_python": round(cy / py, 1),
        "python_words_measured": pn,
        "python_note": f"twin measured on the first {pn} words (rate, not scaled time)",
        "bytes_per_cell": CellPool.bytes_per_cell,
        "sorted_state_equals_unsorted": same,
        "cpu_count": os.cpu_count(),
    }
    text = json.dumps(result)
    if args.out:
        write_text_atomic(args.out, text + "\n")
    if args.json:
        print(text)
    else:
        print(f"kernel ingestion: {args.words:,} words over {args.cells:,} cells, best of {args.repeats}")
        print(f"{'engine':<16}{'words/s':>16}{'x python':>12}")
        for name, v in (("cython", cy), ("cython_sorted", cy_sorted), ("python (twin)", py)):
            print(f"{name:<16}{v:>16,.0f}{v / py:>12.1f}")
        print(f"bytes per cell (in memory): {CellPool.bytes_per_cell}; sorted == unsorted state: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
