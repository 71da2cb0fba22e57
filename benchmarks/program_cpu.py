"""The CPU a watcher costs the watched program itself: its own user and system time.

The wall clock of a whole run mixes start-up, the end, and whatever else the machine does; this
measures the program's own `getrusage(RUSAGE_SELF)` at its end and its own wall time from its first
line, so what a watcher adds *inside* the program (callbacks, a sampler reading its memory) shows
alone. A pyperformance benchmark runs as a pyperf worker (`--worker -l LOOPS -n 1 -w 0`) inside a
small wrapper that prints the figures; the variants alternate, `--repeat` times, and the medians
are printed against bare python.

Variants: `bare`; `gyroscope` (`gyroscope run -q`); `gyroscope-nosampler` (`--no-sampling`: the
in-process bridge alone); `py-spy@HZ` (`py-spy record --nonblocking -r HZ -f chrometrace -t --idle
--full-filenames`, the options gyroscope's sampler uses, HZ fixed: no ramp).

    .venv/bin/python benchmarks/program_cpu.py [--bench richards] [--loops 30] [--repeat 13]
        [--variants bare,gyroscope,gyroscope-nosampler,py-spy@100,py-spy@400] [--json OUT]

Single series move by ~10-40 ms on a shared 2-core machine: compare variants of one run only.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gyroscope.agent.result import write_json_atomic  # noqa: E402
from overhead import BIN, PY, bench_dir  # noqa: E402
from overhead import command as tool_command  # noqa: E402
from warm_bytecode import compile_gyroscope  # noqa: E402

WRAPPER = '''\
import os, resource, runpy, sys, time
t0 = time.perf_counter()
script = sys.argv[1]
sys.argv = sys.argv[1:]
sys.path.insert(0, os.path.dirname(script))
try:
    runpy.run_path(script, run_name="__main__")
finally:
    r = resource.getrusage(resource.RUSAGE_SELF)
    sys.stderr.write("program-cpu wall=%.6f user=%.6f sys=%.6f\\n"
                     % (time.perf_counter() - t0, r.ru_utime, r.ru_stime))
'''
TOOLS = ("bare", "gyroscope", "gyroscope-nosampler")
FIGURES = re.compile(r"program-cpu wall=([\d.]+) user=([\d.]+) sys=([\d.]+)")


def command(variant: str, wrapper: Path, script: Path, loops: int) -> list[str]:
    """The wrapper running `script` as a pyperf worker, under `variant` (bare, gyroscope and
    gyroscope-nosampler as benchmarks/overhead.py runs them)."""
    worker = [str(script), "--worker", "-l", str(loops), "-n", "1", "-w", "0"]
    if variant.startswith("py-spy@"):
        py_spy = shutil.which("py-spy") or str(BIN / "py-spy")
        return [py_spy, "record", "--nonblocking", "-r", variant.split("@", 1)[1], "-f", "chrometrace", "-t",
                "--idle", "--full-filenames", "-o", os.devnull, "--", PY, str(wrapper), *worker]
    return tool_command(variant, wrapper, worker)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", default="richards", help="a pyperformance benchmark (default richards)")
    ap.add_argument("--loops", type=int, default=30, help="pyperf loops (richards: 30 is ~1.2 s here)")
    ap.add_argument("--repeat", type=int, default=13)
    ap.add_argument("--variants", default="bare,gyroscope,gyroscope-nosampler,py-spy@100,py-spy@400")
    ap.add_argument("--json", metavar="OUT", help="write the medians and every run as JSON")
    args = ap.parse_args(argv)
    variants = args.variants.split(",")
    if variants[0] != "bare":
        ap.error("--variants must start with bare (the reference)")
    for v in variants:
        rate = v.split("@", 1)[1] if v.startswith("py-spy@") else ""
        if v not in TOOLS and not (rate.isdigit() and int(rate) > 0):
            ap.error(f"unknown variant {v!r} (one of {', '.join(TOOLS)}, or py-spy@HZ)")
    script = bench_dir() / f"bm_{args.bench}" / "run_benchmark.py"
    if not script.exists():
        ap.error(f"no pyperformance benchmark {args.bench!r}")
    compile_gyroscope()   # as installed: no module compiled in a measured run
    runs: dict[str, list[tuple[float, float, float]]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory() as tmp:
        wrapper = Path(tmp) / "program_cpu_wrapper.py"
        wrapper.write_text(WRAPPER)
        for i in range(args.repeat):
            print(f"  repeat {i + 1}/{args.repeat}", file=sys.stderr)
            for v in variants:
                p = subprocess.run(command(v, wrapper, script, args.loops), cwd=script.parent, capture_output=True,
                                   text=True, timeout=600)
                m = FIGURES.search(p.stderr)
                if p.returncode != 0 or m is None:
                    print(f"  {v} failed (exit {p.returncode}): {p.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
                    continue
                runs[v].append(tuple(float(x) for x in m.groups()))
    medians = {v: [statistics.median(r[k] for r in rs) for k in range(3)] for v, rs in runs.items() if rs}
    if "bare" not in medians:
        print("program_cpu: bare python failed every run", file=sys.stderr)
        return 1
    base = medians["bare"]
    print(f"{args.bench}, {args.loops} loops, medians of {args.repeat} (ms; added to bare in brackets)")
    for v, (wall, user, system) in medians.items():
        print(f"{v:22s} wall {wall * 1e3:8.1f} ({(wall - base[0]) * 1e3:+6.1f})   user {user * 1e3:8.1f} "
              f"({(user - base[1]) * 1e3:+6.1f})   sys {system * 1e3:6.1f} ({(system - base[2]) * 1e3:+5.1f})")
    if args.json:
        write_json_atomic(args.json, {"bench": args.bench, "loops": args.loops, "repeat": args.repeat,
                                      "medians_s": {v: dict(zip(("wall", "user", "sys"), m)) for v, m in medians.items()},
                                      "runs_s": runs})
    return 0


if __name__ == "__main__":
    sys.exit(main())
