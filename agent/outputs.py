"""Every file gyroscope writes goes through here: resolve, check, then write without destroying.

Why one module: before it, each output (--json, --trace, --speedscope, report --html, eval
--json, ...) was a temporary file renamed over the path, which replaced whatever was there.
Run as root, `--json /dev/null` turned /dev/null into a regular file; a symlink was replaced
instead of its target written; `--stream v.py v.py` emptied the script before it ran; a
relative `--trace` landed wherever the program had chdir'd to; files were 0600 whatever the
umask. The rules, for whole files and for streams alike:

  the path's final target       whole file (write_text / write_json)      stream (open_stream)
  absent or a regular file      temp file in the target's directory,      opened and truncated
                                fsync, rename over it (atomic)            in place (live, tail -f)
  a symlink (chain)             the same, on the link's final target; the link stays a link
  a device, FIFO or socket      opened and written directly (never replaced)
  a descriptor (/dev/stdout,    opened in append mode: written after whatever the program
  /dev/fd/N, /proc/self/fd/N)   printed there, never truncated or renamed over
  a directory                   refused: "Is a directory"

  - New files get 0666 & ~umask (created with os.open(..., 0o666), so the kernel applies the
    umask and any default ACL); a replaced regular file keeps its permission bits.
  - A regular file with several hard links is rewritten in place (a rename would detach it
    from its other names). If no temporary file can be made next to an existing file (a
    read-only directory), the file is rewritten in place too.
  - Errors are OSError naming the user's path, never the temporary file.

The command line side: `resolve_outputs(args)` makes every output option absolute against the
directory gyroscope was started in (call it once, before the program starts: the program may
chdir), and `check_outputs(outputs, inputs)` refuses, before anything runs, an output that is
the script or an input file, two outputs that are the same file, a directory, a missing
folder for a stream, a folder the user may not write a new file in (an existing file: neither
its folder nor itself writable), and a --ledger at an existing file that is not a GYRL ledger.

Cost (measured 2026-12-01, CPython 3.13, /tmp on a virtio disk, shared 2-core machine, medians):
resolve_outputs + check_outputs for 4 outputs 84 us at start; write_text of a 443 KB session
7.6 ms to a regular file (fsync-bound; the old mkstemp + rename took 7.7 ms), 15 us to
/dev/null.
"""
from __future__ import annotations

import errno
import os
import stat

from gyroscope.agent.errors import GyroscopeError

TYPE_CHECKING = False   # not argparse nor typing (~3-7 ms each) before the program starts
if TYPE_CHECKING:
    import argparse
    from typing import IO, Any

# attribute of the parsed arguments -> the option as the user typed it
OUTPUT_OPTIONS: dict[str, str] = {
    "json": "--json", "stream": "--stream", "trace": "--trace", "ledger": "--ledger",
    "speedscope": "--speedscope", "pprof": "--pprof", "collapsed": "--collapsed", "html": "--html",
    "snapshot": "--snapshot",
}
# outputs opened when the session starts and written while it runs: their folder must exist
STREAM_OPTIONS = frozenset({"--stream", "--ledger"})
LEDGER_MAGIC = b"GYRL"


def _is_fd_dir(folder: str) -> bool:
    """/proc/(self|thread-self|PID)[/task/TID]/fd, matched without `re` (~5 ms of imports before
    the program may start)."""
    parts = folder.split("/")
    if len(parts) not in (4, 6) or parts[:2] != ["", "proc"] or parts[-1] != "fd":
        return False
    if not (parts[2] in ("self", "thread-self") or parts[2].isdecimal()):
        return False
    return len(parts) == 4 or (parts[3] == "task" and parts[4].isdecimal())


# ---- the command line: resolve once, check before anything runs ---------------------------
def resolve_path(path: str | os.PathLike[str], start_dir: str) -> str:
    """`path` made absolute against `start_dir`, joined as the kernel would (no `..` folding,
    symlinks kept: a symlink must still be written through, not replaced)."""
    p = os.fspath(path)
    return p if os.path.isabs(p) else os.path.join(start_dir, p)


def resolve_outputs(args: argparse.Namespace, start_dir: str | None = None) -> dict[str, str]:
    """Make every output option of `args` absolute against `start_dir` (default: the current
    directory, i.e. where gyroscope was started: call this before the program runs, since it
    may chdir). Rewrites the attributes in place; returns {option: absolute path} for the set
    ones, ready for check_outputs."""
    base = start_dir if start_dir is not None else os.getcwd()
    out: dict[str, str] = {}
    for attr, option in OUTPUT_OPTIONS.items():
        value = getattr(args, attr, None)
        if value:
            absolute = resolve_path(value, base)
            setattr(args, attr, absolute)
            out[option] = absolute
    return out


