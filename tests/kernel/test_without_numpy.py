"""A session's kernel path needs no numpy (the watcher's RSS and start-up), and gives the same
records as the numpy forms of the API."""
from __future__ import annotations

import array
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from gyroscope.cyext import lawcore
from gyroscope.cyext.twin import TwinCellPool

from tests.conftest import ENGINES

WATCHER = textwrap.dedent("""
    import array, sys
    import gyroscope.agent.session, gyroscope.agent.attach_command, gyroscope.agent.run_command
    import gyroscope.bridges.pyspy, gyroscope.bridges.run_source, gyroscope.bridges.multi_source
    from gyroscope.cyext import CellPool
    pool = CellPool(64)
    a, b = pool.allocate(), pool.allocate("shell", 3)
    pool.ingest(array.array("I", [a, b, a]), bytes([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]))
    rec = pool.record(a)
    assert rec["step"] == 8 and len(rec["spectral64"]) == 64 and len(pool) == 2
    print(sorted(m for m in sys.modules if m == "numpy" or m.startswith("numpy.")))
""")


def test_watcher_imports_and_pool_load_no_numpy() -> None:
    out = subprocess.run([sys.executable, "-c", WATCHER], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("engine", ENGINES)
def test_array_and_numpy_packets_agree(engine) -> None:
    rng = np.random.default_rng(7)
    p1, p2 = engine(32), engine(32)
    cells = [p1.allocate() for _ in range(6)]
    assert [p2.allocate() for _ in range(6)] == cells
    ids = rng.choice(cells, 300).astype(np.uint32)
    words = rng.integers(0, 256, (300, 4), dtype=np.uint8)
    p1.ingest(ids, words)
    p2.ingest(array.array("I", ids.tolist()), words.tobytes())
    r1, r2 = p1.records(np.array(cells)), p2.records(np.array(cells))
    for k in r1:
        assert np.array_equal(r1[k], r2[k]), k
    for i, c in enumerate(cells):      # one record = that row of the stacked arrays
        one = p1.record(c)
        assert one["spectral64"] == r1["spectral64"][i].tolist() and one["stabilizer_type"] == r1["stabilizer_type"][i]


def test_bad_array_packets_are_refused_and_apply_nothing() -> None:
    from gyroscope.cyext import CellPool, KernelError
    for pool in (CellPool(8), TwinCellPool(8)):
        a = pool.allocate()
        with pytest.raises(KernelError, match="4 bytes per cell id"):
            pool.ingest(array.array("I", [a]), b"\x01\x02\x03")
        with pytest.raises(KernelError, match="not allocated"):
            pool.ingest(array.array("I", [a, 5]), bytes(8))
        with pytest.raises(KernelError, match="out of range"):
            pool.ingest(array.array("I", [a, 99]), bytes(8))
        assert pool.record(a)["step"] == 0


def test_fast_walsh_hadamard_equals_the_matrix_form() -> None:
    rng = np.random.default_rng(3)
    k = np.arange(64)
    matrix = np.where(np.array([[bin(i & j).count("1") % 2 for j in k] for i in k]) == 1, -1.0, 1.0) / 8.0
    for _ in range(20):
        h = rng.integers(0, 65, 64)
        assert lawcore.wht64(h.tolist()) == (h.astype(np.float64) @ matrix).tolist()
