"""Run mode's sampler on a program it has just started: how soon the first sample comes, how many
running samples a 0.15 s single-loop program gets, and what py-spy costs, per rate.

Each run spawns `python short.py` (one loop of 0.15 s, after the interpreter's ~20 ms start-up)
and at once PySpySource(pid, fresh=True).start(), exactly as `gyroscope run` does with its child;
it stops when the child exits. Printed per rate, median over --repeat runs (min in brackets):
spawn -> first sample (ms), running samples on the loop, py-spy CPU ms per run and per second of
target.

    .venv/bin/python benchmarks/fresh_start.py [--rates 50,100,200] [--repeat 5] [--json OUT]
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gyroscope.agent.result import write_json_atomic  # noqa: E402
from gyroscope.bridges import procfs  # noqa: E402
from gyroscope.bridges.events import EventKind  # noqa: E402
from gyroscope.bridges.pyspy import PySpySource  # noqa: E402

PROGRAM = ("import time\n\n\ndef hot():\n    t = time.perf_counter()\n    n = 0\n"
           "    while time.perf_counter() - t < 0.15:\n        n += 1\n\n\nhot()\n")


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def one(script: Path, rate: float) -> dict:
    cpu0 = _children_cpu()
    t0 = time.monotonic_ns()
    child = subprocess.Popen([sys.executable, str(script)])
    src = PySpySource(child.pid, rate_hz=rate, fresh=True)
    src.start()
    obs = []
    while procfs.is_alive(child.pid):       # not child.poll(): reaping it here would hide its rusage
        time.sleep(0.05)
        obs.append(src.poll())
    t_exit = time.monotonic_ns()
    _, _, ru = os.wait4(child.pid, 0)
    child.returncode = 0
    obs.append(src.stop())
    loop = sum(e.count for o in obs for e in o.events
               if e.kind == EventKind.SAMPLE_RUN and (e.entity.function, e.entity.line) == ("hot", 7))
    pyspy_cpu = _children_cpu() - cpu0 - (ru.ru_utime + ru.ru_stime)   # every py-spy, not the child
    first = (src.record.first_sample_ns - t0) / 1e6 if src.record.first_sample_ns else float("nan")
    return {"first_sample_ms": first, "loop_samples": loop, "errors": sum(len(o.errors) for o in obs),
            "pyspy_cpu_ms": pyspy_cpu * 1e3,
            "target_s": (t_exit - t0) / 1e9}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="50,100,200")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", metavar="OUT")
    args = ap.parse_args(argv)
    out: dict = {"python": sys.version.split()[0], "repeat": args.repeat, "rates": {}}
    with tempfile.TemporaryDirectory() as td:
        script = Path(td) / "short.py"
        script.write_text(PROGRAM)
        print(f"{'rate':>6} {'first sample ms':>16} {'loop samples':>13} {'errors':>7} {'py-spy cpu ms':>14}")
        for rate in [float(r) for r in args.rates.split(",")]:
            runs = [one(script, rate) for _ in range(args.repeat)]
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            low = {k: min(r[k] for r in runs) for k in runs[0]}
            out["rates"][str(int(rate))] = {"median": med, "min": low, "runs": runs}
            print(f"{rate:6.0f} {med['first_sample_ms']:9.1f} ({low['first_sample_ms']:4.1f}) "
                  f"{med['loop_samples']:7.0f} ({low['loop_samples']:3.0f}) {med['errors']:7.0f} "
                  f"{med['pyspy_cpu_ms']:14.1f}")
    if args.json:
        write_json_atomic(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
