"""The kernel's errors. Each carries one clear, user-facing message."""


class KernelError(ValueError):
    """A bad packet or call: unallocated or out-of-range cell, wrong word shape, bad seed."""


class SnapshotError(ValueError):
    """A state file (or state arrays) that cannot be restored."""


class LedgerError(ValueError):
    """An ingest ledger that cannot be read or replayed."""
