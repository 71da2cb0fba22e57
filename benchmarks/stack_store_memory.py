"""Memory of the stack store over a long session with deep recursion and many distinct stacks.

Simulates what a sampler hands the session: `--minutes` of windows (`--window` s) in which each of
`--threads` threads is sampled `--hz` times per second; every sample is a recursion of random depth
(20 to `--max-depth-sampled` frames) through 300 functions in 40 files, starting at one of 300
functions with one of 8 line patterns: 300 x 381 x 8 = ~900,000 possible distinct stacks, so almost
every sample is a new stack. Samples are aggregated per window into StackSamples as a source does,
fed to one StackStore with the default bounds, and the traced memory (tracemalloc) of the store is
printed every simulated minute, with its distinct stacks / frames / frame refs and what it dropped.

    .venv/bin/python benchmarks/stack_store_memory.py                 # 10 simulated minutes
    .venv/bin/python benchmarks/stack_store_memory.py --minutes 1 --json out/stack_store.json

Stated bound (agent/profiles/store.py): ~65 MB worst case with the defaults.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import time
import tracemalloc

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--hz", type=float, default=100.0)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--window", type=float, default=0.2)
    ap.add_argument("--max-depth-sampled", type=int, default=400)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args()

    from gyroscope.agent.profiles.store import StackStore
    from gyroscope.bridges.events import Frame, StackSample

    rng = random.Random(args.seed)
    files = [f"/app/pkg/mod{i}.py" for i in range(40)]
    funcs = [Frame(files[i % 40], f"rec{i}", 0, 10 + i) for i in range(300)]
    pool = {}

    def frame(fi: int, line: int) -> Frame:
        key = (fi, line)
        f = pool.get(key)
        if f is None:
            base = funcs[fi]
            f = pool[key] = Frame(base.file, base.function, base.first_line + line, base.first_line)
        return f

    chains = {(s, v): tuple(frame((s + k * 7) % 300, (v * 13 + k * (v + 1)) % 4) for k in range(args.max_depth_sampled))
              for s in range(300) for v in range(8)}
    tracemalloc.start()
    store = StackStore()
    base_mem = tracemalloc.get_traced_memory()[0]
    windows = int(args.minutes * 60 / args.window)
    per_window = max(1, round(args.hz * args.window))
    step_ns = int(1e9 / args.hz)
    t0 = time.perf_counter()
    rows = []
    samples = 0
    peak = 0
    for w in range(windows):
        batch: dict[tuple, StackSample] = {}
        for t in range(args.threads):
            for _ in range(per_window):
                depth = rng.randint(20, args.max_depth_sampled)
                frames = chains[(rng.randrange(300), rng.randrange(8))][:depth]
                state = "run" if rng.random() < 0.7 else "wait"
                key = (t, frames, state)
                s = batch.get(key)
                if s is None:
                    batch[key] = StackSample(1, 100 + t, f"worker-{t}", frames, state, 1, step_ns,
                                             step_ns if state == "run" else 0)
                else:
                    s.count += 1
                    s.wall_ns += step_ns
                samples += 1
        store.add_many(batch.values())
        if (w + 1) % int(60 / args.window) == 0 or w == windows - 1:
            cur, pk = tracemalloc.get_traced_memory()
            mem = cur - base_mem
            peak = max(peak, pk - base_mem)
            minute = (w + 1) * args.window / 60
            row = {"minute": round(minute, 2), "samples": samples, "store_mb": round(mem / 2**20, 2),
                   "stacks": len(store.stacks), "frames": len(store.frames), "frame_refs": store.frame_refs,
                   "rows": len(store.rows), "samples_merged": store.dropped["samples_merged"],
                   "truncated": store.dropped["truncated_stacks"], "elapsed_s": round(time.perf_counter() - t0, 1)}
            rows.append(row)
            print("  ".join(f"{k} {v}" for k, v in row.items()), flush=True)
    tracemalloc.stop()
    assert store.totals()["samples"] == samples
    print(f"peak traced memory of the store: {peak / 2**20:.1f} MB (bounds {store.bounds}); "
          f"{samples} samples in {time.perf_counter() - t0:.1f}s "
          f"({samples / (time.perf_counter() - t0):,.0f} samples/s with tracemalloc on)")
    if args.json:
        from gyroscope.agent.result import write_json_atomic
        write_json_atomic(args.json, {"args": vars(args), "rows": rows, "peak_mb": round(peak / 2**20, 2),
                                      "bounds": store.bounds, "dropped": store.dropped})
    return 0


if __name__ == "__main__":
    sys.exit(main())
