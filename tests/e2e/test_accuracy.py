"""gyroscope against truth (issue 13, "Proof"): the programs of tests/fixtures/truth/ time their own
loops, lock waits and blocking coroutines and write that truth to a file; each is run (3 times) under
`gyroscope run -q --json`; the median error is checked. Every measure is compared with the truth by
benchmarks/accuracy.py's `evaluate` (one definition of each measure and tolerance: counts 5% and
rates 10% for loops >= 0.2 s (the shorter ones are only reported by the benchmark),
CPU shares 5 points, lock wait totals 10% and counts 5%, waiting threads exact, decisions right).

A measure that is wrong today is kept and marked xfail (not strict) with the error measured
(`benchmarks/accuracy.py --repeat 3`, 2 cores, CPython 3.13): medians of 3 that straddle the
tolerance band from one series to the next. Whole file: ~30 s.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

_spec = importlib.util.spec_from_file_location(
    "gyro_accuracy_bench", Path(__file__).resolve().parents[2] / "benchmarks" / "accuracy.py")
bench = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = bench     # dataclasses resolve their module by name
_spec.loader.exec_module(bench)

pytestmark = pytest.mark.slow
REPEAT = 3      # medians of 3 runs: one run straddles the tolerance band on 2 shared cores

# measured on 2026-12-01 and 2026-12-02 (`benchmarks/accuracy.py --repeat 3`, and `--quick`);
# errors: got / truth - 1, or points of CPU share. Read from the loops' range iterators
# (bridges/_inproc.pyx "spans", "coverage"), the rates measured -2.3%..+6.7% and the counts of
# hot_loop, two_loops and stat_loop -1.7%..+0.2% in single runs on a quiet machine
_COUNT = ("a range loop whose runs all were counted (hits, iterator readings, the code re-armed as "
          "each run of >= 0.4-1 ms ends) is counted whole; else what was counted, or the measured rate x "
          "the sampled running time when more, which carries the sampler's running-time error; ")
XFAIL: dict[tuple[str, str], tuple[bool, str]] = {
    ("cpu_split", "heavy.iterations"): (False, _COUNT + "measured -10.6%..+8.5% (runs of 1.4 ms; medians "
                                                        "+0.0% in the last three series, +2.9% before); "
                                                        "exact in 8 of 8 runs since a return that re-arms "
                                                        "its code no longer disables itself (stop 22), "
                                                        "kept for a loaded machine, where a re-arm costs "
                                                        "more and 1.4 ms may fall under 200x its cost"),
    ("threadpool", "task.iterations"): (False, _COUNT + "4 threads (never counted whole): measured "
                                                        "-14.4%..+17.4% (medians +0.7%..+5.0%)"),
    ("stat_loop", "work.iterations_per_s"): (False, "-2.3%..+4.0% on a quiet machine; -27% and -23% in two "
                                                    "of three runs of a CI check while the machine "
                                                    "also compiled (the rate is read over the runs' "
                                                    "free stretches, which then ran slower than the "
                                                    "program's average)"),
    ("cpu_split", "heavy.cpu_share"): (False, "from the samples -9.4..+5.3 points: 2 ms alternations sampled "
                                              "at 400-200 Hz in a 0.3 s program (py-spy's sample times are "
                                              "when it writes them); counted whole (8 of 8 runs of stop "
                                              "22), count / rate: -3.7..-0.1"),
    ("cpu_split", "light.cpu_share"): (False, "from the samples -6.8..+9.2 points; counted whole, count / "
                                              "rate: -1.4..-0.2"),
    ("threadpool", "task.decided_specialize_hot_loop"): (False, "decided 3 of 3 on a quiet machine; on a "
                                                                "loaded one the workers' waits for a core "
                                                                "look like blocked time and drop it"),
}

CASES: list[tuple[str, str]] = [
    ("hot_loop", "spin.iterations"), ("hot_loop", "spin.iterations_per_s"),
    ("hot_loop", "spin.decided_specialize_hot_loop"),
    ("short_loop", "brief.decided_specialize_hot_loop"),
    ("two_loops", "big.iterations"), ("two_loops", "big.iterations_per_s"),
    ("two_loops", "big.cpu_share"), ("two_loops", "small.cpu_share"),
    ("stat_loop", "work.iterations"), ("stat_loop", "work.iterations_per_s"), ("stat_loop", "work.cpu_share"),
    ("stat_loop", "work.decided_specialize_hot_loop"),
    ("cpu_split", "heavy.iterations"), ("cpu_split", "heavy.iterations_per_s"),
    ("cpu_split", "heavy.cpu_share"), ("cpu_split", "light.cpu_share"),
    *[("iter_loops", f"{fn}.{m}") for fn in ("over_list", "over_tuple", "over_gen", "whiled")
      for m in ("iterations", "iterations_per_s")],
    *[("iter_loops", f"{fn}.cpu_share") for fn in ("over_list", "over_tuple", "whiled")],
    ("numpy_loop", "crunch.decided_specialize_hot_loop"),
    ("async_block", "event_loop.found"), ("async_block", "event_loop.blocks"),
    ("async_block", "event_loop.blocked_s"), ("async_block", "event_loop.decided_mitigate_contention"),
    ("threadpool", "task.iterations"), ("threadpool", "top_loop_is_task"),
    ("threadpool", "task.decided_specialize_hot_loop"),
    ("threadpool", "futures_worker_loop.cpu_share"),
    *[("locks", f"{name}.{m}") for name in bench.LOCK_VARS for m in ("wait_s_total", "waits", "waiting_threads")
      if not (name in bench.UNCOUNTED and m == "waits")],     # reported only (see bench.evaluate)
    ("locks", "all.sampled_duplicates"),
    *[(p, "no_decision_on_module") for p in bench.PROGRAMS],
]


def _param(program: str, measure: str) -> Any:
    mark = XFAIL.get((program, measure))
    marks = [pytest.mark.xfail(strict=mark[0], reason=mark[1])] if mark else []
    return pytest.param(program, measure, marks=marks, id=f"{program}-{measure}")


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory):
    """program -> {measure: Result}: the median of REPEAT runs under gyroscope (on first use)."""
    cache: dict[str, dict[str, Any]] = {}
    wd = tmp_path_factory.mktemp("accuracy")

    def get(program: str) -> dict[str, Any]:
        if program == "numpy_loop":
            pytest.importorskip("numpy")
        if program not in cache:
            runs = []
            for _ in range(REPEAT):
                session, truth = bench.run_gyroscope(program, wd)
                runs.append(bench.evaluate(program, session, truth))
            cache[program] = {r.measure: r for r in bench.median_results(runs)}
        return cache[program]
    return get


@pytest.mark.parametrize(("program", "measure"), [_param(p, m) for p, m in CASES])
def test_against_truth(results, program: str, measure: str) -> None:
    r = results(program).get(measure)
    assert r is not None, f"{program}: no measure {measure} in {sorted(results(program))}"
    assert r.ok, f"{program} {measure}: truth {r.truth:.6g}, gyroscope {r.got:.6g}, error {r.error:+.3g} " \
                 f"({r.unit}), tolerance {r.tolerance}"


def test_every_case_is_evaluated() -> None:
    """Every measure evaluate() produces for the set is a case here (the table is complete)."""
    assert {p for p, _ in CASES} == set(bench.PROGRAMS)
    assert set(XFAIL) <= set(CASES)
