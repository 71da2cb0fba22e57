"""gyroscope against truth: run the programs of tests/fixtures/truth/ (they time their own loops,
lock waits and blocking coroutines with perf_counter and write that truth to argv[1]) under
`gyroscope run -q --json`, and print per measure the error against the truth; for CPU shares,
what pyinstrument (`python -m pyinstrument -r json`) and py-spy (`py-spy record -f raw`) report
on the same programs, side by side. Medians over --repeat runs.

    .venv/bin/python benchmarks/accuracy.py --json OUT [--repeat N] [--quick] [--no-peers]

tests/test_accuracy.py uses `run_gyroscope` and `evaluate` from here (one definition of every
measure and of its tolerance). Conventions:
- a loop is matched by its function's name in the program's file (one function per loop; when a
  function holds nested loops, the loop with the most iterations, the innermost, is the one);
- counts and rates: relative error (got / truth - 1); both are checked only for loops that ran
  >= 0.2 s (issue 13), the others are reported; CPU shares: points (got - truth, in shares of 1). The truth share of a
  function is its CPU time inside (thread_time, measured by the program) over the process's CPU
  time from the program's first line to its end (process_time): a share of the process's CPU,
  as gyroscope's is (the interpreter's start-up before the first line has no Python frame for
  any sampler); gyroscope's share is the sum of the `cpu_share` of the program's entities in
  that function; the peers' share is the function's inclusive time over the program's
  (pyinstrument: wall time) or its samples over all samples (py-spy: running threads only);
- locks: matched by creation site (the line `NAME = threading.X(...)` of the program);
  wait totals and counts relative, waiting threads exact;
- booleans (a decision present / absent, an entity found): error 0 when right, 1 when wrong.

Measured 2026-12-01 (`--repeat 3`, 2 shared cores, CPython 3.13, py-spy record at 100 Hz in 1 s
chunks): every exact lock figure within 0.2% (8 kinds: wait totals, counts, waiting threads); the
blocking coroutine found with its blocked time within 0.1%; loop rates +27%..+160% on every loop
(the reported ns/iteration is the truth's less 14-53 ns, typically ~32: the calibrated callback
cost, 84-90 ns here, is over-subtracted from the burst); counts -80%..+460% (samples reach the
session per 1 s chunk, counts are matched per 0.2 s window); CPU shares of two loops -12..+12
points (13-19 samples for 0.45 s: sampling starts late), where py-spy alone at 250 Hz is within
4 points and pyinstrument puts 100% on one of two loops whose calls are ~0.5 ms; the numpy loop
is decided specialize_hot_loop; sampled waits double the exact Event / Barrier / Queue waits.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TRUTH_DIR = ROOT / "tests" / "fixtures" / "truth"
BIN = Path(sys.executable).parent
GYRO = BIN / "gyroscope"

PROGRAMS = ("hot_loop", "short_loop", "two_loops", "stat_loop", "cpu_split", "iter_loops", "numpy_loop", "async_block",
            "threadpool", "locks")
QUICK = ("hot_loop", "two_loops", "cpu_split", "locks")
LOCK_VARS = {"lock": "lock", "semaphore": "sem", "condition": "cond", "rlock": "rl", "bounded": "bs",
             "event": "evs", "barrier": "bar", "queue": "q"}   # truth name -> variable
UNCOUNTED = ("bounded", "barrier")     # lock kinds whose wait count is only reported (see evaluate)
REL_COUNT, REL_RATE, SHARE_POINTS, REL_WAIT = 0.05, 0.10, 0.05, 0.10
MIN_RATE_S = 0.2


@dataclass
class Result:
    """One measure of one program: truth, what a tool reported, the error, and the tolerance."""
    program: str
    measure: str
    unit: str               # "rel" (got/truth - 1), "points" (got - truth), "exact", "bool"
    truth: float
    got: float
    error: float
    tolerance: float | None  # None: reported, not checked
    tool: str = "gyroscope"
    errors: list[float] | None = None   # every run's error (set on the medians)

    @property
    def ok(self) -> bool:
        return self.tolerance is None or abs(self.error) <= self.tolerance


def _rel(got: float, truth: float) -> float:
    return got / truth - 1.0 if truth else float("inf")


def program_path(name: str) -> Path:
    return TRUTH_DIR / f"{name}.py"


def run_gyroscope(name: str, workdir: Path, timeout: float = 120.0) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run one truth program under `gyroscope run -q --json`; return (session, truth)."""
    out, truth = workdir / f"{name}.session.json", workdir / f"{name}.truth.json"
    p = subprocess.run([str(GYRO), "run", "-q", "--json", str(out), str(program_path(name)), str(truth)],
                       capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"gyroscope run {name}.py exited {p.returncode}: {p.stderr.strip()[-500:]}")
    return json.loads(out.read_text()), json.loads(truth.read_text())


