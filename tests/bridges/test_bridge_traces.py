"""What the program can see of the bridge, with the real gate, bootstrap and bridge (as `gyroscope
run` starts them): its own sys.monitoring tool sees none of gyroscope's code, gyroscope leaves
the debugger's, coverage's and the optimizer's tool ids free, and the program's descriptors get
the numbers they get under python (the bridge's socket sits at the top)."""
import os
import resource
import textwrap

from tests.bridges.test_channel_exiting import go, watched

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
    prog = tmp_path / "prog.py"
    prog.write_text(OWN_TOOL)
    with watched(prog, window=0.05) as (launch, server, config):
        go(launch, server, config)
        _, status = os.waitpid(launch.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert capfd.readouterr().out == "[] [None, \"the program's own\", None, None, 'gyroscope', None]\n"


DESCRIPTORS = textwrap.dedent("""
    import os, stat
    def is_socket(fd):
        try:
            return stat.S_ISSOCK(os.fstat(fd).st_mode)
        except OSError:
            return False
    sockets = [fd for fd in map(int, os.listdir("/proc/self/fd")) if fd > 2 and is_socket(fd)]
    with open(__file__) as f:
        print(f.fileno(), sockets)
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
    prog = tmp_path / "prog.py"
    prog.write_text(MADE_CODE)
    with watched(prog) as (launch, server, config):
        go(launch, server, config)
        os.waitpid(launch.pid, 0)
    assert capfd.readouterr().out == "0\n"
