"""`gyroscope run app.py` is `python app.py`: each case runs under both and compares stdout, stderr
and the exit status (with a hang limit), and checks that the session is written whatever
happens to the program."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

PY = sys.executable
GYRO = str(Path(PY).with_name("gyroscope"))
HANG_S = 60


def write(d: Path, name: str, text: str) -> Path:
    p = d / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def both(tmp_path: Path, argv: list[str], gyro_opts: list[str] | None = None, stdin: str | None = None,
         env: dict | None = None) -> tuple[subprocess.CompletedProcess, subprocess.CompletedProcess, dict | None]:
    """(python, gyroscope run, session) for the same program."""
    out = tmp_path / "session.json"
    e = dict(os.environ, **(env or {}))
    bare = subprocess.run([PY, *argv], cwd=tmp_path, capture_output=True, text=True, input=stdin, timeout=HANG_S,
                          env=e)
    gyro = subprocess.run([GYRO, "run", "-q", "--json", str(out), *(gyro_opts or []), *argv], cwd=tmp_path,
                          capture_output=True, text=True, input=stdin, timeout=HANG_S, env=e)
    doc = json.loads(out.read_text()) if out.exists() else None
    return bare, gyro, doc


def program_stderr(text: str) -> str:
    """The program's own stderr: gyroscope's -q summary lines start with 'gyroscope'."""
    return "\n".join(line for line in text.splitlines() if not line.startswith("gyroscope"))


def same(bare: subprocess.CompletedProcess, gyro: subprocess.CompletedProcess) -> None:
    assert gyro.returncode == bare.returncode, gyro.stderr
    assert gyro.stdout == bare.stdout
    assert program_stderr(gyro.stderr) == program_stderr(bare.stderr), gyro.stderr


pytestmark = pytest.mark.slow


def test_threads_modules_env_argv_and_main(tmp_path):
    write(tmp_path, "app.py", (
        "import sys, os, threading, time, pickle, atexit\n"
        "print(sys.argv, sys.orig_argv[1:], __name__, sys.path[0] == os.path.dirname(os.path.abspath(__file__)))\n"
        "print(sorted(sys.modules).__len__() > 0, 'sitecustomize' in sys.modules, 'threading' in sys.modules)\n"
        "print(sorted(k for k in os.environ if 'GYRO' in k), os.environ.get('PYTHONPATH'))\n"
        "print(type(__builtins__).__name__, __loader__ is not None, __spec__)\n"
        "t = threading.Thread(target=time.sleep, args=(0.05,)); t.start()\n"
        "for th in threading.enumerate():\n"
        "    if th is not threading.main_thread(): th.join()\n"
        "print('threads', threading.active_count(), [th.name for th in threading.enumerate()])\n"
        "class K: pass\n"
        "atexit.register(lambda: print('atexit pickles', len(pickle.dumps(K())) > 0, sys.modules['__main__'].K is K))\n"
    ))
    bare, gyro, doc = both(tmp_path, ["app.py", "a", "--json", "b"])
    same(bare, gyro)
    assert doc is not None and doc["exit_code"] == 0


def test_modules_added_and_local_modules_win(tmp_path):
    for name in ("agent", "json", "numpy", "rich", "psutil", "bridges"):
        write(tmp_path, f"{name}.py", f"WHO = 'local {name}'\n")
    write(tmp_path, "app.py", (
        "import sys\nbefore = set(sys.modules)\n"
        "import agent, json, numpy, rich, psutil, bridges\n"
        "print([m.WHO for m in (agent, json, numpy, rich, psutil, bridges)])\n"
        "print(len(before))\n"))
    bare, gyro, _doc = both(tmp_path, ["app.py"])
    assert gyro.returncode == bare.returncode == 0, gyro.stderr
    names_bare, n_bare = bare.stdout.splitlines()
    names_gyro, n_gyro = gyro.stdout.splitlines()
    assert names_gyro == names_bare
    assert int(n_gyro) - int(n_bare) <= 10     # the bridge adds at most 10 modules


@pytest.mark.parametrize("imports", ["", "import logging\n"], ids=["plain", "logging"])
def test_fork_without_and_with_exec(tmp_path, imports):
    """With `import logging` too: its at-fork hooks run Python code; the bridge's shipper once
    restarted from inside them and os.fork() counted it (a DeprecationWarning python does not
    give)."""
    write(tmp_path, "app.py", imports + (
        "import os, sys\n"
        "def work(n):\n    s = 0\n    for i in range(n):\n        s += i\n    return s\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    print('child', work(200000)); sys.stdout.flush(); os._exit(3)\n"
        "_, st = os.waitpid(pid, 0)\nprint('forked child exit', os.waitstatus_to_exitcode(st))\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    os.execv(sys.executable, [sys.executable, '-c', 'print(\"exec child\")'])\n"
        "_, st = os.waitpid(pid, 0)\nprint('exec child exit', os.waitstatus_to_exitcode(st))\n"
        "print('parent', work(100000))\n"))
    bare, gyro, doc = both(tmp_path, ["app.py"], env={"PYTHONWARNINGS": "default"})
    same(bare, gyro)
    assert "DeprecationWarning" not in gyro.stderr
    assert doc["exit_code"] == 0 and doc["pid"] > 0
    loops = [e for e in doc["entities"] if e["kind"] == "loop" and e["function"] == "work"]
    assert loops and loops[0]["measurements"]["iterations"] > 0, doc["entities"]


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_multiprocessing(tmp_path, method):
    write(tmp_path, "app.py", (
        "import multiprocessing as mp\n"
        "def square(x):\n    s = 0\n    for i in range(20000):\n        s += i\n    return x * x\n"
        "if __name__ == '__main__':\n"
        f"    ctx = mp.get_context('{method}')\n"
        "    with ctx.Pool(2) as pool:\n        print(pool.map(square, range(8)))\n"))
    bare, gyro, doc = both(tmp_path, ["app.py"], env={"PYTHONWARNINGS": "default"})
    same(bare, gyro)
    assert doc["exit_code"] == 0


def test_exit_codes_os_exit_in_atexit_and_uncaught(tmp_path):
    write(tmp_path, "a.py", "import atexit, os\natexit.register(lambda: os._exit(9))\nprint('body done')\n")
    bare, gyro, doc = both(tmp_path, ["a.py"])
    same(bare, gyro)
    assert gyro.returncode == 9 and doc["exit_code"] == 9
    write(tmp_path, "b.py", "def f():\n    raise ValueError('boom')\nf()\n")
    bare, gyro, doc = both(tmp_path, ["b.py"])
    same(bare, gyro)
    assert doc["exit_code"] == 1


def test_stdin_script_and_module_errors(tmp_path):
    bare, gyro, doc = both(tmp_path, ["-", "x"], stdin="import sys\nprint('from stdin', sys.argv)\n")
    same(bare, gyro)
    write(tmp_path, "pkg/__init__.py", "raise RuntimeError('init fails')\n")
    write(tmp_path, "pkg/x.py", "print('never')\n")
    bare, gyro, _ = both(tmp_path, ["-m", "pkg.x"])
    same(bare, gyro)
    assert "Traceback" in gyro.stderr and "init fails" in gyro.stderr
    bare, gyro, _ = both(tmp_path, ["-m", "json"])
    same(bare, gyro)


def test_relative_outputs_resolve_against_the_start_directory(tmp_path):
    write(tmp_path, "app.py", "import os\nos.makedirs('sub', exist_ok=True)\nos.chdir('sub')\nprint(os.getcwd())\n")
    p = subprocess.run([GYRO, "run", "-q", "--json", "rel.json", "--trace", "rel.trace.json", "app.py"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=HANG_S)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "rel.json").exists() and (tmp_path / "rel.trace.json").exists()
    assert not (tmp_path / "sub" / "rel.json").exists()


def test_script_as_output_is_refused(tmp_path):
    app = write(tmp_path, "app.py", "print('hi')\n")
    p = subprocess.run([GYRO, "run", "--stream", "app.py", "app.py"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=HANG_S)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr
    assert app.read_text() == "print('hi')\n" and p.stdout == ""


def _start(tmp_path: Path, source: str) -> tuple[subprocess.Popen, Path]:
    write(tmp_path, "srv.py", source)
    out = tmp_path / "s.json"
    p = subprocess.Popen([GYRO, "run", "-q", "--json", str(out), "srv.py"], cwd=tmp_path, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    assert p.stdout.readline().strip() == "ready"
    return p, out


SERVER = ("import time, sys\n"
          "def spin(t):\n    end = time.time() + t\n    while time.time() < end:\n        pass\n"
          "print('ready', flush=True)\nspin(0.5)\ntime.sleep(60)\n")


def _child_of(pid: int) -> int:
    for _ in range(100):
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if kids:
            return int(kids[0])
        time.sleep(0.05)
    raise AssertionError("no child")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGUSR1, signal.SIGALRM])
def test_signal_to_gyroscope_is_forwarded_and_session_written(tmp_path, sig):
    """(USR1, ALRM: until this round they ended gyroscope, and the program ran on, orphaned.)"""
    p, out = _start(tmp_path, SERVER)
    time.sleep(0.8)
    p.send_signal(sig)
    p.wait(timeout=HANG_S)
    assert p.returncode == -sig, p.stderr.read()
    doc = json.loads(out.read_text())
    assert doc["signal"] == sig and doc["exit_code"] == 128 + sig
    assert any(e["function"] == "spin" for e in doc["entities"])


def test_program_killed_or_os_exit_session_written(tmp_path):
    p, out = _start(tmp_path, SERVER)
    time.sleep(0.8)
    os.kill(_child_of(p.pid), signal.SIGKILL)
    p.wait(timeout=HANG_S)
    assert p.returncode == -signal.SIGKILL
    doc = json.loads(out.read_text())
    assert doc["signal"] == signal.SIGKILL and any(e["function"] == "spin" for e in doc["entities"])


HANDLERS = """\
import signal, time
got = []
for name in ("SIGUSR1", "SIGUSR2", "SIGWINCH", "SIGRTMIN"):
    signal.signal(getattr(signal, name), lambda s, f: got.append(signal.Signals(s).name))