# ---- gyroscope's numbers ----------------------------------------------------------------------
def _own(session: dict[str, Any], name: str) -> list[dict[str, Any]]:
    path = str(program_path(name))
    return [e for e in session["entities"] if e.get("file") == path]


def _loop(session: dict[str, Any], name: str, function: str) -> dict[str, Any] | None:
    loops = [e for e in _own(session, name) if e["kind"] == "loop" and e["function"] == function]
    return max(loops, key=lambda e: e["measurements"]["iterations"], default=None)


def _share(session: dict[str, Any], name: str, function: str) -> float:
    return sum(e["measurements"]["cpu_share"] for e in _own(session, name) if e["function"] == function)


def _decided(session: dict[str, Any], action: str, name: str, function: str) -> bool:
    path = str(program_path(name))
    return any(d["action"] == action and d["file"] == path and d["function"] == function
               for d in session["decisions"])


def _creation_line(name: str, var: str) -> int:
    for i, line in enumerate(program_path(name).read_text().splitlines(), 1):
        if re.match(rf"{var} = \[?(threading|queue)\.\w+\(", line):
            return i
    raise LookupError(f"{var} = threading.X() not found in {name}.py")


def _truth_shares(truth: dict[str, Any]) -> dict[str, float]:
    """A function's share of the process's CPU time from the program's first line (its CPU time
    inside over the process's since then, both measured by the program), as gyroscope's cpu_share
    is (the interpreter's start-up before it has no Python frame: no sampler can attribute it);
    without process_cpu_s, of the regions'."""
    cpu = truth.get("cpu", {})
    total = (truth.get("process_cpu_s", 0.0) - truth.get("process_cpu_start_s", 0.0)) or sum(cpu.values())
    return {f: t / total for f, t in cpu.items()} if total else {}


def evaluate(name: str, session: dict[str, Any], truth: dict[str, Any]) -> list[Result]:
    """Every measure of program `name`: gyroscope's session against the program's truth."""
    res: list[Result] = []

    def add(measure: str, unit: str, t: float, got: float, tol: float | None) -> None:
        err = {"rel": _rel(got, t), "points": got - t, "exact": got - t, "bool": float(got != t)}[unit]
        res.append(Result(name, measure, unit, float(t), float(got), err, tol))

    for fn, lt in truth.get("loops", {}).items():
        ent = _loop(session, name, fn)
        m = ent["measurements"] if ent else {"iterations": 0, "iterations_per_s": 0.0}
        if name in ("numpy_loop",):
            continue       # 40 iterations: below K, exact by construction; not the point here
        long = lt["seconds"] >= MIN_RATE_S
        add(f"{fn}.iterations", "rel", lt["iterations"], m["iterations"], REL_COUNT if long else None)
        if name != "threadpool":   # threads share the GIL: perf_counter time is not loop time
            ran = lt.get("cpu_seconds") or lt["seconds"]   # per second the loop ran (truth README)
            add(f"{fn}.iterations_per_s", "rel", lt["iterations"] / ran, m["iterations_per_s"],
                REL_RATE if long else None)
    for fn, share in _truth_shares(truth).items():
        add(f"{fn}.cpu_share", "points", share, _share(session, name, fn), SHARE_POINTS)
    if name in ("hot_loop", "short_loop", "stat_loop", "threadpool"):
        fn = next(iter(truth["loops"]))
        add(f"{fn}.decided_specialize_hot_loop", "bool", 1, int(_decided(session, "specialize_hot_loop", name, fn)),
            0)
    if name == "numpy_loop":
        add("crunch.decided_specialize_hot_loop", "bool", 0,
            int(_decided(session, "specialize_hot_loop", name, "crunch")), 0)
    if name == "async_block":
        loops = [e for e in session["entities"] if e["kind"] == "event_loop" and e["function"] == truth["blocker"]]
        add("event_loop.found", "bool", 1, int(bool(loops)), 0)
        m = loops[0]["measurements"] if loops else {"waits": 0, "wait_s_total": 0.0}
        add("event_loop.blocks", "exact", truth["blocks"], m["waits"], 0)
        add("event_loop.blocked_s", "rel", truth["blocked_s"], m["wait_s_total"], REL_WAIT)
        add("event_loop.decided_mitigate_contention", "bool", 1,
            int(_decided(session, "mitigate_contention", name, truth["blocker"])), 0)
    if name == "threadpool":
        loops = sorted((e for e in session["entities"] if e["kind"] == "loop"),
                       key=lambda e: -e["measurements"]["cpu_share"])
        top = loops[0] if loops else None
        add("top_loop_is_task", "bool", 1,
            int(bool(top) and top["function"] == truth["top"] and top["file"] == str(program_path(name))), 0)
        lib = max((e["measurements"]["cpu_share"] for e in loops if "concurrent/futures" in e["file"]), default=0.0)
        add("futures_worker_loop.cpu_share", "points", 0.0, lib, SHARE_POINTS)
    entry = [d for d in session["decisions"] if d["function"] == "<module>"]
    add("no_decision_on_module", "bool", 0, int(bool(entry)), 0)   # entry points are never the answer
    dups = 0
    for lname, lt in truth.get("locks", {}).items():
        line = _creation_line(name, LOCK_VARS[lname])
        ents = [e for e in _own(session, name) if e["kind"] in ("lock", "wait") and e["line"] == line]
        m = ents[0]["measurements"] if ents else {"wait_s_total": 0.0, "waits": 0, "waiting_threads": 0}
        add(f"{lname}.wait_s_total", "rel", lt["wait_s"], m["wait_s_total"], REL_WAIT)
        # the truth counts waits > 50 us; a try-acquire that fails just before a release waits
        # less (seen once in ~20 runs: 32 contended acquires of a Semaphore against 31 long waits)
        # counts only reported for: BoundedSemaphore (28 of 32 contended acquires waited ~2 us, 0.06 ms
        # in all, which the truth cannot tell from uncontended ones) and Barrier (10 waits for 9
        # blocking wait() calls in 2 runs of 3: a wait() that re-acquires the barrier's condition
        # lock after the notify, while the last arriver holds it, seems to count twice)
        add(f"{lname}.waits", "rel", lt["waits"], m["waits"], None if lname in UNCOUNTED else REL_COUNT)
        add(f"{lname}.waiting_threads", "exact", lt["threads"], m["waiting_threads"], 0)
        # a wait covered by the exact figures must not also be a sampled wait entity (counted twice);
        # whether a sample lands in a short wait is chance: per lock reported, checked in total
        sites = {(c["file"], c["line"]) for c in m.get("call_sites", [])}
        dup = [e for e in session["entities"] if e["kind"] in ("wait", "lock") and not e["measurements"].get("exact")
               and (e["file"], e["line"]) in sites]
        add(f"{lname}.sampled_duplicates", "exact", 0, len(dup), None)
        dups += len(dup)
    if truth.get("locks"):
        add("all.sampled_duplicates", "exact", 0, dups, 0)
    return res


