"""Co-resonant decode batch grouping (spec 002 §20.2) as a plain function.

Cells are (id, resonance_key, chi6). Chirality distance is the Hamming distance of the chi6
values (spec §14.2 chirality_distance_between_cells). The algorithm is the spec's, verbatim:
sort by (resonance_key, chi6); a cell joins the open batch if it shares the key of the batch's
FIRST cell or is within chirality distance 2 of it; a batch is closed when full.
"""
from __future__ import annotations

from collections.abc import Hashable, Sequence

MAX_CHIRALITY_DISTANCE = 2


def chirality_distance(a: int, b: int) -> int:
    """Hamming distance between two chi6 values (6-bit chirality words)."""
    return bin((int(a) ^ int(b)) & 0x3F).count("1")


def co_resonant(key_a: Hashable, chi_a: int | None, key_b: Hashable, chi_b: int | None) -> bool:
    """Spec §20.2 membership test: same resonance key, or chirality distance <= 2."""
    if key_a is not None and key_a == key_b:
        return True
    return chi_a is not None and chi_b is not None and chirality_distance(chi_a, chi_b) <= MAX_CHIRALITY_DISTANCE


def group_batches(cells: Sequence[tuple[Hashable, int, int]], max_batch_size: int) -> list[list[Hashable]]:
    """Return batches (lists of cell ids) per spec §20.2. Every id appears exactly once."""
    if max_batch_size < 1:
        raise ValueError("max_batch_size must be >= 1")
    ordered = sorted(cells, key=lambda c: (c[1], c[2]))
    batches: list[list[Hashable]] = []
    batch: list[tuple[Hashable, int, int]] = []
    for cell in ordered:
        if not batch:
            batch.append(cell)
        elif co_resonant(cell[1], cell[2], batch[0][1], batch[0][2]):
            batch.append(cell)
        else:
            batches.append([c[0] for c in batch])
            batch = [cell]
        if len(batch) == max_batch_size:
            batches.append([c[0] for c in batch])
            batch = []
    if batch:
        batches.append([c[0] for c in batch])
    return batches
