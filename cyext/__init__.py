"""The kernel: the cell pool engine of KERNEL.md (Cython), its pure-Python twin, persistence."""
from .errors import KernelError, LedgerError, SnapshotError
from .law import law_hash

try:
    from ._engine import CellPool
except ImportError as _e:  # the extension is not built: say how, once
    raise ImportError("gyroscope.cyext._engine is not built; run `python setup.py build_ext --inplace`") from _e

__all__ = ["CellPool", "KernelError", "SnapshotError", "LedgerError", "law_hash"]
