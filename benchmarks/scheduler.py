"""Benchmark LatticeOS: CoherenceExecutor vs ThreadPoolExecutor, and the priority actuator.

  .venv/bin/python benchmarks/scheduler.py [--json OUT]
      [--section feedback|seed003|executor|priorities|all] [--tasks N] [--workers W] [--reps R]
      [--mode injected|live|both] [--live-tasks N] [--window S] [--seconds S] [--no-gyroscope]

feedback (the default; issue 16): the executor fed by gyroscope's decisions. Every measured run
is a child process started as `gyroscope run [--window S] benchmarks/scheduler.py --child ...`
(or plain python with --no-gyroscope, injected mode only), ThreadPoolExecutor and
CoherenceExecutor alternating, same workers, median of R:
  contention: half the tasks write a shared dict under one lock (held ~1.2 ms: ~0.2 ms of pure
    Python, then a 1 ms write modelled as a sleep), half sleep 2 ms (I/O) then compute ~0.45 ms.
    Measured by the program: lock wait (perf_counter around
    acquire(), summed over tasks), mean lock hold (acquire -> release), context switches (getrusage RUSAGE_SELF, voluntary +
    involuntary, delta over the workload), wall time.
  nocontention: the same tasks without the lock (the writes go to per-task dicts) and no
    decisions: the cost of the executor itself.
  Two ways the decisions reach the pool, side by side (--mode both, the default):
  injected: `--tasks` tasks (default 600, shorter than gyroscope's first report cycle), so the
    decisions come from a learning run first: the contention workload on a ThreadPoolExecutor
    under `gyroscope run --json`, whose mitigate_contention decisions are then injected into each
    child (live.inject) at its start, after an untimed warm-up run of 1/10 of the tasks.
  live: `--live-tasks` tasks (default 6000, ~4 s), no injection and no warm-up: the pool starts
    without decisions; gyroscope's first report cycles (every 5 windows: ~1 s with the default
    0.2 s window, ~0.25 s with --window 0.05) send them back while it runs and the executor
    re-routes what is pending (it learns online). Besides the whole run, the child reports
    when the first decisions arrived (checked in the pool's completion callbacks) and the
    wall time, lock wait and context switches from then on ("_after").
seed003: seed 003's claim (coherence ordering gives 20-40% fewer context switches), re-tested with
  decisions instead of hints: the executor section's workload, with a specialize_hot_loop
  decision on the numeric task injected (coherence-first for those tasks), in this process.

executor: the same mixed workload (numeric tasks on smooth and noisy arrays doing FFT + matmul,
and IO-like time.sleep tasks), submitted in one burst to each executor, alternating, R reps.
Reports throughput (tasks/s), latency p50/p95/p99 (submit -> done), and context switches of the
process's threads (sum of voluntary + nonvoluntary_ctxt_switches over /proc/self/task/*/status,
delta over the run; threads started during the run count from 0). Ratios are Coherence / Thread.
priorities: 1 hot + K CPU-bound spinner processes all pinned to CPU 0; the hot process's CPU
share (utime+stime from /proc/<pid>/task/<pid>/stat over S seconds) without and with
PriorityActuator lowering the spinners (nice; then SCHED_BATCH).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from gyroscope.schedulers.coherence import coherence_score  # noqa: E402
from gyroscope.schedulers.executor import CoherenceExecutor  # noqa: E402
from gyroscope.schedulers.priorities import PriorityActuator, thread_cpu_ticks  # noqa: E402


def ctx_switches() -> dict[int, int]:
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/status") as f:
                n = 0
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        n += int(line.split()[1])
            out[int(tid)] = n
        except OSError:
            pass
    return out


def ctx_delta(before: dict[int, int], after: dict[int, int]) -> int:
    return sum(v - before.get(t, 0) for t, v in after.items())


def numeric_task(a: np.ndarray) -> float:
    m = a[:4096].reshape(64, 64)
    return float(np.abs(np.fft.rfft(a)).sum() + (m @ m.T).trace())


def io_task(s: float) -> float:
    time.sleep(s)
    return s


def workload(n: int, seed: int = 0) -> list[tuple]:
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        r = i % 3
        if r == 0:
            a = np.sin(np.linspace(0, rng.uniform(1, 20), 8192)) + 0.01 * rng.standard_normal(8192)
            items.append((numeric_task, (a,), a, "numeric-smooth"))
        elif r == 1:
            a = rng.standard_normal(8192)
            items.append((numeric_task, (a,), a, "numeric-noisy"))
        else:
            items.append((io_task, (0.002,), None, "io-sleep"))
    return items


def run_once(kind: str, items: list[tuple], workers: int, batch: int = 8) -> dict:
    lat: list[float] = []
    by_kind: dict[str, list[float]] = {}
    scores = [coherence_score(d) if d is not None else None for _, _, d, _ in items]
    ex = CoherenceExecutor(workers, max_batch_size=max(batch, 1)) if kind != "thread" else ThreadPoolExecutor(workers)
    c0 = ctx_switches()
    t0 = time.perf_counter()
    futs = []
    for (fn, args, _, key), c in zip(items, scores):
        ts = time.perf_counter()
        if kind == "thread" or batch == 0:
            f = ex.submit(fn, *args)  # no hints: CoherenceExecutor degenerates to FIFO
        else:
            f = ex.submit_with(fn, *args, coherence=c, key=key)
        f.add_done_callback(lambda _f, ts=ts, k=key: (lat.append(time.perf_counter() - ts),
                                                      by_kind.setdefault(k, []).append(time.perf_counter() - ts)))
        futs.append(f)
    wait(futs)
    wall = time.perf_counter() - t0
    c1 = ctx_switches()
    ex.shutdown(wait=True)
    q = statistics.quantiles(lat, n=100)
    return {"wall_s": wall, "throughput": len(items) / wall, "p50_ms": 1e3 * q[49], "p95_ms": 1e3 * q[94],
            "p99_ms": 1e3 * q[98], "ctx_switches": ctx_delta(c0, c1),
            **{f"p50_{k.split('-')[-1]}_ms": 1e3 * statistics.median(v) for k, v in sorted(by_kind.items())}}


def bench_executor(n: int, workers: int, reps: int) -> dict:
    items = workload(n)
    kinds = {"thread": 0, "coherence_fifo": 0, "coherence_b1": 1, "coherence_b8": 8}
    runs: dict[str, list[dict]] = {k: [] for k in kinds}
    run_once("thread", items[: n // 10], workers)  # warm-up
    for _ in range(reps):
        for kind, b in kinds.items():
            runs[kind].append(run_once(kind, items, workers, b))
    med = {k: {m: statistics.median(r[m] for r in v) for m in v[0]} for k, v in runs.items()}
    ratios = {k: {m: med[k][m] / med["thread"][m] for m in med["thread"] if med["thread"][m]}
              for k in kinds if k != "thread"}
    print(f"\nexecutor: {n} tasks (1/3 smooth FFT+matmul, 1/3 noisy, 1/3 sleep 2 ms), {workers} workers, "
          f"median of {reps}")
    print("(coherence_fifo: CoherenceExecutor, plain submit without hints; coherence_bN: coherence hints and "
          "resonance key = task kind, max_batch_size N; ratio = variant / ThreadPool)")
    names = [k for k in kinds if k != "thread"]
    print(f"{'metric':<14}{'ThreadPool':>12}" + "".join(f"{k:>16}" for k in names)
          + "".join(f"{'ratio ' + k.split('_')[1]:>12}" for k in names))
    for m in med["thread"]:
        print(f"{m:<14}{med['thread'][m]:>12.2f}" + "".join(f"{med[k][m]:>16.2f}" for k in names)
              + "".join(f"{ratios[k].get(m, float('nan')):>12.3f}" for k in names))
    return {"tasks": n, "workers": workers, "reps": reps, "median": med, "ratios_coherence_over_thread": ratios,
            "runs": runs}


def _spin() -> None:
    x = 0
    while True:
        x += 1


def _cpu_shares(pids: list[int], seconds: float) -> list[float]:
    a = [thread_cpu_ticks(p, p) or 0 for p in pids]
    time.sleep(seconds)
    b = [thread_cpu_ticks(p, p) or 0 for p in pids]
    d = [y - x for x, y in zip(a, b)]
    tot = sum(d) or 1
    return [v / tot for v in d]


def bench_priorities(others: int, seconds: float) -> dict:
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_spin, daemon=True) for _ in range(others + 1)]
    for p in procs:
        p.start()
    pids = [p.pid for p in procs]
    out: dict = {"others": others, "seconds": seconds, "pinned_cpu": 0}
    try:
        cpu = sorted(os.sched_getaffinity(0))[0]
        out["pinned_cpu"] = cpu
        for pid in pids:
            os.sched_setaffinity(pid, {cpu})
        time.sleep(0.3)
        base = _cpu_shares(pids, seconds)
        out["without"] = {"hot_share": base[0], "others_shares": base[1:]}
        for mech in ("nice", "sched_batch"):
            act = PriorityActuator(mech, register_atexit=False)
            recs = [act.lower(pid, "benchmark: background spinner") for pid in pids[1:]]
            time.sleep(0.3)
            sh = _cpu_shares(pids, seconds)
            rep = act.restore_all()
            out[f"with_{mech}"] = {"hot_share": sh[0], "others_shares": sh[1:], "actions": recs + rep["actions"],
                                   "restored": rep["restored"]}
    finally:
        for p in procs:
            p.kill()
            p.join()
    fair = 1 / (others + 1)
    print(f"\npriorities: 1 hot + {others} CPU-bound processes pinned to CPU {out['pinned_cpu']}, {seconds} s each "
          f"(fair share {fair:.3f})")
    print(f"{'case':<16}{'hot share':>12}{'others (each)':>30}")
    for case in ("without", "with_nice", "with_sched_batch"):
        r = out[case]
        print(f"{case:<16}{r['hot_share']:>12.3f}{' '.join(f'{s:.3f}' for s in r['others_shares']):>30}")
    print(f"hot share ratio with nice / without: {out['with_nice']['hot_share'] / out['without']['hot_share']:.2f}; "
          f"sched_batch / without: {out['with_sched_batch']['hot_share'] / out['without']['hot_share']:.2f}")
    return out


# ---- feedback: the executor fed by gyroscope's decisions (issue 16) ---------------------------
LOCK = threading.Lock()
SHARED: dict[int, int] = {}
HOLD_ITERS = 2000     # ~0.2 ms of pure Python under the lock (0.44 ms per 4000 on this machine)
WRITE_S = 0.001       # the write itself (device / socket latency, GIL released), under the lock
COMPUTE_ITERS = 4000  # ~0.45 ms after the sleep
IO_S = 0.002


class LockWait:
    """Lock wait time measured by the program itself: perf_counter around acquire(). Also keeps
    each acquire's (start, wait) so a live run can split the waits at the decisions' arrival."""

    def __init__(self) -> None:
        self.total = 0.0
        self.hold = 0.0
        self.n = 0
        self.each: list[tuple[float, float]] = []
        self.mu = threading.Lock()

    def reset(self) -> None:
        self.total, self.hold, self.n, self.each = 0.0, 0.0, 0, []

    def add(self, t: float, dt: float, hold: float) -> None:
        with self.mu:
            self.total += dt
            self.hold += hold
            self.n += 1
            self.each.append((t, dt))


WAITS = LockWait()


def write_shared(i: int) -> int:
    """The lock task: read-modify-write of the shared dict under LOCK."""
    t = time.perf_counter()
    LOCK.acquire()
    t1 = time.perf_counter()
    try:
        acc = 0
        for k in range(HOLD_ITERS):
            acc += k * k % 7
        SHARED[i % 64] = SHARED.get(i % 64, 0) + acc
        time.sleep(WRITE_S)
    finally:
        t2 = time.perf_counter()
        LOCK.release()
    WAITS.add(t, t1 - t, t2 - t1)
    return acc


def write_private(i: int) -> int:
    """The same work without the lock (no-contention workload)."""
    acc = 0
    for k in range(HOLD_ITERS):
        acc += k * k % 7
    time.sleep(WRITE_S)
    return {i % 64: acc}[i % 64]


def fetch_then_compute(i: int) -> int:
    """The I/O task: a 2 ms wait, then ~1 ms of compute."""
    time.sleep(IO_S)
    acc = 0
    for k in range(COMPUTE_ITERS):
        acc += k * k % 5
    return acc


def _rusage_ctx() -> int:
    import resource
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_nvcsw + r.ru_nivcsw


class _Arrival:
    """When the first live decisions arrived during a run (live mode), and the context switches
    until then. A poll of live.version() on a timer thread would add context switches to both
    pools, so the pool's own completion callbacks check it (once known: one compare per task)."""

    def __init__(self, t0: float, v0: int) -> None:
        self.t0, self.v0, self.at, self.ctx = t0, v0, None, None

    def __call__(self, _f: object) -> None:
        if self.at is None:
            from gyroscope.schedulers import live
            if live.version() != self.v0 and live.decisions():
                self.ctx = _rusage_ctx()
                self.at = time.perf_counter() - self.t0