print("ready", flush=True)
t = time.time()
while time.time() - t < 1.5 and len(got) < 4:
    time.sleep(0.01)
print("got", sorted(got))
"""


def test_signals_the_program_handles_reach_it_as_under_python(tmp_path):
    p, out = _start(tmp_path, HANDLERS)
    for sig in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH, signal.SIGRTMIN):
        p.send_signal(sig)
        time.sleep(0.05)
    stdout, stderr = p.communicate(timeout=HANG_S)
    assert p.returncode == 0, stderr
    assert stdout == "got ['SIGRTMIN', 'SIGUSR1', 'SIGUSR2', 'SIGWINCH']\n"


SIGWAIT = """\
import os, signal, threading
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1, signal.SIGUSR2})
t = threading.Thread(target=lambda: None); t.start(); t.join()   # (a thread of its own: it inherits the mask)
os.kill(os.getpid(), signal.SIGUSR1)
signal.raise_signal(signal.SIGUSR2)
print("waited", signal.Signals(signal.sigwait({signal.SIGUSR1})).name,
      signal.Signals(signal.sigwait({signal.SIGUSR2})).name)
"""


def test_a_signal_the_program_blocked_waits_for_it_as_under_python(tmp_path):
    """A process-directed signal goes to a thread that does not block it: under python the
    program's own threads only. The bridge's shipper thread blocks every signal (until stop 26
    it took SIGUSR1 that the program had blocked to sigwait() for it, and the program died)."""
    write(tmp_path, "sigwait.py", SIGWAIT)
    want, got, _ = both(tmp_path, ["sigwait.py"])
    assert (got.returncode, got.stdout, got.stderr) == (want.returncode, want.stdout, want.stderr)
    assert want.stdout == "waited SIGUSR1 SIGUSR2\n"


FORKED_FROM_THREADS = """\
import os, sys, threading, time
statuses = []
def f(how):
    pid = os.fork()
    if pid == 0:
        if how == "exit":
            sys.exit(3)          # SystemExit in a thread: the thread ends, and with it the child
        if how == "thread":
            t = threading.Thread(target=time.sleep, args=(0.1,)); t.start()
        return                   # the thread's function returns
    _, st = os.waitpid(pid, 0)
    statuses.append((how, os.waitstatus_to_exitcode(st)))
