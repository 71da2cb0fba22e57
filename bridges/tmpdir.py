"""Gyroscope's private temporary directories: the session's socket, py-spy's chunk files.

`tempfile` is not used: with the `shutil` and `random` it loads it is ~1.2 MiB of the watcher's
RSS, for one mkdir. The directories are flat (files only), 0700, named gyroscope-PID-RANDOM.
"""
from __future__ import annotations

import os


def base() -> str:
    """Where they go: $TMPDIR if it is a short existing directory (an AF_UNIX socket path must
    stay under ~100 bytes), else /tmp."""
    b = os.environ.get("TMPDIR") or "/tmp"
    return b if len(b) <= 60 and os.path.isdir(b) else "/tmp"


def private_dir(prefix: str = "gyroscope") -> str:
    """A new 0700 directory; OSError if none can be made."""
    root = base()
    for _ in range(100):
        path = os.path.join(root, f"{prefix}-{os.getpid()}-{os.urandom(4).hex()}")
        try:
            os.mkdir(path, 0o700)
            return path
        except FileExistsError:
            continue
    raise OSError(f"cannot create a private directory in {root}")


def remove_dir(path: str) -> None:
    """The directory and the files in it; what is already gone is fine."""
    try:
        names = os.listdir(path)
    except OSError:
        return
    for name in names:
        try:
            os.unlink(os.path.join(path, name))
        except OSError:
            pass
    try:
        os.rmdir(path)
    except OSError:
        pass
