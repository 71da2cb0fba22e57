"""End to end: `gyroscope run` behaves like `python` and sees what the labeled workloads contain."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
GYRO = str(BIN / "gyroscope")
PY = sys.executable
SHARED = Path(os.environ.get("GYROSCOPE_SHARED", Path(__file__).resolve().parents[3] / "shared"))
WORKLOADS = SHARED / "workloads"
MANIFEST = json.loads((WORKLOADS / "MANIFEST.json").read_text())["workloads"]

# script -> (function with the top CPU share, function with the largest wait) among its own entities
EXPECT = {
    "hot_loop_numeric.py": ("mandel", None),
    "hot_loop_method.py": ("Grid.relax", None),
    "lock_contention_counter.py": (None, "worker"),
    "condition_contention.py": (None, "player"),
    "mixed_hot_and_lock.py": ("crunch", "append_log"),
}
# the final counter depends on the order in which threads get the lock
NONDETERMINISTIC = {"lock_contention_counter.py", "polling_idle.py"}


def run(cmd: list[str], cwd: Path, stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, input=stdin, capture_output=True, text=True, timeout=timeout)


def run_both(tmp_path: Path, script: Path, args: list[str] = (), stdin: str | None = None):
    bare = run([PY, str(script), *args], script.parent, stdin)
    out = tmp_path / "session.json"
    gyro = run([GYRO, "run", "--json", str(out), str(script), *args], script.parent, stdin)
    doc = json.loads(out.read_text()) if out.exists() else None
    return bare, gyro, doc


@pytest.mark.slow
@pytest.mark.parametrize("entry", MANIFEST, ids=[w["script"] for w in MANIFEST])
def test_workload(tmp_path, entry):
    script = WORKLOADS / entry["script"]
    bare, gyro, doc = run_both(tmp_path, script)
    assert gyro.returncode == bare.returncode == 0, gyro.stderr
    if entry["script"] in NONDETERMINISTIC:
        assert gyro.stdout.strip().isdigit() and bare.stdout.strip().isdigit()
    else:
        assert gyro.stdout == bare.stdout
    assert doc is not None and doc["schema"] == "gyroscope.session/2"
    assert doc["exit_code"] == 0 and doc["source"] == "run" and doc["windows"] >= 1
    assert doc["counters"]["samples"] > 0 and doc["agent"]["cpu_s"] > 0
    own = [e for e in doc["entities"] if Path(e["file"]).name == entry["script"]]
    assert own, "no entity of the program's own code"
    assert all("site-packages" not in e["file"] for e in doc["entities"]
               if e["kind"] in ("loop",) and not e["measurements"].get("library"))
    hot, waiter = EXPECT.get(entry["script"], (None, None))
    if hot:
        top = max(own, key=lambda e: e["measurements"]["cpu_share"])
        assert top["function"] == hot, [(e["function"], e["measurements"]["cpu_share"]) for e in own]
        assert top["measurements"]["cpu_share"] > 0.5
        loops = [e for e in own if e["kind"] == "loop" and e["function"] == hot]
        assert loops and max(e["measurements"]["iterations"] for e in loops) > 10_000
        assert max(e["measurements"]["iterations_per_s"] for e in loops) > 100_000
    if waiter:
        top = max(own, key=lambda e: e["measurements"]["wait_s_total"])
        m = top["measurements"]
        # an exact (profiled) lock is its creation site; the function that waits is its top call site
        where = m["call_sites"][0]["function"] if m.get("exact") else top["function"]
        assert where == waiter and top["kind"] == "lock", top
        assert m["waiting_threads"] >= 2 and m["wait_s_total"] > 0.2 and m["waits"] >= 1
        assert top["slcp"]["step"] > 0
    if hot and waiter:
        # spec Appendix B.1: the hot loop repeats the same words (concentrated chirality), the
        # contended lock sees varied words (dispersed chirality)
        loop = max((e for e in own if e["kind"] == "loop" and e["function"] == hot),
                   key=lambda e: e["measurements"]["cpu_share"])
        lock = max(own, key=lambda e: e["measurements"]["wait_s_total"])
        assert loop["slcp"]["chi_support_ratio"] < lock["slcp"]["chi_support_ratio"]
    thread_names = {t["name"] for t in doc["processes"][0]["threads"]}
    assert not any(n.startswith("gyroscope") for n in thread_names)


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


@pytest.mark.slow
def test_uncaught_exception_like_python(tmp_path):
    script = write(tmp_path, "boom.py", "def f():\n    raise ValueError('bad value')\n\nprint('before')\nf()\n")
    bare, gyro, doc = run_both(tmp_path, script)
    assert bare.returncode == gyro.returncode == 1
    assert gyro.stdout == bare.stdout == "before\n"
    assert gyro.stderr.startswith(bare.stderr), gyro.stderr   # same traceback, then the summary
    assert "gyroscope" not in bare.stderr and "runpy" not in gyro.stderr
    assert doc["exit_code"] == 1


@pytest.mark.slow
def test_sys_exit_codes(tmp_path):
    for body, code in (("import sys\nsys.exit(3)\n", 3), ("raise SystemExit('bye')\n", 1), ("import sys\nsys.exit()\n", 0)):
        script = write(tmp_path, "ex.py", body)
        bare, gyro, doc = run_both(tmp_path, script)
        assert bare.returncode == gyro.returncode == code
        assert doc["exit_code"] == code
        if code == 1:
            assert gyro.stderr.startswith("bye\n")


@pytest.mark.slow
def test_missing_script_one_line_exit_2(tmp_path):
    p = run([GYRO, "run", str(tmp_path / "nope.py")], tmp_path)
    assert p.returncode == 2
    assert len(p.stderr.strip().splitlines()) == 1 and "nope.py" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.slow
def test_argv_path_main_and_stdin(tmp_path):
    write(tmp_path, "helper_mod.py", "VALUE = 42\n")
    script = write(tmp_path, "show.py", (
        "import sys, helper_mod\n"
        "print(sys.argv)\nprint(__name__, sys.path[0] == __import__('os').path.dirname(__file__))\n"
        "print(helper_mod.VALUE, sys.stdin.read().upper())\n"))
    bare, gyro, doc = run_both(tmp_path, script, ["a", "--json", "b"], stdin="hello\n")
    assert gyro.returncode == bare.returncode == 0, gyro.stderr
    assert gyro.stdout == bare.stdout
    assert "['" in gyro.stdout and "'--json', 'b']" in gyro.stdout and "__main__ True" in gyro.stdout
    assert doc["command"][-3:] == ["a", "--json", "b"]


@pytest.mark.slow
def test_module_mode(tmp_path):
    write(tmp_path, "pkg/__init__.py", "")
    write(tmp_path, "pkg/tool.py", (
        "import sys\n"
        "def work(n):\n    s = 0\n    for i in range(n):\n        s += i\n    return s\n"
        "if __name__ == '__main__':\n    print(sys.argv[1:], work(300000))\n    sys.exit(4)\n"))
    bare = run([PY, "-m", "pkg.tool", "x", "--json", "y"], tmp_path)
    out = tmp_path / "m.json"
    gyro = run([GYRO, "run", "--json", str(out), "-m", "pkg.tool", "x", "--json", "y"], tmp_path)
    assert bare.returncode == gyro.returncode == 4, gyro.stderr
    assert gyro.stdout == bare.stdout
    doc = json.loads(out.read_text())
    assert any(e["kind"] == "loop" and e["function"] == "work" for e in doc["entities"])
    missing = run([GYRO, "run", "-m", "no_such_module_xyz"], tmp_path)
    assert missing.returncode == 1 and len(missing.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_keyboard_interrupt_like_python(tmp_path):
    script = write(tmp_path, "ki.py", "print('start', flush=True)\nraise KeyboardInterrupt\n")
    bare, gyro, doc = run_both(tmp_path, script)
    assert gyro.returncode == bare.returncode != 0
    assert gyro.stdout == bare.stdout
    assert "KeyboardInterrupt" in gyro.stderr and gyro.stderr.startswith(bare.stderr)
    assert doc is not None and doc["exit_code"] == 130


@pytest.mark.slow
def test_threads_left_running_and_asyncio(tmp_path):
    script = write(tmp_path, "late.py", (
        "import threading, time, asyncio\n"
        "def late():\n    time.sleep(0.3)\n    print('late thread done', flush=True)\n"
        "async def tick(n):\n    for i in range(n):\n        await asyncio.sleep(0.001)\n    return n\n"
        "async def main():\n    return sum(await asyncio.gather(*(tick(20) for _ in range(5))))\n"
        "threading.Thread(target=late).start()\nprint(asyncio.run(main()), flush=True)\n"))
    bare, gyro, doc = run_both(tmp_path, script)
    assert gyro.returncode == bare.returncode == 0, gyro.stderr
    assert gyro.stdout == bare.stdout == "100\nlate thread done\n"
    tick = [e for e in doc["entities"] if e["function"] == "tick"]
    assert tick and sum(e["measurements"]["calls"] for e in tick) >= 5   # coroutine resumes seen


@pytest.mark.slow
def test_program_may_use_cprofile(tmp_path):
    """cProfile takes sys.monitoring's PROFILER_ID in 3.12: gyroscope must leave it free."""
    script = write(tmp_path, "prof.py", "import cProfile\ncProfile.run('sum(range(1000))', sort='calls')\nprint('ok')\n")
    bare, gyro, doc = run_both(tmp_path, script)
    assert bare.returncode == gyro.returncode == 0, gyro.stderr
    assert "function calls" in gyro.stdout and gyro.stdout.endswith("ok\n")
    assert not doc["errors"]


