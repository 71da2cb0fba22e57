"""End to end: `run` and `attach` on the same hot-loop workload give profiles whose top functions
agree, and the session JSON carries the stacks (`gyroscope report S.json --pprof` from it)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from gyroscope.agent.profiles.store import StackStore

PY = sys.executable
GYRO = [PY, "-m", "gyroscope.agent.cli"]
PROJECT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("GYROSCOPE_SHARED", "/work/shared"))
WORKLOAD = SHARED / "workloads" / "hot_loop_method.py"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def _top_running_leaf(profile: dict) -> str:
    store = StackStore.from_json(profile)
    per_fn: dict[str, int] = {}
    for r in store.iter_rows():
        if r.state == "run" and r.frames:
            per_fn[r.frames[0].function] = per_fn.get(r.frames[0].function, 0) + r.samples
    assert per_fn, "no running samples"
    return max(per_fn, key=per_fn.get)


def _attach(tmp_path: Path) -> dict:
    out = tmp_path / "attach.json"
    target = subprocess.Popen([PY, str(WORKLOAD)], cwd=WORKLOAD.parent, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.2)
        gyro = subprocess.run([*GYRO, "attach", str(target.pid), "--json", str(out), "-q"], cwd=PROJECT,
                              capture_output=True, text=True, timeout=120)
    finally:
        target.wait(timeout=120)
    assert gyro.returncode == 0, gyro.stderr
    return json.loads(out.read_text())


def test_run_and_attach_profiles_agree(tmp_path):
    if not WORKLOAD.exists():
        pytest.skip("shared workloads are not available")
    out = tmp_path / "run.json"
    proc = subprocess.run([*GYRO, "run", "--json", str(out), "-q", str(WORKLOAD)], cwd=PROJECT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    run = json.loads(out.read_text())
    attach = _attach(tmp_path)
    assert attach["profile"]["totals"]["samples"] > 0
    top_attach = _top_running_leaf(attach["profile"])
    assert top_attach.endswith("relax"), top_attach
    assert run["profile"]["totals"]["samples"] > 0   # run samples from outside, as attach does
    assert _top_running_leaf(run["profile"]) == top_attach
    # the saved session carries the stacks: pprof from it names the same function first
    go = shutil.which("go")
    if go is None:
        pytest.skip("`go` is not installed (Debian package golang-go)")
    pp = tmp_path / "run.pb.gz"
    rep = subprocess.run([*GYRO, "report", str(out), "--pprof", str(pp)], cwd=PROJECT, capture_output=True,
                         text=True, timeout=60)
    assert rep.returncode == 0, rep.stderr
    top = subprocess.run([go, "tool", "pprof", "-top", str(pp)], capture_output=True, text=True, timeout=120)
    flat = [line.split() for line in top.stdout.splitlines() if "%" in line and line.split()[0][0].isdigit()]
    assert flat[0][-1].endswith("relax"), top.stdout


def test_attach_sends_otlp_profiles(tmp_path, monkeypatch):
    """`attach --otlp` against a real receiver: the OTLP profiles decode and their hottest running leaf
    is the workload's hot function; the session records what was sent."""
    from tests.otlp_receiver import OtlpReceiver, profiles

    if not WORKLOAD.exists():
        pytest.skip("shared workloads are not available")
    out = tmp_path / "attach.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    with OtlpReceiver() as rx:
        target = subprocess.Popen([PY, str(WORKLOAD)], cwd=WORKLOAD.parent, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        try:
            time.sleep(0.2)
            gyro = subprocess.run([*GYRO, "attach", str(target.pid), "--json", str(out), "-q", "--otlp", rx.endpoint],
                                  cwd=PROJECT, capture_output=True, text=True, timeout=120, env=env)
        finally:
            target.wait(timeout=120)
        got = profiles(rx)
    assert gyro.returncode == 0, gyro.stderr
    session = json.loads(out.read_text())
    assert session["export"]["otlp"]["profiles"]["ok"], session["export"]["otlp"]
    samples = next(p for p in got if p["sample_type"] == "samples")
    leaf: dict[str, int] = {}
    for s in samples["samples"]:
        if s["attrs"].get("gyroscope.thread.state") == "run":
            leaf[s["frames"][0][0]] = leaf.get(s["frames"][0][0], 0) + s["value"][0]
    assert max(leaf, key=leaf.get).endswith("relax"), leaf
    assert {s["attrs"]["process.pid"] for s in samples["samples"]} == {target.pid}


def test_continuous_attach_exports_a_profile_per_report_cycle(tmp_path):
    """`attach --continuous --otlp`: profiles arrive while the service runs (one per report cycle),
    not only at the end; SIGTERM ends the session with its file written."""
    from tests.otlp_receiver import OtlpReceiver

    service = tmp_path / "svc.py"
    service.write_text("import time\ndef spin():\n    end = time.time() + 0.05\n    while time.time() < end:\n"
                       "        pass\nwhile True:\n    spin()\n    time.sleep(0.01)\n")
    out = tmp_path / "c.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    with OtlpReceiver() as rx:
        target = subprocess.Popen([PY, str(service)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(0.3)
            gyro = subprocess.Popen([*GYRO, "attach", str(target.pid), "--continuous", "--json", str(out), "-q",
                                     "--otlp", rx.endpoint], cwd=PROJECT, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, env=env)
            deadline = time.time() + 30
            while time.time() < deadline and len(rx.requests["/v1development/profiles"]) < 2:
                time.sleep(0.2)
            during = len(rx.requests["/v1development/profiles"])
            gyro.send_signal(signal.SIGTERM)
            _, err = gyro.communicate(timeout=60)
        finally:
            target.kill()
            target.wait()
    assert gyro.returncode == 0, err
    assert during >= 2                     # sent while the service ran, cycle after cycle
    session = json.loads(out.read_text())
    assert session["export"]["otlp"]["profiles_per_cycle"]["sent"] >= 2
