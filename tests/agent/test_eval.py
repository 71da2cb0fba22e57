"""`gyroscope eval`: manifest validation, scoring, the naive baseline, and end to end runs."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
from gyroscope.agent import eval_command as E
from gyroscope.agent.errors import GyroscopeError
from gyroscope.agent.model import Decision, EntityRecord, SessionResult

ROOT = Path(__file__).resolve().parents[2]
VARIANTS = ROOT / "tests" / "fixtures" / "decisions_variants"


def write(tmp_path, doc, scripts=("a.py",)):
    for s in scripts:
        (tmp_path / s).write_text("print(1)\n")
    p = tmp_path / "m.json"
    p.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return str(p)


@pytest.mark.parametrize("doc,msg", [
    ("{not json", "not valid JSON"),
    ({"nope": []}, "missing key 'workloads'"),
    ({"workloads": []}, "'workloads' is empty"),
    ({"workloads": [{"script": "a.py", "expect": []}]}, "missing key 'forbid'"),
    ({"workloads": [{"expect": [], "forbid": []}]}, "missing key 'script'"),
    ({"workloads": [{"script": "b.py", "expect": [], "forbid": []}]}, "script not found"),
    ({"workloads": [{"script": "a.py", "expect": [{"action": "x"}], "forbid": []}]}, "'expect' must be"),
    ({"workloads": [{"script": "a.py", "expect": [], "forbid": ["speed_up"]}]}, "unknown action 'speed_up'"),
    ({"workloads": [{"script": "a.py", "expect": [], "forbid": [], "args": "x"}]}, "'args' must be"),
    ({"workloads": ["a.py"]}, "is not an object"),
])
def test_manifest_errors_are_one_line(tmp_path, doc, msg):
    with pytest.raises(GyroscopeError) as ei:
        E.load_manifest(write(tmp_path, doc))
    assert msg in ei.value.message and "\n" not in ei.value.message and ei.value.exit_code == 2


def test_missing_manifest(tmp_path):
    with pytest.raises(GyroscopeError, match="no such manifest"):
        E.load_manifest(str(tmp_path / "none.json"))


def test_manifest_scripts_are_relative_to_it(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "w.py").write_text("")
    p = tmp_path / "m.json"
    p.write_text(json.dumps({"workloads": [{"script": "sub/w.py", "args": ["1"], "expect": [
        {"action": "specialize_hot_loop", "function": "f"}], "forbid": ["mitigate_contention"]}]}))
    (w,) = E.load_manifest(str(p))
    assert w["script"] == str((tmp_path / "sub" / "w.py").resolve()) and w["args"] == ["1"]


@pytest.mark.parametrize("expected,found,ok", [
    ("Grid.relax", "Grid.relax", True), ("relax", "Grid.relax", True), ("Solver.step", "Outer.Solver.step", True),
    ("mandel", "mandel", True), ("relax", "Grid.relaxed", False), ("Grid.relax", "relax", False),
    ("worker", "<module>", False), ("", "x", False),
])
def test_function_matches(expected, found, ok):
    assert E.function_matches(expected, found) is ok


def test_score_expect_and_forbid():
    w = {"expect": [{"action": "specialize_hot_loop", "function": "crunch"}], "forbid": ["mitigate_contention"]}
    hot = Decision(action="specialize_hot_loop", entity_id=1, function="crunch", line=3)
    lock = Decision(action="mitigate_contention", entity_id=2, function="log", line=9)
    assert E.score(w, [hot])["pass"]
    assert not E.score(w, [])["pass"]
    assert not E.score(w, [hot, lock])["pass"]
    assert not E.score(w, [dataclasses.replace(hot, function="other")])["pass"]
    assert E.score({"expect": [], "forbid": ["specialize_hot_loop"]}, [])["pass"]


def test_naive_baseline_flags_any_wait():
    result = SessionResult(source="run", entities=[EntityRecord.from_json(e) for e in [
        {"id": 1, "kind": "loop", "file": "/p/app.py", "function": "poll", "line": 4,
         "measurements": {"cpu_share": 1.0}},
        {"id": 2, "kind": "wait", "file": "/p/app.py", "function": "poll", "line": 5,
         "measurements": {"wait_s_total": 2.0}},
        {"id": 3, "kind": "lock", "file": "/p/app.py", "function": "w", "line": 9,
         "measurements": {"wait_s_total": 0.0}}]])
    got = [(d.action, d.function) for d in E.naive_decisions(result)]
    assert got == [("specialize_hot_loop", "poll"), ("mitigate_contention", "poll")]


def cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "gyroscope.agent.cli", "eval", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def test_cli_bad_manifest_one_line(tmp_path):
    p = cli(write(tmp_path, "[1, 2"))
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0 and "not valid JSON" in p.stderr and "Traceback" not in p.stderr


def small_manifest(tmp_path, names):
    src = json.loads((VARIANTS / "MANIFEST.json").read_text())
    ws = [w for w in src["workloads"] if w["script"] in names]
    for w in ws:
        (tmp_path / w["script"]).write_text((VARIANTS / w["script"]).read_text())
    p = tmp_path / "MANIFEST.json"
    p.write_text(json.dumps({"workloads": ws}))
    return str(p)


@pytest.mark.slow
def test_eval_run_mode_end_to_end(tmp_path):
    m = small_manifest(tmp_path, ("hot_small.py", "lock_two_threads.py", "rare_lock.py"))
    out = tmp_path / "eval.json"
    p = cli(m, "--json", str(out))
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stderr.count("[") == 3 and "score: 3/3 (100%)" in p.stdout and "naive baseline" in p.stdout
    doc = json.loads(out.read_text())
    assert doc["passed"] == 3 and doc["mode"] == "run"
    hot = next(r for r in doc["rows"] if r["workload"] == "hot_small.py")
    (ev,) = [e for e in hot["evidence"] if e["action"] == "specialize_hot_loop"]
    assert ev["function"] == "mandel" and ev["cpu_share"] >= 0.25
    rare = next(r for r in doc["rows"] if r["workload"] == "rare_lock.py")
    assert rare["agent"]["found"] == [] and not rare["naive"]["pass"]


@pytest.mark.slow
def test_eval_attach_mode_and_failing_expectation(tmp_path):
    m = small_manifest(tmp_path, ("lock_two_threads.py",))
    doc = json.loads(Path(m).read_text())
    doc["workloads"][0]["expect"] = [{"action": "specialize_hot_loop", "function": "transfer"}]
    Path(m).write_text(json.dumps(doc))
    p = cli(m, "--mode", "attach", "--json", str(tmp_path / "e.json"))
    assert p.returncode == 1, p.stdout + p.stderr
    row = json.loads((tmp_path / "e.json").read_text())["rows"][0]
    assert not row["pass"] and row["error"] == ""
    assert any(f["action"] == "mitigate_contention" and f["function"] == "transfer" for f in row["agent"]["found"])