# ---- the peers: CPU shares from pyinstrument and py-spy ----------------------------------------
def _pyinstrument_shares(name: str, workdir: Path, functions: list[str]) -> dict[str, float] | None:
    out = workdir / f"{name}.pyinstrument.json"
    p = subprocess.run([str(BIN / "python"), "-m", "pyinstrument", "-r", "json", "-o", str(out),
                        str(program_path(name)), str(workdir / "pi.truth.json")],
                       capture_output=True, text=True, timeout=120)
    if p.returncode != 0 or not out.exists():
        return None
    inclusive = dict.fromkeys(functions, 0.0)

    def walk(frame: dict[str, Any], inside: frozenset[str]) -> None:
        f = frame.get("function", "")
        if f in inclusive and f not in inside and frame.get("file_path") == str(program_path(name)):
            inclusive[f] += frame.get("time", 0.0)
            inside = inside | {f}
        for c in frame.get("children", []):
            walk(c, inside)

    root = json.loads(out.read_text())["root_frame"]
    walk(root, frozenset())
    total = root.get("time", 0.0)     # the whole program: a share of its time, as the truth's
    return {f: t / total for f, t in inclusive.items()} if total else None


def _pyspy_shares(name: str, workdir: Path, functions: list[str], rate: int = 250) -> dict[str, float] | None:
    pyspy = shutil.which("py-spy", path=str(BIN)) or shutil.which("py-spy")
    if not pyspy:
        return None
    out = workdir / f"{name}.pyspy.txt"
    p = subprocess.run([pyspy, "record", "-f", "raw", "-r", str(rate), "-o", str(out), "--",
                        str(BIN / "python"), str(program_path(name)), str(workdir / "ps.truth.json")],
                       capture_output=True, text=True, timeout=120)
    if p.returncode != 0 or not out.exists():
        return None
    counts = dict.fromkeys(functions, 0)
    base = program_path(name).name
    total = 0      # every sample of the process (py-spy records running threads only): a share of its CPU
    for line in out.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        total += int(n)
        for f in functions:
            if f"{f} ({base}:" in stack:
                counts[f] += int(n)
    return {f: c / total for f, c in counts.items()} if total else None