for how in ("exit", "return", "thread"):
    th = threading.Thread(target=f, args=(how,)); th.start(); th.join()
print(sorted(statuses))
"""


def test_a_child_forked_from_a_thread_ends_with_its_thread_as_under_python(tmp_path):
    """A process forked from a thread has that thread as its only one: when its function returns
    (or raises SystemExit) python's process ends. The bridge's shipper thread kept such a child
    alive for ever, a zombie leader with one live thread, and the parent hung in waitpid (until
    stop 26); it now sees it is the last thread and ends."""
    write(tmp_path, "forks.py", FORKED_FROM_THREADS)
    # (fork's DeprecationWarning, a thread running, is left out)
    want, got, _ = both(tmp_path, ["forks.py"], env={"PYTHONWARNINGS": "ignore"})
    assert (got.returncode, got.stdout, got.stderr) == (want.returncode, want.stdout, want.stderr)
    assert want.stdout == "[('exit', 0), ('return', 0), ('thread', 0)]\n"


FORKING_THREADS = """\
import os, threading
def f():
    for _ in range(10):
        pid = os.fork()
        if pid == 0:
            os._exit(7)
        os.waitpid(pid, 0)
ts = [threading.Thread(target=f) for _ in range(4)]
[t.start() for t in ts]; [t.join() for t in ts]
print("done")
"""


def test_threads_that_fork_at_once_run_as_under_python(tmp_path):
    """Each fork stops the bridge's shipper and joins it: two threads forking at once joined the
    same thread twice and hung (12 of 12 runs of this program until stop 26)."""
    write(tmp_path, "forking.py", FORKING_THREADS)
    want, got, _ = both(tmp_path, ["forking.py"], env={"PYTHONWARNINGS": "ignore"})
    assert (got.returncode, got.stdout, got.stderr) == (want.returncode, want.stdout, want.stderr) == (0, "done\n", "")


STD_FDS = """\
import os, sys
f = open(sys.argv[1], "w")
f.write(repr((sys.stdin is None, sys.stdout is None, sys.stderr is None, f.fileno())))
"""


@pytest.mark.parametrize("closed", ["0", "1", "2", "0 1 2"])
def test_a_standard_descriptor_closed_for_gyroscope_is_closed_for_the_program(tmp_path, closed):
    """`gyroscope run app.py >&-`: python gives the program sys.stdout None, and its first file
    fd 1. Until stop 26 the program got the gate's pipe as fd 1 (sys.stdout a real file), then
    its own first file there: its print()s went into that file."""
    script = tmp_path / "fds.py"
    script.write_text(STD_FDS)
    redirections = " ".join(f"{fd}>&-" if fd != "0" else "0<&-" for fd in closed.split())
    seen = []
    for cmd in (f"{PY} {script}", f"{PY} -m gyroscope.agent.cli run -q {script}"):
        out = tmp_path / "seen.txt"
        p = subprocess.run(["sh", "-c", f"exec {redirections}; exec {cmd} {out}"], capture_output=True, text=True,
                           timeout=HANG_S, cwd=Path.cwd())
        seen.append((p.returncode, out.read_text()))
    assert seen[0] == seen[1]


def test_a_crashing_programs_core_file_is_its_own(tmp_path):
    """gyroscope dies of the program's SIGSEGV as python would, without dumping a core of its
    own over the program's (same folder, same name: 12 of 12 runs until stop 26)."""
    pattern = Path("/proc/sys/kernel/core_pattern").read_text().strip()
    if pattern.startswith("|") or "/" in pattern:
        pytest.skip(f"cores go elsewhere here: {pattern}")
    (tmp_path / "segv.py").write_text("import ctypes\nctypes.string_at(0)\n")
    p = subprocess.run(["sh", "-c", f"ulimit -c unlimited; exec {PY} -m gyroscope.agent.cli run -q segv.py"],
                       cwd=tmp_path, capture_output=True, timeout=HANG_S)
    assert p.returncode == -signal.SIGSEGV
    cores = [f for f in tmp_path.iterdir() if f.name.startswith("core")]
    if not cores:
        pytest.skip("no core file written here (a hard core limit of 0?)")
    for core in cores:
        head = core.read_bytes()[:1 << 16]   # the notes: the dumped process's command line
        assert b"segv.py" in head and b"-m gyroscope.agent.cli" not in head


