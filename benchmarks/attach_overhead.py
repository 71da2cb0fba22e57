"""What `gyroscope attach` costs the watched program, next to py-spy alone.

Each pyperformance benchmark file (site-packages/pyperformance/data-files/benchmarks/bm_*/
run_benchmark.py) runs as a pyperf worker (`--worker -l N -n 1 -w 0 --output FILE`, N calibrated
so that a bare run's timed part takes about --target seconds) and is watched from outside, 0.1 s
after it starts, until it exits, by:

  - bare:          nothing;
  - attach:        `gyroscope attach PID -q` at its defaults (py-spy record -f chrometrace --idle
                   --nonblocking at 100 Hz in overlapping chunks + /proc CPU times every 0.2 s);
  - py-spy-record: `py-spy record -p PID -f raw` alone (100 Hz, blocking: py-spy's default);
  - py-spy-nonblocking: the same with --nonblocking (what attach runs);
  - austin:        `austin -p PID -i 10ms -o /dev/null` (Austin 3.7 from PyPI's austin-dist, at the
                   same 100 Hz; skipped when it is not installed);
  - bare-control:  bare again, as if it were a tool: its ratio (ideally 1.000) is the noise floor.

The tools alternate within each repeat (the order rotates). Printed, medians over the repeats:
the ratio to bare of the time pyperf measured for the benchmark's loops (inner; `min` = fastest
run / fastest bare run), the watcher's CPU seconds per second of target (gyroscope + every
py-spy it starts, from RUSAGE_CHILDREN), and the watcher's peak RSS (the sum of Rss over the
watcher's process tree, read every 50 ms) and peak PSS (the same with the pages its processes
share split between them: two overlapping py-spy share ~4 MiB of their binary).

    .venv/bin/python benchmarks/attach_overhead.py --json out/attach_overhead.json [--only nbody,go]
        [--repeat 3] [--target 1.5] [--quick]

--quick: nbody and float, one repeat, 1 s each (a smoke run of ~30 s, not a measurement).
--memory SECONDS: the RSS of `attach --continuous` over time on a service that starts ~100
short threads a second, then SIGTERM (exit status and the final session's size).
--steady SECONDS: the watcher's CPU in the steady state (one spinning target, attached for 2 s
and for SECONDS: the extra CPU over the extra time) and its fixed start-up cost; --repeat pairs,
medians (one pair's ratio moves by +-0.3 on a shared 2-core machine).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
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

BENCHMARKS = ["nbody", "richards", "raytrace", "float", "go", "json_dumps"]
TOOLS = ["bare", "attach", "py-spy-record", "py-spy-nonblocking", "austin", "bare-control"]
PY = sys.executable
BIN = Path(sys.executable).parent
PROJECT = Path(__file__).resolve().parents[1]


def bench_dir() -> Path:
    import pyperformance
    return Path(pyperformance.__file__).parent / "data-files" / "benchmarks"


def py_spy() -> str:
    from gyroscope.bridges.pyspy import find_py_spy
    return find_py_spy()


def austin() -> str | None:
    import shutil
    return shutil.which("austin", path=str(BIN)) or shutil.which("austin")


if not austin():
    TOOLS.remove("austin")


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _tree_rss_kib(root: int) -> int:
    return tree_memory_kib(root)[0]


def _watch_rss(proc: subprocess.Popen, peak: list[int]) -> None:
    """peak = [peak RSS, peak PSS] of proc's tree, KiB, read every 50 ms."""
    while proc.poll() is None:
        rss, pss = tree_memory_kib(proc.pid)
        peak[0] = max(peak[0], rss)
        peak[1] = max(peak[1], pss)
        time.sleep(0.05)


