"""What `gyroscope run` costs an empty program, next to bare python, pyinstrument and py-spy.

For each tool, a probe program (its first line reads the clock and counts sys.modules; at its
end it reads its own peak RSS, VmHWM) is run `--repeat` times (default 9), tools interleaved,
and the medians are reported:
  - added_wall_s:    the whole command's wall time minus bare python's (goal <= 0.05 s);
  - first_line_s:    from the command's start to the program's first line, minus bare's
                     (goal <= 0.02 s);
  - added_rss_mib:   the program's own peak RSS minus bare's (goal <= 10 MiB). Under an
                     in-process tool (pyinstrument) that includes the tool; under gyroscope and
                     py-spy the watcher is another process and is reported as watcher_rss_mib
                     (the largest RSS of the watcher's processes, sampled every 5 ms);
  - added_modules:   len(sys.modules) at the program's first line minus bare's (goal <= 10).

    .venv/bin/python benchmarks/startup.py [--repeat 9] [--tools bare,gyroscope,pyinstrument,py-spy]
        [--json OUT]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gyroscope.agent.result import write_json_atomic  # noqa: E402
from proctree import tree_memory_kib  # noqa: E402
from warm_bytecode import compile_gyroscope  # noqa: E402

PY = sys.executable
BIN = Path(PY).parent
TOOLS = ["bare", "gyroscope", "pyinstrument", "py-spy"]
PROBE = """\
import time, sys; T = time.time(); N = len(sys.modules)
def _hwm():
    with open('/proc/self/status') as f:
        return [int(l.split()[1]) for l in f if l.startswith('VmHWM')][0]
with open(sys.argv[1], 'w') as f:
    f.write(f'{T} {N} {_hwm()}')
"""


def command(tool: str, probe: str, out: str) -> list[str]:
    if tool == "bare":
        return [PY, probe, out]
    if tool == "gyroscope":
        return [str(BIN / "gyroscope"), "run", "-q", probe, out]
    if tool == "pyinstrument":
        return [PY, "-m", "pyinstrument", "-o", os.devnull, probe, out]
    if tool == "py-spy":
        return [str(BIN / "py-spy"), "record", "-o", os.devnull, "--", PY, probe, out]
    raise ValueError(tool)


def _tree_rss_kib(root: int) -> int:
    """RSS of `root` and its descendants except the probe (the program itself), in KiB."""
    return tree_memory_kib(root, skip_argv1_suffix="probe.py")[0]


def run_once(tool: str, probe: str, tmp: Path) -> dict[str, float] | None:
    out = tmp / f"{tool}.out"
    if out.exists():
        out.unlink()
    t0 = time.time()
    p = subprocess.Popen(command(tool, probe, str(out)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = [0]

    def watch() -> None:
        while p.poll() is None:
            peak[0] = max(peak[0], _tree_rss_kib(p.pid))
            time.sleep(0.005)
    w = threading.Thread(target=watch, daemon=True)
    if tool in ("gyroscope", "py-spy"):
        w.start()
    p.wait()
    wall = time.time() - t0
    if w.is_alive():
        w.join()
    if p.returncode != 0 or not out.exists():
        return None
    first, n, hwm = out.read_text().split()
    return {"wall": wall, "first": float(first) - t0, "modules": int(n), "rss_kib": int(hwm),
            "watcher_kib": peak[0]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--tools", default=",".join(TOOLS))
    ap.add_argument("--json", metavar="OUT")
    args = ap.parse_args(argv)
    compile_gyroscope()   # as installed: no module compiled in a measured run
    tools = [t for t in args.tools.split(",") if t]
    if "bare" not in tools:
        tools.insert(0, "bare")
    if "py-spy" in tools and not (BIN / "py-spy").exists() and not shutil.which("py-spy"):
        tools.remove("py-spy")
    tmp = Path(tempfile.mkdtemp(prefix="gyroscope-startup-"))
    probe = str(tmp / "probe.py")
    Path(probe).write_text(PROBE)
    runs: dict[str, list[dict[str, float]]] = {t: [] for t in tools}
    for i in range(args.repeat):
        order = tools[i % len(tools):] + tools[:i % len(tools)]
        for tool in order:
            r = run_once(tool, probe, tmp)
            if r is not None:
                runs[tool].append(r)
        print(f"  repeat {i + 1}/{args.repeat}", file=sys.stderr)
    shutil.rmtree(tmp, ignore_errors=True)

    def med(tool: str, key: str) -> float:
        xs = [r[key] for r in runs[tool]]
        return statistics.median(xs) if xs else float("nan")
    base = {k: med("bare", k) for k in ("wall", "first", "modules", "rss_kib")}
    rows = {}
    print(f"{'tool':14} {'wall s':>8} {'added wall':>11} {'first line':>11} {'added RSS':>10} {'watcher RSS':>12} "
          f"{'modules +':>10}")
    for tool in tools:
        row = {"wall_s": med(tool, "wall"), "added_wall_s": med(tool, "wall") - base["wall"],
               "first_line_s": med(tool, "first") - base["first"],
               "added_rss_mib": (med(tool, "rss_kib") - base["rss_kib"]) / 1024,
               "watcher_rss_mib": med(tool, "watcher_kib") / 1024 if tool in ("gyroscope", "py-spy") else 0.0,
               "added_modules": med(tool, "modules") - base["modules"], "runs": len(runs[tool])}
        rows[tool] = row
        print(f"{tool:14} {row['wall_s']:8.3f} {row['added_wall_s']:11.3f} {row['first_line_s']:11.3f} "
              f"{row['added_rss_mib']:9.1f}M {row['watcher_rss_mib']:11.1f}M {row['added_modules']:10.0f}")
    doc = {"about": "medians over --repeat runs of an empty probe program; added = tool minus bare python",
           "python": sys.version.split()[0], "repeat": args.repeat, "tools": rows}
    if args.json:
        write_json_atomic(args.json, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
