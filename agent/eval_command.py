"""`gyroscope eval MANIFEST.json`: score the agent's decisions on labeled programs.

The manifest (format of workloads/MANIFEST.json):
    {"workloads": [{"script": "rel/path.py", "args": [...]?,
                    "expect": [{"action": A, "function": F}, ...],
                    "forbid": [A, ...]}, ...]}
Scripts are relative to the manifest. Each one runs under the gyroscope CLI in a subprocess
(`run` mode: `gyroscope run --json TMP script`; `attach` mode: start the script, then
`gyroscope attach PID --json TMP` ~0.2 s later), and its session's decisions are scored:
  - expect: a decision with that action whose `function` is F (exact qualified name, or the
    same last components, e.g. "relax" or "Grid.relax" match "Grid.relax");
  - forbid: no decision with that action on the program's own code.
A naive baseline is scored from the same sessions: "the own-code loop or function with the
most CPU (cpu_share >= 0.1) is a hot loop; any lock or wait with blocked time is contention".
Exit code: 0 when every workload passes, 1 otherwise, 2 for a bad manifest.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from gyroscope.agent.errors import InputError, OutputError, SessionFileError
from gyroscope.agent.model import Decision, EntityRecord, SessionResult
from gyroscope.agent.options import positive_float
from gyroscope.agent.result import write_json_atomic

DESCRIPTION = __doc__
ACTIONS = ("specialize_hot_loop", "mitigate_contention")
BASELINE_MIN_CPU_SHARE = 0.1
ATTACH_DELAY_S = 0.2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("manifest", metavar="MANIFEST.json", help="labeled workloads (see above)")
    parser.add_argument("--json", metavar="PATH", help="write the scores (JSON) to PATH")
    parser.add_argument("--mode", choices=("run", "attach"), default="run",
                        help="watch each workload with `gyroscope run` (default) or `gyroscope attach`")
    parser.add_argument("--timeout", metavar="SECONDS", type=positive_float, default=120.0,
                        help="give up on a workload after this long (default 120)")


# ---- manifest -----------------------------------------------------------------------------
def load_manifest(path: str) -> list[dict[str, Any]]:
    """Read and check a manifest; raise InputError (one line) on any problem."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"no such manifest: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read manifest {path}: {e}") from None
    except json.JSONDecodeError as e:
        raise InputError(f"manifest {path} is not valid JSON (line {e.lineno}: {e.msg})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("workloads"), list):
        raise InputError(f"manifest {path}: missing key 'workloads' (a list)")
    if not doc["workloads"]:
        raise InputError(f"manifest {path}: 'workloads' is empty")
    base = p.resolve().parent
    out = []
    for i, w in enumerate(doc["workloads"]):
        where = f"manifest {path}: workload #{i + 1}"
        if not isinstance(w, dict):
            raise InputError(f"{where} is not an object")
        for key in ("script", "expect", "forbid"):
            if key not in w:
                raise InputError(f"{where}: missing key {key!r}")
        if not isinstance(w["script"], str) or not w["script"]:
            raise InputError(f"{where}: 'script' must be a non-empty string")
        script = (base / w["script"]).resolve()
        if not script.is_file():
            raise InputError(f"{where}: script not found: {script}")
        if not isinstance(w["expect"], list) or not all(
                isinstance(e, dict) and isinstance(e.get("action"), str) and isinstance(e.get("function"), str)
                for e in w["expect"]):
            raise InputError(f"{where} ({w['script']}): 'expect' must be a list of "
                                 "{{\"action\": str, \"function\": str}}")
        if not isinstance(w["forbid"], list) or not all(isinstance(a, str) for a in w["forbid"]):
            raise InputError(f"{where} ({w['script']}): 'forbid' must be a list of action names")
        for a in [e["action"] for e in w["expect"]] + list(w["forbid"]):
            if a not in ACTIONS:
                raise InputError(f"{where} ({w['script']}): unknown action {a!r} "
                                     f"(expected one of {', '.join(ACTIONS)})")
        args = w.get("args", [])
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise InputError(f"{where} ({w['script']}): 'args' must be a list of strings")
        out.append({"name": w["script"], "script": str(script), "args": list(args),
                    "expect": list(w["expect"]), "forbid": list(w["forbid"])})
    return out


# ---- scoring ------------------------------------------------------------------------------
def function_matches(expected: str, found: str) -> bool:
    """Exact qualified name, or the expected name equals the last components of the found one."""
    if not expected or not found:
        return False
    if expected == found:
        return True
    e, f = expected.split("."), found.split(".")
    return len(e) <= len(f) and f[-len(e):] == e


def score(workload: dict[str, Any], decisions: list[Decision]) -> dict[str, Any]:
    """Pass/fail of one workload's decisions against its expect and forbid lists."""
    missing = [e for e in workload["expect"]
               if not any(d.action == e["action"] and function_matches(e["function"], d.function) for d in decisions)]
    forbidden = [d for d in decisions if d.action in workload["forbid"]]
    return {"pass": not missing and not forbidden, "missing": missing,
            "forbidden": [_short(d) for d in forbidden], "found": [_short(d) for d in decisions]}


def _short(d: Decision) -> dict[str, Any]:
    return {"action": d.action, "function": d.function, "line": d.line, "entity_kind": d.entity_kind}


def naive_decisions(result: SessionResult) -> list[Decision]:
    """The baseline: the own-code loop/function with the most CPU (cpu_share >= 0.1) is a hot loop;
    any lock or wait entity with blocked time is contention."""
    from gyroscope.agent.actuators import is_own_code

    ents = [e for e in result.entities if is_own_code(e)]
    out: list[Decision] = []
    code = [e for e in ents if e.kind in ("loop", "function")]
    if code:
        top = max(code, key=lambda e: e.measurements.cpu_share)
        if top.measurements.cpu_share >= BASELINE_MIN_CPU_SHARE:
            out.append(_naive("specialize_hot_loop", top))
    for e in ents:
        if e.kind in ("lock", "wait") and e.measurements.wait_s_total > 0:
            out.append(_naive("mitigate_contention", e))
    return out


def _naive(action: str, e: EntityRecord) -> Decision:
    return Decision(action=action, entity_id=e.id, entity_kind=e.kind, file=e.file, function=e.function,
                    line=e.line, pid=e.pid)


# ---- running one workload -----------------------------------------------------------------
def _cli() -> list[str]:
    return [sys.executable, "-m", "gyroscope.agent.cli"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run_workload(w: dict[str, Any], mode: str, timeout: float, tmpdir: str) -> tuple[SessionResult | None, str]:
    """Watch one workload; return (session result, error text)."""
    out = os.path.join(tmpdir, f"{abs(hash((w['script'], mode, time.monotonic_ns())))}.json")
    cwd = os.path.dirname(w["script"])
    try:
        if mode == "run":
            cmd = _cli() + ["run", "--json", out, w["script"], *w["args"]]
            p = subprocess.run(cmd, cwd=cwd, env=_env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE,
                               text=True, timeout=timeout)
            err = p.stderr
        else:
            prog = subprocess.Popen([sys.executable, w["script"], *w["args"]], cwd=cwd, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                time.sleep(ATTACH_DELAY_S)
                cmd = _cli() + ["attach", str(prog.pid), "--json", out]
                p = subprocess.run(cmd, cwd=cwd, env=_env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE,
                                   text=True, timeout=timeout)
                err = p.stderr
                prog.wait(timeout=timeout)
            finally:
                if prog.poll() is None:
                    prog.kill()
                    prog.wait()
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout:g} s"
    except OSError as e:
        return None, f"cannot start: {e}"
    try:
        return SessionResult.load(out), ""
    except SessionFileError as e:
        # never name our temporary session file: say what happened in the workload's terms
        last = [ln.replace(out, "its session file") for ln in (err or "").strip().splitlines() if ln.strip()]
        if last:
            return None, last[-1]
        if not os.path.exists(out):
            return None, f"gyroscope {mode} exited with code {p.returncode} and wrote no session"
        return None, str(e).replace(out, "its session file")
    finally:
        try:
            os.unlink(out)
        except OSError:
            pass


def evaluate(workloads: list[dict[str, Any]], mode: str, timeout: float, progress: Any = None) -> dict[str, Any]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="gyroscope-eval-") as tmp:
        for i, w in enumerate(workloads):
            t0 = time.monotonic()
            result, error = run_workload(w, mode, timeout, tmp)
            decisions = result.decisions if result else []
            agent = score(w, decisions) if result else {"pass": False, "missing": w["expect"], "forbidden": [],
                                                        "found": []}
            naive = score(w, naive_decisions(result)) if result else dict(agent)
            row = {"workload": w["name"], "pass": agent["pass"], "error": error, "expect": w["expect"],
                   "forbid": w["forbid"], "agent": agent, "naive": naive,
                   "evidence": [{"action": d.action, "function": d.function, "line": d.line, **d.evidence}
                                for d in decisions],
                   "duration_s": round(time.monotonic() - t0, 2)}
            rows.append(row)
            if progress is not None:
                status = "ok" if row["pass"] else ("ERROR " + error if error else "FAIL")
                print(f"[{i + 1}/{len(workloads)}] {w['name']}: {status} ({row['duration_s']:.1f} s)",
                      file=progress, flush=True)
    n = len(rows)
    passed = sum(r["pass"] for r in rows)
    naive_passed = sum(r["naive"]["pass"] for r in rows)
    return {"schema": "gyroscope.eval/1", "mode": mode, "workloads": n, "passed": passed,
            "score": passed / n if n else 0.0, "naive_passed": naive_passed,
            "naive_score": naive_passed / n if n else 0.0, "rows": rows}


def _fmt_expect(r: dict[str, Any]) -> str:
    parts = [f"{e['action']}@{e['function']}" for e in r["expect"]] + [f"no {a}" for a in r["forbid"]]
    return ", ".join(parts) or "-"


def _fmt_found(s: dict[str, Any]) -> str:
    found = [f"{d['action']}@{d['function']}:{d['line']}" for d in s["found"]]
    return ", ".join(found) or "nothing"


def print_table(report: dict[str, Any], stream: Any) -> None:
    print(f"gyroscope eval ({report['mode']} mode)", file=stream)
    for r in report["rows"]:
        mark = "PASS" if r["pass"] else "FAIL"
        nmark = "pass" if r["naive"]["pass"] else "fail"
        print(f"  {mark}  {r['workload']}", file=stream)
        print(f"        expected: {_fmt_expect(r)}", file=stream)
        print(f"        found:    {_fmt_found(r['agent'])}" + (f"  [error: {r['error']}]" if r["error"] else ""),
              file=stream)
        print(f"        naive ({nmark}): {_fmt_found(r['naive'])}", file=stream)
    print(f"score: {report['passed']}/{report['workloads']} ({100 * report['score']:.0f}%)   "
          f"naive baseline: {report['naive_passed']}/{report['workloads']} ({100 * report['naive_score']:.0f}%)",
          file=stream)


def main(args: argparse.Namespace) -> int:
    from gyroscope.agent.outputs import check_outputs, resolve_outputs

    workloads = load_manifest(args.manifest)
    check_outputs(resolve_outputs(args), [args.manifest] + [w["script"] for w in workloads],
                  ["the manifest"] + ["a workload script"] * len(workloads))
    report = evaluate(workloads, args.mode, args.timeout, progress=sys.stderr)
    report["manifest"] = str(Path(args.manifest).resolve())
    print_table(report, sys.stdout)
    if args.json:
        try:
            write_json_atomic(args.json, report)
        except OSError as e:
            raise OutputError(f"cannot write {args.json}: {e}") from None
    return 0 if report["passed"] == report["workloads"] else 1