GROUP_KILLER = """\
import os, signal, time
n = []
signal.signal(signal.SIGTERM, lambda s, f: n.append(s))
os.killpg(0, signal.SIGTERM)     # its whole process group: gyroscope, when it leads the group
time.sleep(0.3)
print("handled", len(n))
"""


def test_a_program_that_signals_its_own_group_gets_the_signal_once(tmp_path):
    """Started as a job (gyroscope leads the group), the program's `os.killpg(0, SIGTERM)` reaches
    the program and gyroscope; gyroscope forwarded its copy, and the handler ran twice (5 of 5
    runs until stop 26). A signal from the program (or a process it started) is never forwarded."""
    script = tmp_path / "killpg.py"
    script.write_text(GROUP_KILLER)
    runs = [subprocess.run(cmd, capture_output=True, text=True, timeout=HANG_S, start_new_session=True)
            for cmd in ([PY, str(script)], [PY, "-m", "gyroscope.agent.cli", "run", "-q", str(script)])]
    assert [(p.returncode, p.stdout, p.stderr) for p in runs] == [(0, "handled 1\n", "")] * 2


SIGCOUNT = """\
import signal, time
n = [0]
def on_term(s, f):
    n[0] += 1
signal.signal(signal.SIGTERM, on_term)
t = time.time()
while time.time() - t < 1.5:
    time.sleep(0.01)
print("sigterms", n[0])
"""


