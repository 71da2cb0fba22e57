"""Where `gyroscope run`'s whole-process time goes, phase by phase, on pyperformance benchmarks.

Each benchmark file is copied with two lines added: its first line writes the time since the
command started, its last line the time it ran (CLOCK_MONOTONIC, shared by all processes). The
copy runs as a pyperf worker (`--worker -l N -n 1 -w 0`, N calibrated once so that bare python's
timed part takes about --target seconds), bare and under `gyroscope run -q`, alternating, and the
medians are reported:

  - first:  from the command's start to the program's first line (interpreter start-ups);
  - body:   the program's first line to its last (imports, pyperf's set-up, the timed loops);
  - tail:   the program's last line to the command's exit (the interpreter's teardown and, under
            gyroscope, the session's end: the last samples, the result, the outputs);
  - wall:   the whole command.

    .venv/bin/python benchmarks/run_phases.py [--only richards,go] [--repeat 9] [--baseline CHECKOUT]
        [--tools bare,gyroscope,gyroscope-nosampler,py-spy] [--json OUT]

--baseline CHECKOUT adds gyroscope from another checkout (see benchmarks/overhead.py).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gyroscope.agent.result import write_json_atomic  # noqa: E402
from overhead import BASELINE_ENV, _baseline_env, bench_dir, calibrate, command  # noqa: E402
from warm_bytecode import compile_gyroscope  # noqa: E402

FIRST = ("import time as _gyro_t, sys as _gyro_s, os as _gyro_o; _gyro_t0 = _gyro_t.monotonic(); "
         "_gyro_s.stderr.write('phase-first %.6f\\n' % (_gyro_t0 - float(_gyro_o.environ.get('PHASE_T0', 'nan'))))\n")
LAST = ("\n_gyro_s.stderr.write('phase-body %.6f\\n' % (_gyro_t.monotonic() - _gyro_t0)); "
        "_gyro_s.stderr.write('phase-end %.6f\\n' % _gyro_t.monotonic())\n")
PHASES = ("first", "body", "tail", "wall")


def stamped_copy(script: Path, into: Path) -> Path:
    """The benchmark with its first and last lines stamping the time (a `from __future__` line,
    which must come first, stays first)."""
    lines = script.read_text().splitlines(keepends=True)
    at = next((i + 1 for i, line in enumerate(lines) if line.startswith("from __future__")), 0)
    out = into / script.parent.name / script.name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(lines[:at]) + FIRST + "".join(lines[at:]) + LAST)
    return out


def run_once(tool: str, script: Path, loops: int, tmp: Path) -> dict[str, float] | None:
    out = tmp / "pyperf.json"
    if out.exists():
        out.unlink()
    cmd = command(tool, script, ["--worker", "-l", str(loops), "-n", "1", "-w", "0", "--output", str(out)])
    env = BASELINE_ENV if tool == "gyroscope-baseline" else os.environ
    t0 = time.monotonic()
    p = subprocess.run(cmd, cwd=script.parent, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                       env=dict(env, PHASE_T0=repr(t0)), timeout=600)
    t1 = time.monotonic()
    got = dict(line.split(" ", 1) for line in p.stderr.splitlines() if line.startswith("phase-"))
    if p.returncode != 0 or len(got) != 3:
        print(f"  {tool} failed (exit {p.returncode}): {p.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    return {"first": float(got["phase-first"]), "body": float(got["phase-body"]),
            "tail": t1 - float(got["phase-end"]), "wall": t1 - t0}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="richards,go,logging,json_dumps,unpack_sequence")
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--target", type=float, default=0.3, help="seconds of timed work per bare run")
    ap.add_argument("--baseline", metavar="CHECKOUT", help="also gyroscope from this other checkout")
    ap.add_argument("--tools", default="bare,gyroscope",
                    help="comma-separated, bare first (benchmarks/overhead.py's: gyroscope-nosampler, py-spy, ...)")
    ap.add_argument("--json", metavar="OUT")
    args = ap.parse_args(argv)
    compile_gyroscope()
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    if not tools or tools[0] != "bare":
        print("run_phases: --tools must start with bare (the phases are added to it)", file=sys.stderr)
        return 2
    links = None
    if args.baseline:
        links = _baseline_env(Path(args.baseline).resolve())
        tools.append("gyroscope-baseline")
    per: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        for name in args.only.split(","):
            src = bench_dir() / f"bm_{name}" / "run_benchmark.py"
            if not src.exists():
                print(f"skip {name}: {src} not found", file=sys.stderr)
                continue
            script = stamped_copy(src, tmp)
            loops = calibrate(script, args.target, tmp)
            runs: dict[str, list[dict[str, float]]] = {t: [] for t in tools}
            for rep in range(args.repeat):
                for tool in tools[rep % len(tools):] + tools[:rep % len(tools)]:
                    r = run_once(tool, script, loops, tmp)
                    if r is not None:
                        runs[tool].append(r)
            per[name] = {t: {ph: statistics.median(r[ph] for r in rs) for ph in PHASES} for t, rs in runs.items() if rs}
            for t, med in per[name].items():
                added = "" if t == "bare" else "   added: " + "  ".join(
                    f"{ph} {1000 * (med[ph] - per[name]['bare'][ph]):+.1f}" for ph in PHASES)
                print(f"{name:16} {t:19} " + "  ".join(f"{ph} {1000 * med[ph]:7.1f}" for ph in PHASES) + " ms" + added,
                      flush=True)
    if links is not None:
        links.cleanup()
    if args.json:
        write_json_atomic(args.json, {"about": "medians (s) of each phase; see benchmarks/run_phases.py",
                                      "repeat": args.repeat, "python": sys.version.split()[0], "per_benchmark": per})
    return 0


if __name__ == "__main__":
    sys.exit(main())