def _identity(path: str) -> tuple[Any, ...]:
    """What makes two paths the same file: (device, inode) when it exists, else its real path."""
    try:
        st = os.stat(path)
        return ("inode", st.st_dev, st.st_ino)
    except OSError:
        return ("path", os.path.realpath(path))


def check_outputs(outputs: dict[str, str], inputs: list[str], labels: list[str] | None = None) -> None:
    """Refuse, with one line (GyroscopeError, exit 2), before anything is written or run:
    an output that is one of `inputs` (the script, an input file), two outputs that are the same
    file (character devices such as /dev/null or a terminal's /dev/stdout excepted), an output that is a directory or whose
    folder is a file, a stream (--stream, --ledger) whose folder is missing, and a --ledger at
    an existing non-empty file that is not a GYRL ledger (a ledger is appended to, never
    overwritten). `labels[i]` names inputs[i] in the message ("the script"; default "an input
    file")."""
    ins: dict[tuple[Any, ...], tuple[str, str]] = {}
    for i, p in enumerate(inputs):
        if p:
            label = labels[i] if labels and i < len(labels) else "an input file"
            ins.setdefault(_identity(os.fspath(p)), (os.fspath(p), label))
    seen: dict[tuple[Any, ...], str] = {}
    for option, path in outputs.items():
        if path.endswith(os.sep):
            raise GyroscopeError(f"cannot write {option} {path}: names a directory; give a file name")
        try:
            kind, st = _kind(path)
        except OSError as e:
            raise GyroscopeError(f"cannot write {option} {path}: {e.strerror}") from None
        if kind == "directory":
            raise GyroscopeError(f"cannot write {option} {path}: is a directory")
        ident = _identity(path)
        if ident in ins:
            src, label = ins[ident]
            raise GyroscopeError(f"{option} {path} is {label} ({src}); refusing to overwrite it")
        if ident in seen and not (st is not None and stat.S_ISCHR(st.st_mode)):   # /dev/null, a tty
            raise GyroscopeError(f"{seen[ident]} and {option} are the same file ({path}); give each its own path")
        seen.setdefault(ident, option)
        if kind == "absent" or kind == "regular":
            _check_folder(option, path, must_exist=option in STREAM_OPTIONS, exists=kind == "regular")
        if option == "--ledger" and kind == "regular" and st is not None:
            _check_ledger(path)


def _check_folder(option: str, path: str, must_exist: bool, exists: bool = False) -> None:
    """The folder a file will be written in: it exists (streams), or its nearest existing parent
    is a directory; and where a new file (or folder) must be made, we may write there (a user's
    `--json /usr/s.json` is refused before the program runs, not after it ran). An existing file
    needs its folder writable (a rename replaces it) or itself (it is rewritten in place)."""
    folder = os.path.dirname(os.path.realpath(path)) or "/"
    probe = folder
    while not os.path.exists(probe):
        if must_exist:
            raise GyroscopeError(f"cannot write {option} {path}: no such directory: {folder}")
        probe = os.path.dirname(probe) or "/"
    if not os.path.isdir(probe):
        raise GyroscopeError(f"cannot write {option} {path}: not a directory: {probe}")
    if exists:   # replaced by a rename in its folder, or rewritten in place
        if not (os.access(probe, os.W_OK | os.X_OK) or os.access(path, os.W_OK)):
            raise GyroscopeError(f"cannot write {option} {path}: permission denied")
    elif not os.access(probe, os.W_OK | os.X_OK):
        raise GyroscopeError(f"cannot write {option} {path}: permission denied: {probe}")


def _check_ledger(path: str) -> None:
    try:
        with open(path, "rb") as f:
            head = f.read(len(LEDGER_MAGIC))
    except OSError as e:
        raise GyroscopeError(f"--ledger {path}: {e.strerror or e}") from None
    if head and head != LEDGER_MAGIC:
        raise GyroscopeError(f"--ledger {path} exists and is not a gyroscope ledger (no GYRL magic); "
                             "refusing to overwrite it")


# ---- what a path is -----------------------------------------------------------------------
def _kind(path: str) -> tuple[str, os.stat_result | None]:
    """("absent" | "regular" | "directory" | "chardev" | "special" | "descriptor", stat of the target)."""
    if _is_descriptor(path):
        try:
            return "descriptor", os.stat(path)
        except OSError:
            return "descriptor", None
    try:
        st = os.stat(path)   # follows symlinks: the target decides
    except FileNotFoundError:
        return "absent", None   # missing, or a dangling symlink (its target will be created)
    except OSError as e:
        if e.errno == errno.ELOOP:   # a symlink loop: renaming over it would destroy the link
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path) from None
        return "absent", None   # e.g. a file as a folder: the write says what is wrong
    if stat.S_ISREG(st.st_mode):
        return "regular", st
    if stat.S_ISDIR(st.st_mode):
        return "directory", st
    if stat.S_ISCHR(st.st_mode):
        return "chardev", st
    return "special", st   # FIFO, socket, block device


