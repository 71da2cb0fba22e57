"""The return path: under `gyroscope run`, the program reads gyroscope's live decisions
(gyroscope.schedulers.live) while it runs; outside gyroscope it reads none."""
from __future__ import annotations

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
