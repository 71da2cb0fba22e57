"""What the typed session model costs: per entity record, and for a whole session file.

    .venv/bin/python benchmarks/model.py [--entities N] [--repeat R] [--json OUT]

Times, with the median of R repeats:
  entity.to_json     one EntityRecord as the report cycle hands it to the gate (no histograms)
  entity.from_json   one EntityRecord of a final result read back (with its two 64-bin arrays)
  session.to_json / session.from_json / save / load   a session of N entities (default 1,000)
The session is the tests' realistic fixture (tests/report_fixtures.py) with its loop entity
repeated N times.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gyroscope.agent.model import EntityRecord, SessionResult  # noqa: E402
from gyroscope.agent.result import write_json_atomic  # noqa: E402

from tests import report_fixtures as fx  # noqa: E402


def _median_s(fn: Any, repeat: int, number: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - t) / number)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entities", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", metavar="OUT", default=None)
    args = ap.parse_args()
    base = fx.model()
    ent = base.entities[0]
    cycle_ent = dataclasses.replace(ent, slcp=dataclasses.replace(ent.slcp, chi_hist64=None, spectral64=None))
    ent_doc = ent.to_json()
    session = dataclasses.replace(base, entities=[dataclasses.replace(ent, id=i + 1) for i in range(args.entities)])
    doc = session.to_json()
    rows: dict[str, float] = {
        "entity.to_json_us": _median_s(cycle_ent.to_json, args.repeat, 2000) * 1e6,
        "entity.from_json_us": _median_s(lambda: EntityRecord.from_json(ent_doc), args.repeat, 1000) * 1e6,
        "session.to_json_ms": _median_s(session.to_json, args.repeat, 1) * 1e3,
        "session.from_json_ms": _median_s(lambda: SessionResult.from_json(doc), args.repeat, 1) * 1e3,
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.json"
        rows["session.save_ms"] = _median_s(lambda: session.save(path), args.repeat, 1) * 1e3
        rows["session.load_ms"] = _median_s(lambda: SessionResult.load(path), args.repeat, 1) * 1e3
        size = path.stat().st_size
    print(f"typed session model, {args.entities} entities ({size / 1e6:.1f} MB file), median of {args.repeat}")
    for k, v in rows.items():
        print(f"  {k:<22} {v:10.2f}")
    if args.json:
        write_json_atomic(args.json, {"entities": args.entities, "repeat": args.repeat, "file_bytes": size, **rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