def run_pool(pool: str, workload: str, tasks: int, workers: int, watch_live: bool = False) -> dict:
    """One measured run in this process: submit all tasks in one burst, wait for all.
    watch_live: also say when the live decisions arrived and split the lock waits there."""
    from gyroscope.schedulers import live
    writer = write_shared if workload == "contention" else write_private
    fns = [writer if i % 2 == 0 else fetch_then_compute for i in range(tasks)]
    ex = ThreadPoolExecutor(workers) if pool == "thread" else CoherenceExecutor(workers)
    WAITS.reset()
    c0 = _rusage_ctx()
    t0 = time.perf_counter()
    u0 = time.time()
    arrival = _Arrival(t0, live.version()) if watch_live else None
    futs = [ex.submit(fn, i) for i, fn in enumerate(fns)]
    if arrival is not None:
        for f in futs:
            f.add_done_callback(arrival)
    wait(futs)
    wall = time.perf_counter() - t0
    c1 = _rusage_ctx()
    ex.shutdown(wait=True)
    for f in futs:
        f.result()
    out = {"wall_s": wall, "lock_wait_s": WAITS.total, "lock_waits": WAITS.n, "ctx_switches": c1 - c0,
           "lock_hold_ms_mean": 1e3 * WAITS.hold / WAITS.n if WAITS.n else 0.0}
    if arrival is not None:
        at = arrival.at
        out["decisions_at_s"] = at
        out["lock_wait_after_s"] = sum(dt for t, dt in WAITS.each if at is not None and t - t0 >= at)
        out["lock_wait_before_s"] = out["lock_wait_s"] - out["lock_wait_after_s"]
        out["wall_after_s"] = wall - at if at is not None else None
        out["ctx_switches_after"] = c1 - arrival.ctx if arrival.ctx is not None else None
    if pool != "thread":
        out["stats"] = ex.stats
        out["actions"] = ex.actions
        lanes = [a for a in ex.actions if a.get("action") == "route_to_lane"]
        out["lane_at_s"] = (lanes[0]["t_unix"] - u0) if lanes else None
    return out


