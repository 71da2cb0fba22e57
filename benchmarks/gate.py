"""How much the Phase OS gate saves on the way to the sinks, and that it loses no decision change.

    .venv/bin/python benchmarks/gate.py [--manifest M] [--mode run|attach] [--window S] [--json OUT]

For each workload of the manifest (default: the shared workloads), runs the program under
`gyroscope run` (or `attach`) with GYROSCOPE_GATE_TRACE set, so the session's own PhaseGate
writes every report cycle's input (entity records and decisions) as one JSON line. The trace is
then replayed through two paths side by side:
  ungated: every record sent in full at every cycle;
  gated:   a fresh PhaseGate (the last cycle is the final one, final=True).
It prints records and bytes sent on both paths and their ratio, and checks that the final state
a sink rebuilds from the gated stream (decisions by entity, entity records patched with the
deltas) equals the one from the ungated stream.
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gyroscope.agent.eval_command import ATTACH_DELAY_S, load_manifest  # noqa: E402
from gyroscope.agent.gate import PhaseGate, _size  # noqa: E402
from gyroscope.agent.result import write_json_atomic  # noqa: E402

DEFAULT_MANIFEST = ROOT.parent / "shared" / "workloads" / "MANIFEST.json"


def trace_workload(script: str, args: list[str], mode: str, trace: str, timeout: float,
                   window: float | None = None) -> None:
    env = dict(os.environ, GYROSCOPE_GATE_TRACE=trace, PYTHONPATH=str(ROOT))
    cli = [sys.executable, "-m", "gyroscope.agent.cli"]
    win = ["--window", str(window)] if window else []
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "s.json")
        if mode == "run":
            subprocess.run(cli + ["run", *win, "--json", out, script, *args], env=env, timeout=timeout,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=os.path.dirname(script))
        else:
            prog = subprocess.Popen([sys.executable, script, *args], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, cwd=os.path.dirname(script))
            try:
                time.sleep(ATTACH_DELAY_S)
                subprocess.run(cli + ["attach", str(prog.pid), *win, "--json", out], env=env, timeout=timeout,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                prog.wait(timeout=timeout)
            finally:
                if prog.poll() is None:
                    prog.kill()
                    prog.wait()


def _patch(state: dict[int, dict[str, Any]], rec: dict[str, Any]) -> None:
    cur = state.setdefault(int(rec["id"]), {})
    for k, v in rec.items():
        if isinstance(v, dict) and isinstance(cur.get(k), dict):
            cur[k] = {**cur[k], **v}
        else:
            cur[k] = v


def replay(lines: list[dict[str, Any]]) -> dict[str, Any]:
    gate = PhaseGate()
    ungated_records = ungated_bytes = 0
    full_ents: dict[int, dict[str, Any]] = {}
    full_dec: dict[int, str] = {}
    gated_ents: dict[int, dict[str, Any]] = {}
    gated_dec: dict[int, str] = {}
    for i, ln in enumerate(lines):
        ents, decs = ln["entities"], ln["decisions"]
        ungated_records += len(ents) + len(decs)
        ungated_bytes += _size(ents) + _size(decs)
        for e in ents:
            full_ents[int(e["id"])] = json.loads(json.dumps(e, default=str))
        dec_by = {int(d["entity_id"]): d["action"] for d in decs}
        for e in ents:
            full_dec[int(e["id"])] = dec_by.get(int(e["id"]), "observe")
        full_dec.update(dec_by)
        out_e, out_d = gate.filter(ln["window"], ents, decs, final=(i == len(lines) - 1))
        for rec in out_e:
            _patch(gated_ents, rec)
        for d in out_d:
            gated_dec[int(d["entity_id"])] = d["action"]
    actionable = {k: v for k, v in full_dec.items() if v != "observe"}
    gated_actionable = {k: v for k, v in gated_dec.items() if v != "observe"}
    assert gate.records_ungated == ungated_records and gate.bytes_ungated == ungated_bytes
    return {"cycles": len(lines), "records_ungated": ungated_records, "records_sent": gate.sent,
            "records_held": gate.held, "bytes_ungated": ungated_bytes, "bytes_sent": gate.bytes_sent,
            "decisions_final": sorted(f"{k}:{v}" for k, v in actionable.items()),
            "decisions_identical": actionable == gated_actionable,
            "entities_identical": full_ents == gated_ents}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", default=str(DEFAULT_MANIFEST))
    ap.add_argument("--mode", choices=("run", "attach"), default="run")
    ap.add_argument("--json", metavar="OUT", default="benchmarks/gate.json")
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--window", type=float, default=None,
                    help="session window in seconds (default: the CLI's; a report cycle is 5 windows)")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="gyroscope-gate-") as tmp:
        for w in load_manifest(args.manifest):
            trace = os.path.join(tmp, Path(w["script"]).stem + ".jsonl")
            trace_workload(w["script"], w["args"], args.mode, trace, args.timeout, args.window)
            lines = [json.loads(x) for x in Path(trace).read_text().splitlines()] if os.path.exists(trace) else []
            row = {"workload": w["name"], **replay(lines)}
            rows.append(row)
            print(f"  {w['name']}: {row['cycles']} cycles", file=sys.stderr, flush=True)
    print(f"{'workload':28} {'cycles':>6} {'rec ungated':>11} {'rec sent':>8} {'bytes ungated':>13} "
          f"{'bytes sent':>10} {'bytes saved':>11}  decisions/entities identical")
    for r in rows:
        saved = 1 - r["bytes_sent"] / r["bytes_ungated"] if r["bytes_ungated"] else 0.0
        print(f"{r['workload']:28} {r['cycles']:6d} {r['records_ungated']:11d} {r['records_sent']:8d} "
              f"{r['bytes_ungated']:13d} {r['bytes_sent']:10d} {100 * saved:10.1f}%  "
              f"{r['decisions_identical']}/{r['entities_identical']}")
    tot = {k: sum(r[k] for r in rows) for k in ("records_ungated", "records_sent", "bytes_ungated", "bytes_sent")}
    rec_saved = 1 - tot["records_sent"] / tot["records_ungated"] if tot["records_ungated"] else 0.0
    bytes_saved = 1 - tot["bytes_sent"] / tot["bytes_ungated"] if tot["bytes_ungated"] else 0.0
    ok = all(r["decisions_identical"] and r["entities_identical"] for r in rows)
    print(f"total: records {tot['records_sent']}/{tot['records_ungated']} ({100 * rec_saved:.1f}% fewer), "
          f"bytes {tot['bytes_sent']}/{tot['bytes_ungated']} ({100 * bytes_saved:.1f}% less); "
          f"no decision change lost: {ok}")
    doc = {"mode": args.mode, "window": args.window, "manifest": str(Path(args.manifest).resolve()), "rows": rows, "total": tot,
           "records_saved": rec_saved, "bytes_saved": bytes_saved, "no_change_lost": ok}
    write_json_atomic(args.json, doc)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
