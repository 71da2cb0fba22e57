"""gyroscope's bootstrap: starts the in-process bridge before the program's first line.

`gyroscope run` starts the program as `python app.py args` with this directory prepended to
PYTHONPATH and a gate in GYROSCOPE_BRIDGE ("gate", then the descriptor of a pipe's read end:
agent/launch.py). Python imports this module while `site` runs (before __main__ exists); it
reads the session's address from the pipe, and leaves at once if the pipe closes empty. It
leaves no trace the program can see:
- the pipe is closed; this directory is taken off sys.path; os.environ shows PYTHONPATH and the
  environment as the program's parent gave them (the variables, GYROSCOPE_BRIDGE now holding the
  address, stay in the process's C environment only, so that the program's own python
  subprocesses, multiprocessing workers included, are followed);
- the user's own sitecustomize, if any, is imported in our place (its errors print as python
  prints them); if there is none, this module ends with the ImportError that python's `site`
  silently ignores, so `sitecustomize` is not in sys.modules, as under plain python;
- it imports only gyroscope.bridges._inproc, _locks and owncode (the lock profiler patches
  threading's lock types when threading is imported: bridges/_locks.pyx).
Any other interpreter (older Python, one without gyroscope) finds nothing to start and goes on,
so this file must stay valid for any Python 3.3+.

The address (what the gate delivers, and what the C environment then holds) has these fields,
separated by \\x1d: version "1", socket path, window seconds, K, follow subprocesses "1"/"0",
gyroscope's pid, the program's PYTHONPATH ("s" + value, or "u" when unset), the own-code rule
(bridges/owncode.py's to_config()).
"""


def _gyroscope_boot():
    import os
    import sys
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if not p or os.path.abspath(p) != here]
    cfg = os.environ.get("GYROSCOPE_BRIDGE", "")
    if cfg.startswith("gate\x1d"):
        if sys.version_info >= (3, 12) and sys.implementation.name == "cpython":
            try:   # while gyroscope gets ready: the imports of the bridge's start, off its wait
                from gyroscope.bridges import _inproc, owncode  # noqa: F401
            except Exception:
                pass
        cfg = _gyroscope_gate(int(cfg[5:]))
        os.putenv("GYROSCOPE_BRIDGE", cfg)   # the program's python subprocesses: the session's address
    fields = cfg.split("\x1d")
    if len(fields) < 8 or fields[0] != "1":
        return
    sock, window, k, follow, gyro_pid, orig_pythonpath, own = fields[1:8]
    try:   # hide our variables from os.environ only (no unsetenv: subprocesses inherit them)
        env = os.environ
        env._data.pop(env.encodekey("GYROSCOPE_BRIDGE"), None)
        if orig_pythonpath.startswith("s"):
            env._data[env.encodekey("PYTHONPATH")] = env.encodevalue(orig_pythonpath[1:])
        else:
            env._data.pop(env.encodekey("PYTHONPATH"), None)
    except Exception:
        pass
    if sys.version_info < (3, 12) or sys.implementation.name != "cpython":
        return
    if follow != "1" and str(os.getppid()) != gyro_pid:
        return   # a subprocess, and the session does not follow them
    try:
        from gyroscope.bridges import _inproc
        from gyroscope.bridges.owncode import OwnCode
        if not _inproc.start(sock, OwnCode.from_config(own).ours, float(window), int(k), follow == "1",
                             int(gyro_pid)):
            return
    except Exception:
        return   # never break the program: the session will say that nothing came
    try:   # exact lock waits: the program's locks are profiled from their creation on
        from gyroscope.bridges import _locks
        _locks.install()
        _inproc.add_source(_locks.window)
    except Exception:
        pass


def _gyroscope_gate(fd):
    """Wait for gyroscope's go: the bridge's configuration, then the end of the pipe. Nothing
    (gyroscope refused its options, or is gone): leave now, before the program's first line."""
    import os
    chunks = []
    try:
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    except KeyboardInterrupt:   # Ctrl-C in the terminal while gyroscope was starting
        os._exit(130)
    except OSError:
        chunks = []
    finally:
        os.close(fd)
    if not chunks:
        os._exit(2)
    return os.fsdecode(b"".join(chunks))


def _gyroscope_chain():
    """Import the user's own sitecustomize in our place, or end as 'no sitecustomize'."""
    import sys
    sys.modules.pop("sitecustomize", None)
    try:
        import sitecustomize  # noqa: F401  (the user's, now that our directory is off sys.path)
    except ImportError as exc:
        if getattr(exc, "name", None) != "sitecustomize":
            raise
        raise ImportError("No module named 'sitecustomize'", name="sitecustomize") from None


_gyroscope_boot()
del _gyroscope_boot
_gyroscope_chain()
