"""A coroutine that blocks the event loop is found, with its exact blocked time (the program
measures its own truth with perf_counter around each blocking call)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

GYRO = str(Path(sys.executable).with_name("gyroscope"))

PROGRAM = """\
import asyncio, json, sys, time
blocked = []
async def ticker(n):
    for _ in range(n):
        await asyncio.sleep(0.01)
async def handler():
    for _ in range(3):
        await asyncio.sleep(0.05)
        t0 = time.perf_counter()
        time.sleep(0.15)            # blocks the event loop
        blocked.append(time.perf_counter() - t0)
async def main():
    await asyncio.gather(ticker(60), handler())
asyncio.run(main())
json.dump({"blocks": len(blocked), "blocked_s": sum(blocked)}, open(sys.argv[1], "w"))
"""


@pytest.mark.slow
def test_blocking_coroutine_found_with_its_exact_time(tmp_path):
    app = tmp_path / "app.py"
    app.write_text(PROGRAM)
    out, truth = tmp_path / "s.json", tmp_path / "truth.json"
    p = subprocess.run([GYRO, "run", "-q", "--json", str(out), str(app), str(truth)], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    doc, t = json.loads(out.read_text()), json.loads(truth.read_text())
    loops = [e for e in doc["entities"] if e["kind"] == "event_loop"]
    assert [e["function"] for e in loops] == ["handler"]
    m = loops[0]["measurements"]
    assert m["waits"] == t["blocks"] == 3
    assert abs(m["wait_s_total"] - t["blocked_s"]) <= 0.1 * t["blocked_s"]
    assert any(d["action"] == "mitigate_contention" and d["entity_kind"] == "event_loop" and d["function"] == "handler"
               for d in doc["decisions"])
    assert not any(d["function"] == "ticker" for d in doc["decisions"])