def peer_results(name: str, truth: dict[str, Any], workdir: Path) -> list[Result]:
    shares = _truth_shares(truth)
    out: list[Result] = []
    for tool, fn in (("pyinstrument", _pyinstrument_shares), ("py-spy", _pyspy_shares)):
        got = fn(name, workdir, list(shares))
        if got is None:
            continue
        for f, t in shares.items():
            out.append(Result(name, f"{f}.cpu_share", "points", t, got[f], got[f] - t, SHARE_POINTS, tool))
    return out


# ---- the command --------------------------------------------------------------------------------
def median_results(runs: list[list[Result]]) -> list[Result]:
    """Per (tool, program, measure): the run with the median error, every run's error attached."""
    by: dict[tuple[str, str, str], list[Result]] = {}
    for run in runs:
        for r in run:
            by.setdefault((r.tool, r.program, r.measure), []).append(r)
    out = []
    for rs in by.values():
        mid = sorted(rs, key=lambda r: r.error)[len(rs) // 2]   # the run with the median error
        mid.errors = [round(r.error, 4) for r in rs]
        out.append(mid)
    return out


def _fmt(r: Result) -> str:
    if r.unit == "rel":
        err = f"{r.error * 100:+.1f}%"
    elif r.unit == "points":
        err = f"{r.error * 100:+.1f} pt"
    else:
        err = f"{r.error:+g}"
    tol = "" if r.tolerance is None else (f"{r.tolerance * 100:.0f}" + ("%" if r.unit == "rel" else " pt")
                                          if r.unit in ("rel", "points") else "exact")
    flag = "report" if r.tolerance is None else ("ok" if r.ok else "FAIL")
    spread = ""
    if r.errors and len(r.errors) > 1 and r.unit in ("rel", "points"):
        spread = f"  [{min(r.errors) * 100:+.1f} .. {max(r.errors) * 100:+.1f}]"
    return f"{r.program:<12} {r.measure:<38} {r.truth:>14.4g} {r.got:>14.4g} {err:>10} {tol:>7} {flag}{spread}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", required=True, help="write every result here")
    ap.add_argument("--repeat", type=int, default=1, help="runs per program (medians are printed)")
    ap.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)}, no peers")
    ap.add_argument("--no-peers", action="store_true", help="skip pyinstrument and py-spy")
    ap.add_argument("--only", help=f"comma-separated programs of {', '.join(PROGRAMS)}")
    args = ap.parse_args(argv)
    if args.repeat < 1:
        print("accuracy: --repeat must be >= 1", file=sys.stderr)
        return 2
    if not GYRO.exists():
        print(f"accuracy: {GYRO} not found (run bash .ci/setup)", file=sys.stderr)
        return 2
    programs = QUICK if args.quick else PROGRAMS
    if args.only:
        programs = tuple(p.strip() for p in args.only.split(",") if p.strip())
        unknown = [p for p in programs if p not in PROGRAMS]
        if unknown or not programs:
            print(f"accuracy: --only: unknown program(s) {', '.join(unknown) or '(none)'}; known: "
                  f"{', '.join(PROGRAMS)}", file=sys.stderr)
            return 2
    peers = not (args.quick or args.no_peers)
    runs: list[list[Result]] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gyro-accuracy-") as tmp:
        wd = Path(tmp)
        for _ in range(args.repeat):
            run: list[Result] = []
            for name in programs:
                try:
                    session, truth = run_gyroscope(name, wd)
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    print(f"accuracy: {name}: {exc}", file=sys.stderr)
                    continue
                run += evaluate(name, session, truth)
                if peers:
                    run += peer_results(name, truth, wd)
            runs.append(run)
    results = median_results(runs)
    print(f"{'program':<12} {'measure':<38} {'truth':>14} {'got':>14} {'error':>10} {'tol':>7}")
    for tool in ("gyroscope", "pyinstrument", "py-spy"):
        rs = [r for r in results if r.tool == tool]
        if rs:
            print(f"-- {tool}")
            for r in rs:
                print(_fmt(r))
    bad = [r for r in results if r.tool == "gyroscope" and not r.ok]
    print(f"gyroscope: {len(bad)} of {sum(r.tool == 'gyroscope' for r in results)} measures out of tolerance "
          f"(median of {args.repeat} run(s), {time.perf_counter() - t0:.0f} s)")
    doc = {"repeat": args.repeat, "python": sys.version.split()[0], "cpus": os.cpu_count(),
           "results": [asdict(r) | {"ok": r.ok} for r in results]}
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, out)        # atomic, as the other benchmarks
    return 0


if __name__ == "__main__":
    sys.exit(main())