@pytest.mark.slow
def test_cpu_bound_threads_share_the_cpu(tmp_path):
    # both threads spin for the same wall time (0.8 s), so each should get about half the CPU
    script = write(tmp_path, "cpu3.py", (
        "import threading, time\n"
        "END = time.monotonic() + 0.8\n"
        "def spin_a():\n    s = i = 0\n    while time.monotonic() < END:\n        s += i * i\n        i += 1\n    return s\n"
        "def spin_b():\n    s = i = 0\n    while time.monotonic() < END:\n        s ^= i\n        i += 1\n    return s\n"
        "ts = [threading.Thread(target=f) for f in (spin_a, spin_b)]\n"
        "for t in ts:\n    t.start()\nfor t in ts:\n    t.join()\nprint('done')\n"))
    bare, gyro, doc = run_both(tmp_path, script)
    assert gyro.returncode == 0 and gyro.stdout == bare.stdout
    share = {}
    for e in doc["entities"]:
        share[e["function"]] = share.get(e["function"], 0) + e["measurements"]["cpu_share"]
    assert share.get("spin_a", 0) > 0.2 and share.get("spin_b", 0) > 0.2, share


@pytest.mark.slow
def test_agent_cpu_is_gyroscopes_own(tmp_path):
    """agent.cpu_s is gyroscope's CPU (its process and py-spy's), never the program's: the
    program, reaped by gyroscope, is one of its children in getrusage(RUSAGE_CHILDREN), and was
    counted there until this was checked (agent cpu 1.02 s for a 0.9 s loop)."""
    script = tmp_path / "burn.py"
    script.write_text("import time\nt = time.process_time()\nwhile time.process_time() - t < 1.0:\n    pass\n"
                      "print(round(time.process_time(), 3))\n")
    out = tmp_path / "s.json"
    p = run([GYRO, "run", "-q", "--json", str(out), str(script)], tmp_path)
    assert p.returncode == 0, p.stderr
    program_cpu = float(p.stdout)
    agent_cpu = json.loads(out.read_text())["agent"]["cpu_s"]
    assert 0 < agent_cpu < 0.6 * program_cpu, (agent_cpu, program_cpu)
