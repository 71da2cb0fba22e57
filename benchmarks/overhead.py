"""Overhead of `gyroscope run` on real third-party code, next to cProfile, pyinstrument, yappi, py-spy.

Runs pyperformance's shipped benchmark files (site-packages/pyperformance/data-files/benchmarks/
bm_*/run_benchmark.py) as pyperf workers (`--worker -l N -n 1 -w 0 --output FILE`, N calibrated
once so that a bare run's timed part takes about --target seconds), alternating the tools in each
repeat (the order rotates from one repeat to the next), and reports the median ratio to bare of

  - inner: the time pyperf measured for the benchmark's loops (what the tool costs while the
    program runs; the primary number), and
  - wall:  the whole process wall time (adds each tool's start-up and shut-down);
  - min:   the ratio of the fastest runs (inner), less sensitive to other load on the machine.

    .venv/bin/python benchmarks/overhead.py --json overhead.json [--only nbody,go] [--repeat 3]
        [--tools bare,gyroscope,cProfile,pyinstrument,yappi,py-spy,gyroscope-nosampler,gyroscope-script,bare-control]

bare-control runs bare again as if it were a tool: its ratio (ideally 1.000) shows how much of
a ratio is noise from the machine. `--baseline CHECKOUT` adds the tool gyroscope-baseline:
`gyroscope run -q` from another checkout of gyroscope (its extensions built in place:
`python setup.py build_ext --inplace` there), so that a change is measured against the code
before it in one run, on the same noise. gyroscope-script is the command without its native
launcher (agent/launcher.c): the script .ci/setup puts behind it, which starts the program itself.

Other processes share the machine: ratios are measured within one run, side by side.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gyroscope.agent.result import write_json_atomic  # noqa: E402
from warm_bytecode import compile_gyroscope  # noqa: E402

BENCHMARKS = ["nbody", "richards", "raytrace", "chaos", "float", "deltablue", "go", "hexiom", "spectral_norm",
              "nqueens", "json_dumps", "coroutines", "generators", "deepcopy", "logging", "regex_v8",
              "unpack_sequence"]
TOOLS = ["bare", "gyroscope", "cProfile", "pyinstrument", "yappi", "py-spy"]
EXTRA_TOOLS = ["gyroscope-nosampler", "gyroscope-script", "bare-control"]   # opt-in with --tools
BASELINE_ENV: dict[str, str] = {}   # gyroscope-baseline's environment (--baseline)
PY = sys.executable
BIN = Path(sys.executable).parent
# the command without its native launcher (agent/launcher.c): the script .ci/setup puts behind it
SCRIPT = BIN.parent / "gyroscope-command" / "entry.py"


def bench_dir() -> Path:
    import pyperformance
    return Path(pyperformance.__file__).parent / "data-files" / "benchmarks"


def command(tool: str, script: Path, worker: list[str]) -> list[str]:
    s = str(script)
    if tool in ("bare", "bare-control"):   # bare-control: bare again, the noise floor of the ratios
        return [PY, s, *worker]
    if tool == "gyroscope":
        return [str(BIN / "gyroscope"), "run", "-q", s, *worker]
    if tool == "gyroscope-baseline":   # the other checkout comes first on PYTHONPATH (--baseline)
        return [PY, "-c", "import sys; from gyroscope.agent.cli import entry; sys.argv[0] = 'gyroscope'; entry()",
                "run", "-q", s, *worker]
    if tool == "gyroscope-script":
        return [str(SCRIPT), "run", "-q", s, *worker]
    if tool == "gyroscope-nosampler":   # py-spy sampling off (counters only): what sampling costs
        return [str(BIN / "gyroscope"), "run", "-q", "--no-sampling", s, *worker]
    if tool == "cProfile":
        return [PY, "-m", "cProfile", "-o", os.devnull, s, *worker]
    if tool == "pyinstrument":
        return [PY, "-m", "pyinstrument", "-o", os.devnull, s, *worker]
    if tool == "yappi":
        return [PY, "-m", "yappi", "-o", os.devnull, s, *worker]
    if tool == "py-spy":
        return [shutil.which("py-spy") or str(BIN / "py-spy"), "record", "-f", "raw", "-o", os.devnull, "--",
                PY, s, *worker]
    raise ValueError(tool)


def run_once(tool: str, script: Path, loops: int, tmp: Path) -> tuple[float, float] | None:
    out = tmp / f"{tool}.json"
    if out.exists():
        out.unlink()
    worker = ["--worker", "-l", str(loops), "-n", "1", "-w", "0", "--output", str(out)]
    t0 = time.perf_counter()
    p = subprocess.run(command(tool, script, worker), cwd=script.parent, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True, timeout=600,
                       env=BASELINE_ENV if tool == "gyroscope-baseline" else None)
    wall = time.perf_counter() - t0
    if p.returncode != 0 or not out.exists():
        print(f"  {tool} failed (exit {p.returncode}): {p.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    doc = json.loads(out.read_text())
    # pyperf's values are per inner loop: a benchmark that repeats its body N times per loop
    # (unpack_sequence: 400, logging: 10) says so in the metadata
    bench = doc["benchmarks"][0]
    inner_loops = (bench.get("metadata") or {}).get("inner_loops") or (doc.get("metadata") or {}).get("inner_loops") or 1
    inner = sum(sum(r.get("values", [])) for r in bench["runs"]) * loops * inner_loops
    return inner, wall


def calibrate(script: Path, target: float, tmp: Path) -> int:
    r = run_once("bare", script, 1, tmp)
    if r is None:
        return 1
    per_loop = max(r[0], 1e-7)
    return max(1, min(10_000_000, round(target / per_loop)))


def _baseline_env(checkout: Path) -> tempfile.TemporaryDirectory:
    """PYTHONPATH -> a folder whose `gyroscope` is the other checkout (ahead of this one's
    editable install), its bytecode written as an install would."""
    import compileall
    if not (checkout / "agent" / "cli.py").is_file() or not list((checkout / "bridges").glob("_inproc*.so")):
        # else the import falls through to this checkout: the "baseline" would be this code
        raise SystemExit(f"error: --baseline {checkout}: not a gyroscope checkout with its extensions built "
                         "(python setup.py build_ext --inplace there)")
    links = tempfile.TemporaryDirectory()
    os.symlink(checkout, Path(links.name) / "gyroscope")
    for pkg in ("agent", "bridges", "cyext", "schedulers"):
        compileall.compile_dir(str(checkout / pkg), quiet=1)
    BASELINE_ENV.update(os.environ, PYTHONPATH=links.name + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return links


def geomean(xs: list[float]) -> float:
    xs = [x for x in xs if x and x > 0]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", metavar="OUT", help="write the results as JSON")
    ap.add_argument("--only", help="comma-separated benchmark names (default: all)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--tools", default=",".join(TOOLS))
    ap.add_argument("--target", type=float, default=1.0, help="seconds of timed work per bare run")
    ap.add_argument("--baseline", metavar="CHECKOUT",
                    help="also run gyroscope from this other checkout (tool gyroscope-baseline)")
    args = ap.parse_args(argv)
    compile_gyroscope()   # as installed: no module compiled in a measured run
    names = args.only.split(",") if args.only else BENCHMARKS
    tools = [t for t in args.tools.split(",") if t]
    links = None
    if args.baseline:
        links = _baseline_env(Path(args.baseline).resolve())
        tools.append("gyroscope-baseline")
    unknown = [t for t in tools if t not in TOOLS + EXTRA_TOOLS + ["gyroscope-baseline"]]
    if unknown:
        print(f"overhead.py: error: unknown tool(s) {', '.join(unknown)}; known: {', '.join(TOOLS + EXTRA_TOOLS)}",
              file=sys.stderr)
        return 2
    if "bare" not in tools:
        tools.insert(0, "bare")
    bdir = bench_dir()
    per: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        for name in names:
            script = bdir / f"bm_{name}" / "run_benchmark.py"
            if not script.exists():
                print(f"skip {name}: {script} not found", file=sys.stderr)
                continue
            loops = calibrate(script, args.target, tmp)
            times: dict[str, list[tuple[float, float]]] = {t: [] for t in tools}
            for rep in range(args.repeat):
                order = tools[rep % len(tools):] + tools[:rep % len(tools)]   # rotate: no tool always first
                for tool in order:
                    r = run_once(tool, script, loops, tmp)
                    if r is not None:
                        times[tool].append(r)
            bare_inner = statistics.median([t[0] for t in times["bare"]]) if times["bare"] else float("nan")
            bare_wall = statistics.median([t[1] for t in times["bare"]]) if times["bare"] else float("nan")
            bare_min = min((t[0] for t in times["bare"]), default=float("nan"))
            row = {"loops": loops, "bare_inner_s": bare_inner, "bare_wall_s": bare_wall, "inner": {}, "wall": {},
                   "inner_min": {}}
            for tool in tools:
                if tool == "bare" or not times[tool]:
                    continue
                row["inner"][tool] = statistics.median([t[0] for t in times[tool]]) / bare_inner
                row["wall"][tool] = statistics.median([t[1] for t in times[tool]]) / bare_wall
                row["inner_min"][tool] = min(t[0] for t in times[tool]) / bare_min
            per[name] = row
            print(f"{name:16} " + "  ".join(f"{t}={row['inner'].get(t, float('nan')):.3f}x" for t in tools
                                            if t != "bare"), flush=True)
    if links is not None:
        links.cleanup()
    others = [t for t in tools if t != "bare"]
    gm = {t: geomean([per[n]["inner"].get(t) for n in per]) for t in others}
    gm_wall = {t: geomean([per[n]["wall"].get(t) for n in per]) for t in others}
    gm_min = {t: geomean([per[n]["inner_min"].get(t) for n in per]) for t in others}
    worst = {t: max((per[n]["inner"].get(t, 0) for n in per), default=float("nan")) for t in others}
    print()
    print(f"{'benchmark':16} " + " ".join(f"{t:>13}" for t in others) + "   (inner-time ratio to bare)")
    for n, row in per.items():
        print(f"{n:16} " + " ".join(f"{row['inner'].get(t, float('nan')):12.3f}x" for t in others))
    print(f"{'geomean':16} " + " ".join(f"{gm[t]:12.3f}x" for t in others))
    print(f"{'worst':16} " + " ".join(f"{worst[t]:12.3f}x" for t in others))
    print(f"{'geomean (min)':16} " + " ".join(f"{gm_min[t]:12.3f}x" for t in others))
    print(f"{'geomean (wall)':16} " + " ".join(f"{gm_wall[t]:12.3f}x" for t in others))
    doc = {"about": "median ratio to bare; inner = pyperf's timed loops, wall = whole process, "
                    "min = fastest run / fastest bare run",
           "repeat": args.repeat, "python": sys.version.split()[0], "geomean": gm, "geomean_wall": gm_wall,
           "geomean_min": gm_min,
           "worst": worst, "per_benchmark": per}
    if args.json:
        write_json_atomic(args.json, doc)   # creates out/ in a fresh clone
    return 0


if __name__ == "__main__":
    sys.exit(main())
