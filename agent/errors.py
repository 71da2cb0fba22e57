"""User-facing failures: one clear line and a non-zero exit, never a traceback."""
from __future__ import annotations


class GyroscopeError(Exception):
    """An error the user can act on. `exit_code` is what the CLI exits with (documented in --help)."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
