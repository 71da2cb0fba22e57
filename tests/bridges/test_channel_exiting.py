"""The program's process and gyroscope's channel across forks and the program's end: real bridge,
real gate, real channel (as `gyroscope run` wires them, without the session).

- The main process tells gyroscope when its exit began (its bridge's last window, after every
  atexit callback of the program): `gyroscope run` then ends py-spy's last chunk while the
  interpreter finalises.
- A parent that forks every few ms still ships its windows.
- A gyroscope that stops reading never holds the program: its bridge goes quiet."""
import _socket
import contextlib
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from gyroscope.agent.launch import Launch
from gyroscope.agent.run_command import _bridge_config
from gyroscope.bridges.channel import ChannelServer
from gyroscope.bridges.owncode import OwnCode
from gyroscope.bridges.tmpdir import private_dir, remove_dir


@contextlib.contextmanager
def watched(prog: Path, *args: str, subprocesses: bool = True,
            window: float = 0.2) -> Iterator[tuple[Launch, ChannelServer, str]]:
    """`prog` started at its gate, a channel listening, the bridge's configuration; the caller
    sets the server's hooks, then calls go()."""
    sock_dir = private_dir()   # a short path: AF_UNIX paths are limited to 108 bytes
    path = os.path.join(sock_dir, "s")
    listener = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(8)
    launch = Launch([str(prog), *args])
    server = ChannelServer(listener, path, main_pid_getter=lambda: launch.pid)
    config = _bridge_config(path, SimpleNamespace(window=window, subprocesses=subprocesses),
                            OwnCode.for_program([str(prog.parent)], extra=[str(prog)]).to_config(), launch.pythonpath)
    try:
        yield launch, server, config
    finally:
        launch.abort()
        server.stop()
        remove_dir(sock_dir)


def go(launch: Launch, server: ChannelServer, config: str) -> None:
    server.start()
    assert launch.go(config)


EXITING = textwrap.dedent("""
    import atexit, os, sys
    def mark():
        with open(sys.argv[1], "a") as f:
            f.write("atexit ")
    atexit.register(mark)
    pid = os.fork()
    if pid == 0:
        sys.exit(0)        # a forked child's exit is not the program's
    os.waitpid(pid, 0)
    print("done")
""")


