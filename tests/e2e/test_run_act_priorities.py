"""`gyroscope run --act priorities`: lowers competing threads while a hot loop runs, restores at exit."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SHARED = Path(os.environ.get("GYROSCOPE_SHARED", Path(__file__).resolve().parents[3] / "shared"))
GYRO = str(Path(sys.executable).with_name("gyroscope"))


@pytest.mark.slow
def test_act_priorities_lowers_and_restores(tmp_path):
    script = SHARED / "workloads" / "mixed_hot_and_lock.py"
    out = tmp_path / "s.json"
    bare = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    run = subprocess.run([GYRO, "run", "-q", "--act", "priorities", "--json", str(out), str(script)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == bare.returncode == 0
    assert run.stdout == bare.stdout
    result = json.loads(out.read_text())
    lowered = [a for a in result["actions"] if a["action"] == "lower_priority" and a["ok"]]
    restores = {a["thread"]: a for a in result["actions"] if a["action"] == "restore_priority"}
    assert lowered, result["actions"]
    hot = [d for d in result["decisions"] if d["action"] == "specialize_hot_loop"]
    assert hot and all("crunch" in a["reason"] for a in lowered)
    for a in lowered:  # every change is either restored or recorded as impossible (thread gone)
        r = restores[a["thread"]]
        assert r["ok"] or r["error"] == "thread exited"


def test_act_rejects_unknown_actuator():
    run = subprocess.run([GYRO, "run", "--act", "nonsense", "x.py"], capture_output=True, text=True)
    assert run.returncode == 2
    assert "invalid choice" in run.stderr and "Traceback" not in run.stderr
