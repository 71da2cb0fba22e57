"""End to end: `gyroscope attach PID` on the labeled workloads, each started as its own process,
attached ~0.2 s after it starts and followed until it exits."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

PY = sys.executable
GYRO = [PY, "-m", "gyroscope.agent.cli"]
PROJECT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("GYROSCOPE_SHARED", Path(__file__).resolve().parents[3] / "shared"))
WORKLOADS = SHARED / "workloads"
MANIFEST = json.loads((WORKLOADS / "MANIFEST.json").read_text())["workloads"]


def expected(entry: dict, action: str) -> str | None:
    return next((e["function"] for e in entry["expect"] if e["action"] == action), None)


def attach_to(script: Path, out: Path, *extra: str) -> tuple[subprocess.CompletedProcess, subprocess.Popen]:
    target = subprocess.Popen([PY, str(script)], cwd=script.parent, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        # attach 0.2 s after the start, or as soon as the program runs its threads if sooner:
        # mixed_hot_and_lock's hot thread lives only ~0.5 s and gyroscope + py-spy record need
        # ~0.2 s before their first sample; attaching later makes that test a race, not a check
        deadline = time.monotonic() + 0.2
        while time.monotonic() < deadline and len(os.listdir(f"/proc/{target.pid}/task")) < 2:
            time.sleep(0.005)
        gyro = subprocess.run([*GYRO, "attach", str(target.pid), "--json", str(out), *extra], cwd=PROJECT,
                              capture_output=True, text=True, timeout=60)
    finally:
        target.wait(timeout=60)
    return gyro, target


@pytest.mark.slow
@pytest.mark.parametrize("entry", MANIFEST, ids=[w["script"] for w in MANIFEST])
def test_attach_workload(tmp_path, entry):
    script = WORKLOADS / entry["script"]
    out, stream = tmp_path / "attach.json", tmp_path / "attach.jsonl"
    gyro, target = attach_to(script, out, "--stream", str(stream))
    assert gyro.returncode == 0, gyro.stderr
    assert target.returncode == 0
    assert "Traceback" not in gyro.stderr
    doc = json.loads(out.read_text())
    assert doc["schema"] == "gyroscope.session/2" and doc["source"] == "attach"
    assert doc["pid"] == target.pid and doc["attach"]["target_exited"] is True
    assert doc["errors"] == []
    assert doc["counters"]["samples"] >= 5 and doc["windows"] >= 1
    assert doc["python"].startswith("3.")
    # the stream's closing record is the complete result: the target's python and the attach block
    last = json.loads(stream.read_text().splitlines()[-1])
    assert last["type"] == "session" and last["python"] == doc["python"]
    assert last["processes"][0]["python"] == doc["python"] and last["attach"] == doc["attach"]
    own = [e for e in doc["entities"] if Path(e["file"]).name == entry["script"]]
    assert own, "no entity of the program's own code"
    # the program's time is charged to its own code; library code appears only as the loops that
    # time went to (bridges/stacks.py library_loop), marked so
    assert all(Path(e["file"]).name == entry["script"] or (e["kind"] == "loop" and e["measurements"].get("library"))
               for e in doc["entities"] if e["kind"] in ("loop", "function", "lock", "wait")), \
        "library code was charged"
    hot = expected(entry, "specialize_hot_loop")
    if hot:
        regions = [e for e in own if e["kind"] in ("loop", "function")]
        top = max(regions, key=lambda e: e["measurements"]["cpu_share"])
        assert top["function"] == hot, [(e["function"], e["measurements"]["cpu_share"]) for e in regions]
        assert top["kind"] == "loop"
    waiter = expected(entry, "mitigate_contention")
    if waiter:
        locks = [e for e in own if e["kind"] == "lock" and e["measurements"]["waiting_threads"] >= 2]
        assert locks, [(e["kind"], e["function"], e["measurements"]) for e in own]
        top = max(locks, key=lambda e: e["measurements"]["wait_s_total"])
        assert top["function"] == waiter, [(e["function"], e["line"], e["measurements"]) for e in locks]
        assert top["measurements"]["waits"] >= 1
    if "mitigate_contention" in entry["forbid"]:
        # nothing of the program waits on a lock with several threads at once
        assert not [e for e in own if e["kind"] == "lock" and e["measurements"]["waiting_threads"] >= 2
                    and e["measurements"]["wait_s_total"] > 0.2]


@pytest.mark.slow
def test_attach_writes_profiles(tmp_path):
    """--speedscope / --pprof / --collapsed from attach: every thread, every frame, outermost first;
    go tool pprof names the hot thread's function first."""
    import shutil

    entry = next(w for w in MANIFEST if w["script"] == "mixed_hot_and_lock.py")
    prof, pp, folded = tmp_path / "p.speedscope.json", tmp_path / "p.pb.gz", tmp_path / "p.folded"
    gyro, target = attach_to(WORKLOADS / entry["script"], tmp_path / "a.json", "--speedscope", str(prof),
                             "--pprof", str(pp), "--collapsed", str(folded))
    assert gyro.returncode == 0, gyro.stderr
    doc = json.loads(prof.read_text())
    assert doc["$schema"] == "https://www.speedscope.app/file-format-schema.json"
    frames = doc["shared"]["frames"]
    assert {p["type"] for p in doc["profiles"]} == {"sampled"} and len(doc["profiles"]) >= 3
    session = json.loads((tmp_path / "a.json").read_text())
    assert session["profile"]["files"] == [f"pprof {pp}", f"speedscope {prof}", f"collapsed {folded}"]
    assert session["profile"]["dropped"]["samples_merged"] == 0
    for p in doc["profiles"]:
        assert p["unit"] == "nanoseconds" and len(p["samples"]) == len(p["weights"])
        assert all(0 <= i < len(frames) for s in p["samples"] for i in s)
        # a thread's stacks cover at most the time it was watched (plus one sampling interval)
        # a thread's profile spans at most the session; a kind of numbered thread ("Thread-*
        # (append_log) (threads, ...)") sums its threads' time
        bound = (session["duration_s"] + 1.5) * 1e9 * (8 if "(threads," in p["name"] else 1)
        assert 0 < p["endValue"] <= bound, (p["name"], p["endValue"])
    names = {f["name"] for f in frames}
    assert {"crunch", "append_log"} <= names, names
    # stacks are outermost first: a worker thread's stacks start in threading's bootstrap
    crunch = frames.index(next(f for f in frames if f["name"] == "crunch"))
    stack = next(s for p in doc["profiles"] for s in p["samples"] if crunch in s)
    assert frames[stack[0]]["name"].endswith("_bootstrap") and stack[-1] >= 0
    total = sum(int(line.rsplit(" ", 1)[1]) for line in folded.read_text().splitlines())
    assert total == session["profile"]["totals"]["samples"] > 0
    go = shutil.which("go")
    if go is None:
        pytest.skip("`go` is not installed (Debian package golang-go): pprof not checked")
    top = subprocess.run([go, "tool", "pprof", "-top", str(pp)], capture_output=True, text=True, timeout=120)
    assert top.returncode == 0, top.stderr
    flat = [line.split() for line in top.stdout.splitlines() if line.strip() and line.split()[0][0].isdigit()
            and "%" in line]
    assert flat[0][-1] == "crunch", top.stdout


def test_attach_speedscope_to_unwritable_path_is_one_line(tmp_path):
    (tmp_path / "afile").write_text("")
    target = subprocess.Popen([PY, "-c", "import time; time.sleep(5)"])
    try:
        gyro = subprocess.run([*GYRO, "attach", str(target.pid), "--duration", "0.3", "-q",
                               "--speedscope", str(tmp_path / "afile" / "p.json")],
                              cwd=PROJECT, capture_output=True, text=True, timeout=60)
    finally:
        target.kill()
        target.wait()
    assert gyro.returncode == 2
    assert "Traceback" not in gyro.stderr
    assert "cannot write" in gyro.stderr and gyro.stderr.count("\n") == 1, gyro.stderr