def _is_descriptor(path: str) -> bool:
    """True for /dev/stdout, /dev/stderr, /dev/fd/N, /proc/self/fd/N and links to them: their
    "target" is whatever the descriptor is open on (a pipe, a tty, or the file the shell
    redirected to), which must be appended to, never renamed over."""
    p = os.path.abspath(path)
    for _ in range(40):
        folder = os.path.realpath(os.path.dirname(p))
        if _is_fd_dir(folder):
            return True
        if not os.path.islink(p):
            return False
        p = os.path.join(folder, os.readlink(p))
    return False


# ---- writing ------------------------------------------------------------------------------
def check_writable(path: str | os.PathLike[str]) -> None:
    """Raise OSError (naming `path`) when `path` cannot be a whole-file output: it is a directory,
    or a file stands where one of its folders should be. Opens and creates nothing (a FIFO
    would block an open; a failed run must not leave an empty file behind)."""
    user = os.fspath(path)
    kind, _ = _kind(user)
    if kind == "directory":
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), user)
    if kind == "absent":
        probe = os.path.dirname(os.path.realpath(user)) or "/"
        while not os.path.exists(probe):
            probe = os.path.dirname(probe) or "/"
        if not os.path.isdir(probe):
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), user)


def write_json(path: str | os.PathLike[str], doc: Any, default: Any = None, indent: int | None = 1) -> None:
    """Write `doc` as JSON (plus a newline) by the rules of this module."""
    import json  # not at import time: `gyroscope run` checks its outputs before the program starts
    write_text(path, json.dumps(doc, indent=indent, default=default) + "\n")


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write a whole text file by the rules of this module (UTF-8)."""
    write_bytes(path, text.encode("utf-8"))


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write a whole file: atomically where the target is (or will be) a regular file, directly
    to a device or FIFO, appended to a descriptor. Creates a missing folder. Raises OSError
    naming `path` (never a temporary file)."""
    user = os.fspath(path)
    try:
        kind, st = _kind(user)
        if kind == "directory":
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), user)
        if kind == "descriptor":
            _write_direct(user, data, append=True)
        elif kind in ("chardev", "special"):
            _write_direct(user, data, append=False)
        elif kind == "regular" and st is not None and st.st_nlink > 1:
            _write_direct(user, data, append=False)
        else:
            _write_atomic(os.path.realpath(user), data, st)
    except OSError as e:
        raise OSError(e.errno, e.strerror or str(e), user) from None


def open_stream(path: str | os.PathLike[str], binary: bool = False) -> IO[Any]:
    """Open an output written while the session runs (--stream): truncated in place when it is a
    regular file (readable live), written directly when it is a device or FIFO, appended to
    when it is a descriptor. The folder must exist. Raises OSError naming `path`."""
    user = os.fspath(path)
    kind, _ = _kind(user)
    if kind == "directory":
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), user)
    mode = ("a" if kind == "descriptor" else "w") + ("b" if binary else "")
    if binary:
        return open(user, mode)  # noqa: SIM115 - the caller closes it
    return open(user, mode, encoding="utf-8")  # noqa: SIM115 - the caller closes it


def fsync_if_possible(fd: int) -> None:
    """fsync, except where it means nothing: a device, FIFO, socket or tty answers EINVAL (or
    ENOTSUP / EROFS); only a real failure to reach the disk (EIO, ENOSPC, ...) is raised."""
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EROFS, errno.EBADF):
            raise


def _write_direct(path: str, data: bytes, append: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
    fd = os.open(path, flags, 0o666)
    try:
        _write_all(fd, data)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _write_atomic(real: str, data: bytes, st: os.stat_result | None) -> None:
    """Temp file next to `real`, fsync, rename over it, fsync the folder."""
    folder = os.path.dirname(real) or "."
    try:
        os.makedirs(folder, exist_ok=True)
    except FileExistsError:   # a file where a folder should be: say so, not "File exists"
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), folder) from None
    try:
        fd, tmp = _create_temp(folder, os.path.basename(real))
    except OSError:
        if st is not None:   # no temp file possible next to an existing file: rewrite it in place
            _write_direct(real, data, append=False)
            return
        raise
    try:
        try:
            if st is not None:
                os.fchmod(fd, stat.S_IMODE(st.st_mode))
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, real)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def _create_temp(folder: str, name: str) -> tuple[int, str]:
    """A new file in `folder` created with mode 0666 (the kernel applies the umask), unlike
    tempfile.mkstemp's fixed 0600."""
    for _ in range(100):
        tmp = os.path.join(folder, f".{name}.{os.urandom(4).hex()}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", folder)