@pytest.mark.parametrize("how", ["kill", "timeout"])
def test_a_group_leading_parent_signals_like_it_would_python(tmp_path, how):
    """A script that leads its process group and kills gyroscope by pid: the program gets it.
    `timeout` (signals its child, then its group): the program gets it once, as under python."""
    prog = write(tmp_path, "sigcount.py", SIGCOUNT)
    if how == "kill":
        script = '"$1" $2 "$3" & g=$!; sleep 0.6; kill -TERM $g; wait $g; echo "rc=$?"'
    else:
        script = 'timeout 0.6 "$1" $2 "$3"; echo "rc=$?"'
    got = {}
    for name, cmd in (("python", [PY, "", str(prog)]), ("gyroscope", [GYRO, "run -q", str(prog)])):
        p = subprocess.run(["bash", "-c", script, "sh", *cmd], capture_output=True, text=True,
                           timeout=HANG_S, start_new_session=True)    # bash leads its own group
        got[name] = p.stdout
    assert got["gyroscope"] == got["python"], got
    assert "sigterms 1" in got["python"]


def test_agent_cpu_leaves_out_what_ran_before_in_the_same_process(tmp_path):
    """A shell may exec gyroscope in the process that ran the commands before it (`bash -c 'make
    && gyroscope run app.py'`): their CPU, in that process's RUSAGE_CHILDREN, is not gyroscope's."""
    prog = write(tmp_path, "app.py", "import time\ntime.sleep(0.3)\nprint('hi')\n")
    out = tmp_path / "s.json"
    burn = f"{PY} -c 'import time; t = time.process_time()\nwhile time.process_time() - t < 1.0: pass'"
    p = subprocess.run(["bash", "-c", f"{burn} && exec {GYRO} run -q --json {out} {prog}"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=HANG_S)
    assert p.returncode == 0 and p.stdout == "hi\n", p.stderr
    assert json.loads(out.read_text())["agent"]["cpu_s"] < 0.8   # the burner alone took 1.0 s
