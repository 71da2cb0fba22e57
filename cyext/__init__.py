"""The kernel: the cell pool engine of KERNEL.md (Cython), its pure-Python twin, persistence.

Importing it (and using a pool) loads no numpy; `law`, snapshots, ledgers and the array forms
of the pool's API do, when first used."""
from .errors import KernelError, LedgerError, SnapshotError

try:
    from ._engine import CellPool
except ImportError as _e:  # the extension is not built: say how, once
    raise ImportError("gyroscope.cyext._engine is not built; run `python setup.py build_ext --inplace`") from _e


def law_hash() -> str:
    """The kernel law's hash (KERNEL §8)."""
    from .law import law_hash as _law_hash
    return _law_hash()


__all__ = ["CellPool", "KernelError", "SnapshotError", "LedgerError", "law_hash"]