def run_once(tool: str, script: Path, loops: int, tmp: Path) -> tuple[float, float, float, float] | None:
    """(inner seconds, watcher CPU seconds, watcher peak RSS MiB, peak PSS MiB) of one run, None
    if it failed."""
    out = tmp / f"{tool}.json"
    if out.exists():
        out.unlink()
    worker = [PY, str(script), "--worker", "-l", str(loops), "-n", "1", "-w", "0", "--output", str(out)]
    target = subprocess.Popen(worker, cwd=script.parent, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    watcher_cpu = 0.0
    peak = [0, 0]
    try:
        if tool not in ("bare", "bare-control"):
            time.sleep(0.1)
            cpu0 = _children_cpu()
            pid = str(target.pid)
            if tool == "attach":
                cmd = [PY, "-m", "gyroscope.agent.cli", "attach", pid, "-q"]
            elif tool == "py-spy-record":
                cmd = [py_spy(), "record", "-p", pid, "-f", "raw", "-o", os.devnull]
            elif tool == "austin":
                cmd = [austin() or "austin", "-p", pid, "-i", "10ms", "-o", os.devnull]
            else:
                cmd = [py_spy(), "record", "-p", pid, "-f", "raw", "--nonblocking", "-o", os.devnull]
            w = subprocess.Popen(cmd, cwd=PROJECT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            rss = threading.Thread(target=_watch_rss, args=(w, peak), daemon=True)
            rss.start()
            w.wait(timeout=600)
            rss.join(timeout=5)
            watcher_cpu = _children_cpu() - cpu0
        elif tool == "bare-control":
            time.sleep(0.1)
        _, err = target.communicate(timeout=600)
    finally:
        if target.poll() is None:
            target.kill()
            target.wait()
    if target.returncode != 0 or not out.exists():
        print(f"  {tool} failed (exit {target.returncode}): {err.decode(errors='replace').strip()[-200:]}",
              file=sys.stderr)
        return None
    doc = json.loads(out.read_text())
    inner = sum(sum(r.get("values", [])) for r in doc["benchmarks"][0]["runs"]) * loops
    return inner, watcher_cpu, peak[0] / 1024, peak[1] / 1024


def steady(seconds: float) -> dict:
    """Watcher CPU on one spinning target, attached for 2 s and for `seconds`: the difference over
    the extra time is the steady-state cost per second; the rest is the fixed start-up."""
    spin = subprocess.Popen([PY, "-c", f"import time\nt = time.time()\nwhile time.time() - t < {2 * seconds + 30}: pass"])
    time.sleep(0.3)
    cpu: dict[str, dict[float, float]] = {"attach": {}, "py-spy-record": {}}
    if austin():
        cpu["austin"] = {}
    try:
        for dur in (2.0, seconds):
            for tool in cpu:
                c0 = _children_cpu()
                if tool == "attach":
                    cmd = [PY, "-m", "gyroscope.agent.cli", "attach", str(spin.pid), "-q", "--duration", str(dur)]
                elif tool == "austin":
                    cmd = [austin() or "austin", "-p", str(spin.pid), "-i", "10ms", "-x", str(int(dur)),
                           "-o", os.devnull]
                else:
                    cmd = [py_spy(), "record", "-p", str(spin.pid), "-d", str(int(dur)), "-f", "raw", "-o", os.devnull]
                subprocess.run(cmd, cwd=PROJECT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)
                cpu[tool][dur] = _children_cpu() - c0
    finally:
        spin.kill()
        spin.wait()
    out = {}
    for tool, v in cpu.items():
        per_s = (v[seconds] - v[2.0]) / (seconds - 2.0)
        out[tool] = {"cpu_ms_per_s": per_s * 1e3, "fixed_s": v[2.0] - 2.0 * per_s}
    out["ratio"] = out["attach"]["cpu_ms_per_s"] / out["py-spy-record"]["cpu_ms_per_s"]
    return out


CHURN = """import threading, time
def job(n):
    s = 0
    for i in range(n):
        s += i
def rest():
    time.sleep(0.005)
while True:
    threading.Thread(target=job, args=(20000,)).start()
    threading.Thread(target=rest).start()
    time.sleep(0.02)
"""


def memory(seconds: float) -> dict:
    """`gyroscope attach --continuous` on a service that starts ~100 short threads a second: the
    watcher's RSS (gyroscope's own, MiB) over time, then SIGTERM and its final session."""
    import signal
    with tempfile.TemporaryDirectory() as td:
        svc = subprocess.Popen([PY, "-c", CHURN])
        out = Path(td) / "s.json"
        time.sleep(0.3)
        g = subprocess.Popen([PY, "-m", "gyroscope.agent.cli", "attach", str(svc.pid), "--continuous", "-q",
                              "--json", str(out)], cwd=PROJECT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        marks = []
        t0 = time.monotonic()
        try:
            for t in sorted({5.0, seconds / 4, seconds / 2, seconds}):
                time.sleep(max(0.0, t - (time.monotonic() - t0)))
                marks.append((round(t, 1), round(_tree_rss_kib(g.pid) / 1024, 1)))
            g.send_signal(signal.SIGTERM)
            g.wait(timeout=60)
        finally:
            svc.kill()
            svc.wait()
        doc = json.loads(out.read_text())
    return {"rss_mib_at_s": marks, "exit": g.returncode, "entities": len(doc["entities"]),
            "samples": doc["counters"]["samples"], "windows": doc["windows"]}


def geomean(xs: list[float]) -> float:
    xs = [x for x in xs if x and x > 0]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", metavar="OUT", help="write the results as JSON")
    ap.add_argument("--only", help=f"comma-separated benchmark names (default: {','.join(BENCHMARKS)})")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--target", type=float, default=1.5, help="seconds of timed work per bare run")
    ap.add_argument("--quick", action="store_true", help="nbody and float, 1 repeat, 1 s: a smoke run")
    ap.add_argument("--steady", metavar="SECONDS", type=float,
                    help="only the steady-state watcher CPU: one spinning target, 2 s vs SECONDS")
    ap.add_argument("--memory", metavar="SECONDS", type=float,
                    help="only the RSS of `attach --continuous` over SECONDS on a thread-churning service")
    args = ap.parse_args(argv)
    compile_gyroscope()   # as installed: no module compiled in a measured run
    if args.memory:
        got = memory(args.memory)
        print(json.dumps(got))
        if args.json:
            write_json_atomic(args.json, {"memory": got, "seconds": args.memory})
        return 0
    if args.steady:   # --repeat pairs of runs; the medians of their figures
        reps = [steady(args.steady) for _ in range(args.repeat)]
        tools = [t for t in ("attach", "py-spy-record", "austin") if t in reps[0]]
        got = {t: {k: statistics.median(r[t][k] for r in reps) for k in ("cpu_ms_per_s", "fixed_s")} for t in tools}
        got["ratio"] = statistics.median(r["ratio"] for r in reps)
        for tool in tools:
            print(f"{tool:14} {got[tool]['cpu_ms_per_s']:6.1f} ms CPU per s, fixed {got[tool]['fixed_s']:.3f} s")
        print(f"ratio {got['ratio']:.2f}x (median of {len(reps)}: "
              + ", ".join(f"{r['ratio']:.2f}" for r in reps) + ")")
        if args.json:
            write_json_atomic(args.json, {"steady": got, "runs": reps, "seconds": args.steady,
                                          "python": sys.version.split()[0]})
        return 0
    if args.quick:
        args.only, args.repeat, args.target = args.only or "nbody,float", 1, 1.0
    names = args.only.split(",") if args.only else BENCHMARKS
    bdir = bench_dir()
    per: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        for name in names:
            script = bdir / f"bm_{name}" / "run_benchmark.py"
            if not script.exists():
                print(f"skip {name}: {script} not found", file=sys.stderr)
                continue
            first = run_once("bare", script, 1, tmp)
            loops = max(1, round(args.target / max(first[0], 1e-4))) if first else 1
            runs: dict[str, list[tuple[float, float, float]]] = {t: [] for t in TOOLS}
            for rep in range(args.repeat):
                for tool in TOOLS[rep % len(TOOLS):] + TOOLS[:rep % len(TOOLS)]:
                    r = run_once(tool, script, loops, tmp)
                    if r is not None:
                        runs[tool].append(r)
            if not runs["bare"]:
                continue
            bare = statistics.median(r[0] for r in runs["bare"])
            bare_min = min(r[0] for r in runs["bare"])
            row: dict = {"loops": loops, "bare_inner_s": bare, "inner": {}, "inner_min": {}, "watcher_cpu_per_s": {},
                         "watcher_rss_mib": {}, "watcher_pss_mib": {}}
            for tool in TOOLS[1:]:
                if runs[tool]:
                    row["inner"][tool] = statistics.median(r[0] for r in runs[tool]) / bare
                    row["inner_min"][tool] = min(r[0] for r in runs[tool]) / bare_min
                    row["watcher_cpu_per_s"][tool] = statistics.median(r[1] / r[0] for r in runs[tool])
                    row["watcher_rss_mib"][tool] = statistics.median(r[2] for r in runs[tool])
                    row["watcher_pss_mib"][tool] = statistics.median(r[3] for r in runs[tool])
            per[name] = row
            print(f"{name:14} " + "  ".join(f"{t}={row['inner'].get(t, float('nan')):.3f}x" for t in TOOLS[1:]),
                  flush=True)
    others = TOOLS[1:]
    gm = {t: geomean([per[n]["inner"].get(t) for n in per]) for t in others}
    gm_min = {t: geomean([per[n]["inner_min"].get(t) for n in per]) for t in others}
    cpu = {t: statistics.median([per[n]["watcher_cpu_per_s"][t] for n in per if t in per[n]["watcher_cpu_per_s"]]
                                or [float("nan")]) for t in others}
    rss, pss = ({t: statistics.median([per[n][key][t] for n in per if t in per[n][key]] or [float("nan")])
                 for t in others} for key in ("watcher_rss_mib", "watcher_pss_mib"))
    print()
    print(f"{'benchmark':14} " + " ".join(f"{t:>14}" for t in others) + "   (inner-time ratio to bare)")
    for n, row in per.items():
        print(f"{n:14} " + " ".join(f"{row['inner'].get(t, float('nan')):13.3f}x" for t in others))
    print(f"{'geomean':14} " + " ".join(f"{gm[t]:13.3f}x" for t in others))
    print(f"{'geomean (min)':14} " + " ".join(f"{gm_min[t]:13.3f}x" for t in others))
    print(f"{'watcher cpu/s':14} " + " ".join(f"{cpu[t]:13.4f} " for t in others) + "  (CPU s per target s)")
    print(f"{'watcher RSS':14} " + " ".join(f"{rss[t]:12.1f}M " for t in others) + "  (peak, MiB)")
    print(f"{'watcher PSS':14} " + " ".join(f"{pss[t]:12.1f}M " for t in others) + "  (peak, MiB: shared pages split)")
    doc = {"about": "median ratio to bare of pyperf's timed loops; min = fastest run / fastest bare run; "
                    "watcher_cpu_per_s = CPU seconds the watcher (and every py-spy it started) used per second "
                    "of the target's timed work; watcher_rss_mib = peak RSS of the watcher's process tree (pages "
                    "shared by its processes counted in each); watcher_pss_mib = peak PSS (shared pages split)",
           "repeat": args.repeat, "quick": bool(args.quick), "python": sys.version.split()[0], "geomean": gm,
           "geomean_min": gm_min, "watcher_cpu_per_s": cpu, "watcher_rss_mib": rss, "watcher_pss_mib": pss, "per_benchmark": per}
    if args.json:
        write_json_atomic(args.json, doc)   # creates out/ in a fresh clone
    return 0


if __name__ == "__main__":
    sys.exit(main())