def test_only_the_main_process_exit_is_announced_and_after_its_atexit(tmp_path, capfd):
    prog, marker = tmp_path / "prog.py", tmp_path / "marker"
    prog.write_text(EXITING)
    seen: list[str] = []
    with watched(prog, str(marker)) as (launch, server, config):
        server.on_main_exiting = lambda: seen.append(marker.read_text() if marker.exists() else "")
        go(launch, server, config)
        _, status = os.waitpid(launch.pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        deadline = time.monotonic() + 5
        while not seen and time.monotonic() < deadline:
            time.sleep(0.01)
        server.drain(0.5)
        forked = [p for p in server.processes.values() if p.pid != launch.pid]
    assert capfd.readouterr().out == "done\n"
    assert forked, "the forked child connected (its exit was a candidate)"
    # once, for the main process only (the child ran the same atexit callback first), after the
    # program's own atexit callbacks
    assert seen == ["atexit atexit "]


def test_a_program_that_runs_its_atexit_callbacks_itself_is_not_taken_for_ending(tmp_path, capfd):
    """atexit._run_exitfuncs() called by the program runs the bridge's last window too, but the
    program goes on: the sampler must not be stopped then."""
    prog = tmp_path / "prog.py"
    prog.write_text("import atexit, time\natexit._run_exitfuncs()\ntime.sleep(0.2)\nprint('went on')\n")
    seen: list[bool] = []
    with watched(prog) as (launch, server, config):
        server.on_main_exiting = lambda: seen.append(True)
        go(launch, server, config)
        os.waitpid(launch.pid, 0)
        server.drain(0.5)
        connected = launch.pid in server.processes
    assert capfd.readouterr().out == "went on\n"
    assert connected and seen == []


FORKING = textwrap.dedent("""
    import os, sys, time
    end = time.monotonic() + 0.8
    while time.monotonic() < end:      # a fork every few ms, as a pool made per call does
        pid = os.fork()
        if pid == 0:
            sys.exit(0)
        os.waitpid(pid, 0)
        total = 0
        for i in range(5000):
            total += i
    open(sys.argv[1], "w").close()
    time.sleep(0.3)
""")


def test_a_parent_that_forks_every_few_ms_still_ships_its_windows(tmp_path):
    """The shipper thread is stopped at each fork (CPython warns at a fork when the process has
    another thread) and started again after it; its window schedule must survive that, or a
    parent forking every few ms ships nothing until it stops forking (and re-arms nothing)."""
    prog, marker = tmp_path / "prog.py", tmp_path / "forked"
    prog.write_text(FORKING)
    windows_while_forking = 0   # polls (every 50 ms) that found the parent's window (every 0.2 s)
    with watched(prog, str(marker), subprocesses=False) as (launch, server, config):
        go(launch, server, config)
        deadline = time.monotonic() + 10
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
            if any(e.entity.pid in (0, launch.pid) for e in server.poll().events):
                windows_while_forking += 1
        os.waitpid(launch.pid, 0)
    assert marker.exists()
    assert windows_while_forking >= 3   # stop 23's bridge: 1 (its first window, before the forks)


FLOODING = textwrap.dedent("""
    import time
    from gyroscope.bridges import _inproc
    _inproc.set_send_timeout(1)
    src = "".join(f"def f{k}(a):\\n    s = 0\\n    for x in a:\\n        s += x\\n    return s\\n" for k in range(300))
    ns = {}
    exec(compile(src, __file__, "exec"), ns)
    fs = [ns[f"f{k}"] for k in range(300)]
    end = time.monotonic() + 1.0
    while time.monotonic() < end:      # hundreds of slots in every 10 ms window
        for f in fs:
            f([1, 2, 3])
    print("done")
""")


def test_a_gyroscope_that_stops_reading_never_holds_the_program(tmp_path, capfd):
    """gyroscope alive but reading nothing (stopped, hung): once the socket's buffer is full, a
    send that waited the bridge's timeout makes it quiet; the program's exit (its last window)
    must not wait for gyroscope forever. Before the timeout it hung in its atexit."""
    prog = tmp_path / "prog.py"
    prog.write_text(FLOODING)
    with watched(prog, window=0.01) as (launch, _server, config):
        t0 = time.monotonic()
        assert launch.go(config)      # the channel never accepts: nothing is ever read
        deadline = t0 + 20
        status = None
        while status is None and time.monotonic() < deadline:
            pid, st = os.waitpid(launch.pid, os.WNOHANG)
            status = st if pid else None
            time.sleep(0.05)
        if status is None:
            os.kill(launch.pid, 9)
            os.waitpid(launch.pid, 0)
        took = time.monotonic() - t0
    assert status is not None, "the program hung at its exit"
    assert os.waitstatus_to_exitcode(status) == 0
    assert capfd.readouterr().out == "done\n"
    assert took < 8    # 1 s of work, then at most two sends of 1 s each



LATE_SHIPPER = textwrap.dedent("""
    import sys, time
    from gyroscope.bridges import _inproc
    _inproc.set_ship_delay(0.3, sys.argv[1] == "after")
    time.sleep(0.08)     # the first window ends meanwhile: its shipper is left waiting 0.3 s
    print("done")
""")


@pytest.mark.slow
@pytest.mark.parametrize("clears_atexit", [False, True])
@pytest.mark.parametrize("where", ["before", "after"])
def test_a_shipper_left_waiting_at_the_exit_never_crashes_the_program(tmp_path, clears_atexit, where):
    """A shipper the scheduler left waiting at a window's end, overtaken by the program's exit,
    took the GIL of a runtime already finalised: SIGSEGV at the very end (PyGILState_Ensure with
    no interpreter, from a core dump; ~1 in 200 short-lived processes). The exit now joins it;
    a program that cleared the atexit callbacks (no join then) has a shipper that sees the
    interpreter finalising and leaves without the GIL, before it ships ("before"), and that
    needs no GIL after it shipped ("after": a Python object of the shipping function took it
    again at the function's end, 4 crashes in 200 runs of such a program)."""
    prog = tmp_path / "late.py"
    prog.write_text(LATE_SHIPPER + ("import atexit\natexit._clear()\n" if clears_atexit else ""))
    want = subprocess.run([sys.executable, str(prog), where], capture_output=True, text=True, timeout=60)
    got = subprocess.run([sys.executable, "-m", "gyroscope.agent.cli", "run", "-q", str(prog), where],
                         capture_output=True, text=True, timeout=60)
    assert (got.returncode, got.stdout, got.stderr) == (want.returncode, want.stdout, want.stderr) == (0, "done\n", "")