def child_main(args: argparse.Namespace) -> int:
    """--child: one measured run (under gyroscope run or python); writes its numbers to --out.
    --live: no injection and no warm-up: the pool starts without decisions and picks them up
    when gyroscope sends them (the first report cycles)."""
    from gyroscope.schedulers import live
    source = "none"
    if args.live:
        source = "live"
    elif live.decisions():
        source = "live"
    elif args.decisions:
        with open(args.decisions) as f:
            decs = json.load(f)
        if decs:
            live.inject(decs)
            source = "injected"
    if not args.live:
        run_pool(args.pool, args.child, max(8, args.tasks // 10), args.workers)  # warm-up (untimed)
    res = run_pool(args.pool, args.child, args.tasks, args.workers, watch_live=args.live)
    res["decisions_source"] = source
    res["decisions"] = [{k: d.get(k) for k in ("action", "kind", "function", "line")} for d in live.decisions()]
    with open(args.out, "w") as f:
        json.dump(res, f, default=str)
    return 0


def _child(workload: str, pool: str, args: argparse.Namespace, decisions: str | None, tmp: str,
           under_gyroscope: bool, json_out: str | None = None, live_mode: bool = False) -> dict:
    import subprocess
    out = os.path.join(tmp, f"{workload}-{pool}.json")
    here = os.path.abspath(__file__)
    tasks = args.live_tasks if live_mode else args.tasks
    cmd = [here, "--child", workload, "--pool", pool, "--tasks", str(tasks), "--workers",
           str(args.workers), "--out", out] + (["--decisions", decisions] if decisions else []) + (
        ["--live"] if live_mode else [])
    if under_gyroscope:
        gyro = os.path.join(os.path.dirname(sys.executable), "gyroscope")
        cmd = [gyro, "run", "-q"] + (["--window", str(args.window)] if args.window else []) + (
            ["--json", json_out] if json_out else []) + cmd
    else:
        cmd = [sys.executable] + cmd
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=300)
    if r.returncode != 0:
        raise SystemExit(f"scheduler benchmark: child failed ({r.returncode}): {r.stderr.strip()[-400:]}")
    with open(out) as f:
        return json.load(f)


def learn_decisions(args: argparse.Namespace, tmp: str, tries: int = 3) -> tuple[list[dict], dict]:
    """The decisions gyroscope makes on the contention workload run on a ThreadPoolExecutor.

    The learning run is longer (>= 4000 tasks, ~2 s) so that several report cycles see the lock;
    it is repeated (up to `tries`) while no mitigate_contention decision comes out."""
    session = os.path.join(tmp, "learn-session.json")
    learn_args = argparse.Namespace(**{**vars(args), "tasks": max(args.tasks, 4000)})
    info: dict = {"tries": 0}
    decs: list[dict] = []
    for _ in range(tries):
        info["tries"] += 1
        _child("contention", "thread", learn_args, None, tmp, True, json_out=session)
        with open(session) as f:
            res = json.load(f)
        decs = [d for d in res.get("decisions", []) if d.get("action") == "mitigate_contention"]
        info.update({"session_duration_s": res.get("duration_s"), "decisions": [
            {k: d.get(k) for k in ("action", "entity_kind", "file", "function", "line")} for d in res["decisions"]]})
        if decs:
            break
    return decs, info


def _identity(i: int) -> int:
    return i


def executor_overhead(n: int = 20000, reps: int = 5, workers: int = 4) -> dict:
    """Per-task cost of each executor on trivial tasks (in this process, no decisions), median of
    reps: ThreadPoolExecutor, CoherenceExecutor with submit() only (its plain mode: submission
    order, no policy lock) and with submit_with(coherence=0.5) (the policy: heap, lanes, lock)."""
    res: dict[str, list[float]] = {"thread": [], "coherence": [], "coherence_policy": []}
    for _ in range(reps):
        for kind in res:
            ex = ThreadPoolExecutor(workers) if kind == "thread" else CoherenceExecutor(workers)
            t = time.perf_counter()
            if kind == "coherence_policy":
                wait([ex.submit_with(_identity, i, coherence=0.5) for i in range(n)])
            else:
                wait([ex.submit(_identity, i) for i in range(n)])
            res[kind].append(time.perf_counter() - t)
            ex.shutdown()
    return {f"{k}_us_per_task": 1e6 * statistics.median(v) / n for k, v in res.items()}


METRICS = ("wall_s", "lock_wait_s", "ctx_switches", "lock_hold_ms_mean")
LIVE_METRICS = ("decisions_at_s", "wall_after_s", "lock_wait_after_s", "ctx_switches_after")
GOALS = {"lock_wait_s": 0.5, "ctx_switches": 0.8, "wall_s": 1.0}


def _median(vals: list) -> float | None:
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def _compare(args: argparse.Namespace, tmp: str, under: bool, dpath: str | None, live_mode: bool) -> dict:
    """Both workloads, ThreadPoolExecutor and CoherenceExecutor alternating, median of reps."""
    out: dict = {}
    metrics = METRICS + (LIVE_METRICS if live_mode else ())
    for workload in ("contention", "nocontention"):
        runs: dict[str, list[dict]] = {"thread": [], "coherence": []}
        for _ in range(args.reps):
            for pool in runs:
                runs[pool].append(_child(workload, pool, args, dpath if workload == "contention" else None,
                                         tmp, under, live_mode=live_mode))
        med = {p: {m: _median([r.get(m) for r in v]) for m in metrics} for p, v in runs.items()}
        ratio = {m: (med["coherence"][m] / med["thread"][m] if med["thread"][m] else None) for m in metrics}
        out[workload] = {"median": med, "ratio_coherence_over_thread": ratio, "runs": runs}
    c, n = out["contention"]["ratio_coherence_over_thread"], out["nocontention"]["ratio_coherence_over_thread"]
    out["goals"] = {f"contention {m} <= {g}x": (c[m] is not None and c[m] <= g) for m, g in GOALS.items()}
    out["goals"]["nocontention wall_s <= 1.02x"] = n["wall_s"] is not None and n["wall_s"] <= 1.02
    return out


def bench_feedback(args: argparse.Namespace) -> dict:
    """The two ways the decisions reach the executor, side by side (--mode injected|live|both)."""
    import tempfile
    under = not args.no_gyroscope
    modes = ("injected", "live") if args.mode == "both" else (args.mode,)
    if "live" in modes and not under:
        raise SystemExit("scheduler benchmark: --mode live needs gyroscope run (drop --no-gyroscope)")
    out: dict = {"tasks": args.tasks, "live_tasks": args.live_tasks, "workers": args.workers, "reps": args.reps,
                 "under_gyroscope": under, "window_s": args.window, "modes": list(modes)}
    with tempfile.TemporaryDirectory(prefix="gyro-sched-") as tmp:
        if "injected" in modes:
            decs, info = learn_decisions(args, tmp)
            out["learned"] = info
            dpath = os.path.join(tmp, "decisions.json")
            with open(dpath, "w") as f:
                json.dump(decs, f)
            out["injected"] = _compare(args, tmp, under, dpath, live_mode=False)
        if "live" in modes:
            out["live"] = _compare(args, tmp, under, None, live_mode=True)
    _print_feedback(args, out, modes)
    out["overhead"] = executor_overhead(workers=args.workers)
    o = out["overhead"]
    print("executor cost per trivial task (20,000 tasks, no decisions, in this process, median of 5): ThreadPool "
          f"{o['thread_us_per_task']:.1f} us, Coherence {o['coherence_us_per_task']:.1f} us (submit: plain mode), "
          f"{o['coherence_policy_us_per_task']:.1f} us (submit_with: the policy)")
    return out


def _print_feedback(args: argparse.Namespace, out: dict, modes: tuple[str, ...]) -> None:
    win = f"--window {args.window}" if args.window else "the default window (0.2 s, a report cycle per 1 s)"
    print(f"\nfeedback: 1/2 of the tasks write under one lock (~1.2 ms), 1/2 sleep 2 ms + compute ~0.45 ms; "
          f"{args.workers} workers; median of {args.reps}; each run a child under "
          f"{'gyroscope run' if out['under_gyroscope'] else 'python'} with {win}")
    if "injected" in modes:
        info = out["learned"]
        print(f"  injected: {args.tasks} tasks; decisions from a learning run, injected at the child's start: "
              + "; ".join(f"{d['action']} {d['function']}:{d['line']}" for d in info["decisions"]))
    if "live" in modes:
        runs = out["live"]["contention"]["runs"]
        at = [r.get("decisions_at_s") for p in runs for r in runs[p]]
        lane = [r.get("lane_at_s") for r in runs["coherence"]]
        print(f"  live: {args.live_tasks} tasks; no injection, no warm-up: the decisions arrive while the pool runs "
              f"(at {', '.join('-' if a is None else f'{a:.2f}' for a in at)} s into the runs; the lane created at "
              f"{', '.join('-' if a is None else f'{a:.2f}' for a in lane)} s)")
    head = f"{'workload':<14}{'metric':<19}"
    for m in modes:
        head += f"{m + ' Thread':>16}{'Coherence':>11}{'ratio':>8}"
    print(head)
    for w in ("contention", "nocontention"):
        for metric in METRICS + LIVE_METRICS:
            if metric in LIVE_METRICS and (w != "contention" or "live" not in modes):
                continue
            row = f"{w:<14}{metric:<19}"
            for m in modes:
                med, r = out[m][w]["median"], out[m][w]["ratio_coherence_over_thread"]
                t, c = med["thread"].get(metric), med["coherence"].get(metric)
                row += (f"{'-' if t is None else f'{t:.4f}':>16}{'-' if c is None else f'{c:.4f}':>11}"
                        f"{'-' if r.get(metric) is None else f'{r[metric]:.3f}':>8}")
            print(row)
    for m in modes:
        for g, ok in out[m]["goals"].items():
            print(f"  {m}: goal {g}: {'met' if ok else 'NOT met'}")


def bench_seed003(n: int, workers: int, reps: int) -> dict:
    """Seed 003's claim, with a hot-loop decision on numeric_task instead of hints."""
    from gyroscope.schedulers import live
    items = workload(n)
    code = numeric_task.__code__
    decision = {"action": "specialize_hot_loop", "kind": "loop", "file": code.co_filename,
                "function": code.co_qualname, "line": code.co_firstlineno + 2, "threads": [], "call_sites": []}
    runs: dict[str, list[dict]] = {"thread": [], "coherence_decided": []}
    run_once("thread", items[: n // 10], workers)  # warm-up
    try:
        for _ in range(reps):
            live.inject([])
            runs["thread"].append(run_once("thread", items, workers))
            live.inject([decision])
            runs["coherence_decided"].append(run_once("coherence", items, workers, 0))
    finally:
        live.inject(None)
    med = {k: {m: statistics.median(r[m] for r in v) for m in v[0]} for k, v in runs.items()}
    ratio = {m: med["coherence_decided"][m] / med["thread"][m] for m in med["thread"] if med["thread"][m]}
    print(f"\nseed003: {n} tasks (1/3 smooth, 1/3 noisy FFT+matmul, 1/3 sleep 2 ms), {workers} workers, median of "
          f"{reps}; CoherenceExecutor with a specialize_hot_loop decision on numeric_task (coherence-first), no hints")
    print(f"{'metric':<14}{'ThreadPool':>12}{'Coherence':>12}{'ratio':>8}")
    for m in med["thread"]:
        print(f"{m:<14}{med['thread'][m]:>12.2f}{med['coherence_decided'][m]:>12.2f}{ratio.get(m, float('nan')):>8.3f}")
    return {"tasks": n, "workers": workers, "reps": reps, "median": med, "ratio_coherence_over_thread": ratio,
            "runs": runs}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write results here")
    ap.add_argument("--section", choices=("feedback", "seed003", "executor", "priorities", "all"), default="feedback")
    ap.add_argument("--no-gyroscope", action="store_true", help="feedback: run the children under python")
    ap.add_argument("--child", choices=("contention", "nocontention"), help=argparse.SUPPRESS)
    ap.add_argument("--pool", choices=("thread", "coherence"), default="thread", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--decisions", help=argparse.SUPPRESS)
    ap.add_argument("--live", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--mode", choices=("injected", "live", "both"), default="both",
                    help="feedback: decisions injected from a learning run, learned live, or both side by side")
    ap.add_argument("--live-tasks", type=int, default=6000,
                    help="feedback, live mode: tasks per run (long enough for the decisions to arrive mid-run)")
    ap.add_argument("--window", type=float, help="feedback: gyroscope run --window for the children")
    ap.add_argument("--tasks", type=int, default=600)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--others", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=2.0)
    args = ap.parse_args()
    if args.child:
        return child_main(args)
    res: dict = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    if args.section in ("feedback", "all"):
        res["feedback"] = bench_feedback(args)
    if args.section in ("seed003", "all"):
        res["seed003"] = bench_seed003(args.tasks, args.workers, args.reps)
    if args.section in ("executor", "all"):
        res["executor"] = bench_executor(args.tasks, args.workers, args.reps)
    if args.section in ("priorities", "all"):
        res["priorities"] = bench_priorities(args.others, args.seconds)
    if args.json:
        from gyroscope.agent.result import write_text_atomic
        write_text_atomic(args.json, json.dumps(res, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
