"""User-facing failures: one exception tree, one clear line, a non-zero exit, never a traceback.

Every failure a user can act on is a `GyroscopeError` subclass that says *what* went wrong;
which exit code it ends with is decided in one place, the CLI (agent/cli.py `EXIT_CODES`,
documented in each command's --help). Nothing below knows about exit codes, except the
transition shim of `AttachError(message, code)` for callers written before the tree existed.

    GyroscopeError                 2 unless a subclass says otherwise
      UsageError                   a bad option or argument                      2
      InputError                   a missing, unreadable or foreign input file   2
        SessionFileError           a session file that cannot be read            2
      OutputError                  an output that cannot be written              2
      ProgramNotFound              run -m: the module (or __main__) is missing   1 (as python)
      AttachError                  gyroscope attach could not watch the process
        NoSuchProcess                                                             3
        PermissionDenied           ptrace not allowed                             4
        NotPython                                                                 5
        PySpyNotFound                                                             6
        UnsupportedPython          a Python version py-spy cannot read            7
        PySpyFailed                py-spy failed mid-run                          8
"""
from __future__ import annotations

TYPE_CHECKING = False   # not `from typing import ...`: typing costs ~3 ms before the program starts
if TYPE_CHECKING:
    from typing import Any


class GyroscopeError(Exception):
    """An error the user can act on. `message` is the one line printed after "gyroscope: error: ".

    `exit_code` is the code the CLI exits with: an explicit one passed by older callers
    (`GyroscopeError(msg, 2)`, kept so that parallel branches still merge), else the CLI's
    mapping for the class."""

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self._exit_code = exit_code

    @property
    def exit_code(self) -> int:
        if self._exit_code is not None:
            return self._exit_code
        from gyroscope.agent.cli import exit_code_for
        return exit_code_for(self)


class UsageError(GyroscopeError):
    """A bad option or argument."""


class InputError(GyroscopeError):
    """An input file that is missing, unreadable, or not what it should be."""


class SessionFileError(InputError):
    """A session file (`--json` output) that cannot be read: not found, not JSON, a foreign or
    unknown schema, or a field of the wrong type (the message names the field)."""


# The name the model used before the error tree (agent/result.py); same class.
ResultError = SessionFileError


class OutputError(GyroscopeError):
    """An output path that cannot be written."""


class ProgramNotFound(GyroscopeError):
    """`gyroscope run -m MOD`: the module cannot be found (python exits 1 there too)."""


class AttachError(GyroscopeError):
    """`gyroscope attach` cannot watch the process. Use a subclass; `AttachError(message, code)`
    with one of the legacy attach codes (3..8) builds the matching subclass, so that callers
    written before the tree (bridges/pyspy.py) keep working until they are merged."""

    def __new__(cls, message: str = "", exit_code: int | None = None, *args: Any, **kw: Any) -> AttachError:
        if cls is AttachError and exit_code is not None:
            from gyroscope.agent.cli import EXIT_CODES
            for sub, code in EXIT_CODES.items():
                if code == exit_code and isinstance(sub, type) and issubclass(sub, AttachError):
                    return super().__new__(sub)
        return super().__new__(cls)

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        # the legacy code only chose the subclass: the CLI maps the class to the same number
        super().__init__(message, exit_code if type(self) is AttachError else None)


class NoSuchProcess(AttachError):
    """No process has that PID."""


class PermissionDenied(AttachError):
    """Not allowed to read the process (ptrace)."""


class NotPython(AttachError):
    """The process is not a Python process."""


class PySpyNotFound(AttachError):
    """py-spy is not installed or not at the given path."""


class UnsupportedPython(AttachError):
    """The target's Python version is one py-spy cannot read."""


class PySpyFailed(AttachError):
    """py-spy failed while watching (what was collected is still written)."""
