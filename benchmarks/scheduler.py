"""Benchmark LatticeOS: CoherenceExecutor vs ThreadPoolExecutor, and the priority actuator.

  .venv/bin/python benchmarks/scheduler.py [--json OUT] [--section executor|priorities|all]
      [--tasks N] [--workers W] [--reps R] [--seconds S]

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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write results here")
    ap.add_argument("--section", choices=("executor", "priorities", "all"), default="all")
    ap.add_argument("--tasks", type=int, default=600)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--others", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=2.0)
    args = ap.parse_args()
    res: dict = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
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
