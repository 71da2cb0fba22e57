"""The return path: under `gyroscope run`, the program reads gyroscope's live decisions
(gyroscope.schedulers.live) while it runs; outside gyroscope it reads none."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

PY = sys.executable
GYRO = str(Path(PY).with_name("gyroscope"))

PROGRAM = """\
import threading, time
from gyroscope.schedulers import live
lock = threading.Lock()
def work():
    end = time.time() + 4
    while time.time() < end:
        with lock:
            time.sleep(0.002)
ts = [threading.Thread(target=work) for _ in range(4)]
[t.start() for t in ts]
got = []
deadline = time.time() + 4
while time.time() < deadline and not got:
    time.sleep(0.05)
    got = [(d["action"], d["function"], d["kind"]) for d in live.decisions()]
[t.join() for t in ts]
print(live.version() > 0, got)
"""


@pytest.mark.slow
def test_live_decisions_reach_the_program(tmp_path):
    app = tmp_path / "app.py"
    app.write_text(PROGRAM)
    p = subprocess.run([GYRO, "run", "-q", str(app)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("True [('mitigate_contention', 'work', 'lock')"), p.stdout
    bare = subprocess.run([PY, str(app)], capture_output=True, text=True, timeout=120)
    assert bare.stdout.strip() == "False []"


POOL_PROGRAM = """\
import json, sys, threading, time
from concurrent.futures import wait
from gyroscope.schedulers import CoherenceExecutor, live

LOCK = threading.Lock()
SHARED = {}

def write_shared(i):
    with LOCK:
        SHARED[i % 8] = SHARED.get(i % 8, 0) + 1
        time.sleep(0.002)
    return i

def fetch(i):
    time.sleep(0.002)
    return -i

ex = CoherenceExecutor(4)
deadline, i, after = time.time() + float(sys.argv[1]), 0, 0
while time.time() < deadline and after < 3:     # until the lane has run a few batches
    futs = [ex.submit(write_shared if k % 2 == 0 else fetch, i + k) for k in range(40)]
    assert [f.result() for f in futs] == [i + k if k % 2 == 0 else -(i + k) for k in range(40)]
    i += 40
    after += bool(ex.actions)
ex.shutdown()
print(json.dumps({"version": live.version(), "actions": ex.actions}))
"""


@pytest.mark.slow
def test_executor_lanes_are_actions_in_the_session(tmp_path):
    """Under `gyroscope run`, a pool whose tasks queue on one lock: the decision arrives live, the
    CoherenceExecutor creates a lane, and the session JSON has one route_to_lane Action for it with
    the lock, the tasks and the final count of tasks routed (shipped at the program's exit)."""
    app = tmp_path / "pool.py"
    app.write_text(POOL_PROGRAM)
    out = tmp_path / "s.json"
    p = subprocess.run([GYRO, "run", "-q", "--json", str(out), str(app), "20"], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    prog = json.loads(p.stdout)
    assert prog["version"] > 0, "no live decisions reached the program"
    (mine,) = prog["actions"]
    assert mine["action"] == "route_to_lane" and mine["routed"] > 0
    doc = json.loads(out.read_text())
    lanes = [a for a in doc["actions"] if a["action"] == "route_to_lane"]
    assert len(lanes) == 1, doc["actions"]
    (a,) = lanes
    lane = a["lane"]
    assert lane["entity"]["kind"] == "lock" and lane["entity"]["function"] == "write_shared"
    assert lane["entity"]["file"] == str(app.resolve()) and lane["entity"]["line"] > 0
    assert lane["routed"] == mine["routed"] and lane["tasks"] == mine["tasks"]
    assert any(t.startswith("write_shared (") for t in lane["tasks"])
    assert not any(t.startswith("fetch (") for t in lane["tasks"])
    assert (a["from"], a["to"], lane["limit"], lane["workers"]) == (4, 1, 1, 4)
    assert a["pid"] == doc["pid"] and a["ok"] and 0 < a["t_s"] < doc["duration_s"]
    assert "write_shared" in a["reason"]
    decided = [d for d in doc["decisions"] if d["action"] == "mitigate_contention" and d["function"] == "write_shared"]
    assert decided
    bare = subprocess.run([PY, str(app), "1"], capture_output=True, text=True, timeout=120)
    assert bare.returncode == 0, bare.stderr
    assert json.loads(bare.stdout) == {"version": 0, "actions": []}


PROTECT_PROGRAM = """\
import json, sys, threading, time
from concurrent.futures import wait
from gyroscope.schedulers import CoherenceExecutor, live

log_lock = threading.Lock()
stop = threading.Event()

def crunch(n):
    s = 0
    for i in range(n):
        s += (i * i) % 7
    return s, threading.get_native_id()

def append_log():
    while not stop.is_set():
        with log_lock:
            time.sleep(0.001)

writers = [threading.Thread(target=append_log) for _ in range(3)]
[t.start() for t in writers]
ex = CoherenceExecutor(2)
deadline = time.time() + float(sys.argv[1])
protected = None
while time.time() < deadline and protected is None:
    wait([ex.submit(crunch, 200_000) for _ in range(4)])
    for d in live.decisions():
        if d.get("action") == "specialize_hot_loop" and d.get("function") == "crunch" and d.get("protected_threads"):
            protected = d["protected_threads"]
after = [f.result()[1] for f in [ex.submit(crunch, 20_000) for _ in range(20)]]
stop.set()
[t.join() for t in writers]
ex.shutdown()
print(json.dumps({"protected": protected, "ran_on": sorted(set(after)), "workers": sorted(ex._natives),
                  "actions": ex.actions}))
"""


@pytest.mark.slow
def test_act_priorities_sends_protected_threads_and_the_executor_uses_them(tmp_path):
    """`--act priorities`: the hot loop's decision reaches the program with "protected_threads"
    (its threads, which the actuator left at normal priority while lowering the others); the
    executor then runs the loop's tasks only there, and the session has that Action."""
    app = tmp_path / "protect.py"
    app.write_text(PROTECT_PROGRAM)
    out = tmp_path / "s.json"
    p = subprocess.run([GYRO, "run", "-q", "--act", "priorities", "--json", str(out), str(app), "20"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    prog = json.loads(p.stdout)
    protected = prog["protected"]
    assert protected, "no specialize_hot_loop decision with protected_threads reached the program"
    assert set(protected) <= set(prog["workers"])                  # the hot loop ran on executor workers
    assert set(prog["ran_on"]) <= set(protected)                    # afterwards: only on protected ones
    doc = json.loads(out.read_text())
    lowered = {a["thread"] for a in doc["actions"] if a["action"] == "lower_priority" and a["ok"]}
    assert lowered and not lowered & set(protected)
    (act,) = [a for a in doc["actions"] if a["action"] == "run_on_protected_threads"]
    assert act["lane"]["threads"] == sorted(protected) and act["lane"]["entity"]["function"] == "crunch"
    assert act["lane"]["routed"] == prog["actions"][0]["routed"] >= 20
    hot = [d for d in doc["decisions"] if d["action"] == "specialize_hot_loop" and d["function"] == "crunch"]
    assert hot
    plain = subprocess.run([GYRO, "run", "-q", str(app), "3"], capture_output=True, text=True, timeout=120)
    assert plain.returncode == 0, plain.stderr
    assert json.loads(plain.stdout)["protected"] is None            # without --act: never sent
