"""What the program can see of the bridge, with the real gate, bootstrap and bridge (as `gyroscope
run` starts them): its own sys.monitoring tool sees none of gyroscope's code, gyroscope leaves
the debugger's, coverage's and the optimizer's tool ids free, and the program's descriptors get
the numbers they get under python (the bridge's socket sits at the top), and a descriptor the
program takes over is never the bridge's to write to."""
import os
import resource
import textwrap

from tests.bridges.test_channel_exiting import go, watched


def run_watched(tmp_path, source: str, capfd, window: float = 0.2) -> str:
    """The program run to its end under the bridge (asserting exit status 0); its stdout."""
    prog = tmp_path / "prog.py"
    prog.write_text(source)
    with watched(prog, window=window) as (launch, server, config):
        go(launch, server, config)
        _, status = os.waitpid(launch.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return capfd.readouterr().out

OWN_TOOL = textwrap.dedent("""
    import sys, threading, time
    mon = sys.monitoring
    mon.use_tool_id(mon.COVERAGE_ID, "the program's own")
    seen = set()
    def on_start(code, offset):
        if code.co_filename != __file__:
            seen.add(code.co_filename.rsplit("/", 1)[-1])
    mon.register_callback(mon.COVERAGE_ID, mon.events.PY_START, on_start)
    mon.set_events(mon.COVERAGE_ID, mon.events.PY_START)
    lock = threading.Lock()
    end = time.monotonic() + 1.0
    while time.monotonic() < end:       # windows (and the lock profiler's) ship meanwhile
        with lock:
            total = sum(range(100))
    mon.set_events(mon.COVERAGE_ID, 0)
    print(sorted(f for f in seen if "gyroscope" in f or "sitecustomize" in f), [mon.get_tool(t) for t in range(6)])
""")


def test_the_programs_own_monitoring_tool_sees_no_gyroscope_code(tmp_path, capfd):
    """coverage's sysmon core, run inside the program, reported gyroscope's sitecustomize.py as a
    measured file; a PY_START tool saw the calibration's private loop and the lock window."""
    out = run_watched(tmp_path, OWN_TOOL, capfd, window=0.05)
    assert out == "[] [None, \"the program's own\", None, None, 'gyroscope', None]\n"


SOCKETS = textwrap.dedent("""
    import os, stat
    def sockets():
        \"\"\"The program's open sockets above 2 (the bridge's among them).\"\"\"
        def is_socket(fd):
            try:
                return stat.S_ISSOCK(os.fstat(fd).st_mode)
            except OSError:             # listdir's own descriptor, closed by now
                return False
        return [fd for fd in map(int, os.listdir("/proc/self/fd")) if fd > 2 and is_socket(fd)]
""")

DESCRIPTORS = SOCKETS + textwrap.dedent("""
    with open(__file__) as f:
        print(f.fileno(), sockets())
""")


def test_the_socket_sits_at_the_top_of_a_low_descriptor_limit(tmp_path, capfd):
    prog = tmp_path / "prog.py"
    prog.write_text(DESCRIPTORS)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))   # the program's process inherits it
    try:
        with watched(prog) as (launch, server, config):
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            go(launch, server, config)
            os.waitpid(launch.pid, 0)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert capfd.readouterr().out == "3 [255]\n"


MADE_CODE = textwrap.dedent("""
    import gc, weakref
    refs = []
    for i in range(300):    # functions of its own, made without end (exec'd under its file's name)
        ns = {}
        exec(compile(f"def f{i}(x):\\n    while x < 3:\\n        x += 1\\n    return x\\n", __file__, "exec"), ns)
        ns[f"f{i}"](0)
        refs.append(weakref.ref(ns[f"f{i}"].__code__))
        del ns
    gc.collect()
    print(sum(r() is not None for r in refs))
""")


def test_the_programs_code_objects_are_freed_as_under_python(tmp_path, capfd):
    """The bridge watched the program's code objects through strong references: 100k functions
    exec'd under the program's file name kept ~160 MB alive."""
    assert run_watched(tmp_path, MADE_CODE, capfd) == "0\n"


TAKING_THE_NUMBER = SOCKETS + textwrap.dedent("""
    import socket, time
    ours = sockets()
    os.closerange(3, 4096)              # a daemon closing what it did not open
    a, b = socket.socketpair()
    for fd in ours:
        os.dup2(a.fileno(), fd)         # ... and our number now names one of its sockets
    total = 0
    end = time.monotonic() + 0.6
    while time.monotonic() < end:       # windows to ship
        for i in range(1000):
            total += i
    b.setblocking(False)
    try:
        got = b.recv(65536)
    except BlockingIOError:
        got = b""
    print(ours[0] >= 512 if ours else "no socket", len(got))
""")


def test_the_bridge_never_writes_to_a_descriptor_the_program_took_over(tmp_path, capfd):
    """A program that closes every descriptor above 2 and gets the bridge's number back for a
    socket of its own: the bridge must not write its windows into it (nor read from it)."""
    # the bridge's socket sat high (a program's own descriptors take the lowest free numbers),
    # and nothing of the bridge's reached the program's socket
    assert run_watched(tmp_path, TAKING_THE_NUMBER, capfd, window=0.05) == "True 0\n"
