"""`gyroscope replay`: summary, --verify, --snapshot, and one-line errors for bad ledgers."""
from __future__ import annotations

import numpy as np
import pytest
from gyroscope.agent.cli import main
from gyroscope.cyext import CellPool


@pytest.fixture
def ledger(tmp_path):
    path, snap = tmp_path / "run.ledger", tmp_path / "run.snap"
    pool = CellPool(64, "chirality", ledger=path)
    ids = np.array([pool.allocate() for _ in range(5)], dtype=np.int64)
    rng = np.random.default_rng(7)
    for _ in range(8):
        c = rng.integers(0, 5, 40)
        pool.ingest(ids[c], rng.integers(0, 256, (40, 4), dtype=np.uint8))
    pool.snapshot(snap)
    pool.close()
    return path, snap


def test_summary_verify_and_snapshot(ledger, tmp_path, capsys):
    path, snap = ledger
    out_snap = tmp_path / "again.snap"
    assert main(["replay", str(path), "--verify", str(snap), "--snapshot", str(out_snap)]) == 0
    out = capsys.readouterr().out
    assert "325 records (320 words, 5 control)" in out and "5 cells allocated" in out
    assert "verified" in out
    # the snapshot written by replay verifies too
    assert main(["replay", str(path), "--verify", str(out_snap)]) == 0


def test_truncated_tail_is_reported(ledger, tmp_path, capsys):
    path, snap = ledger
    cut = tmp_path / "cut.ledger"
    data = path.read_bytes()
    cut.write_bytes(data[:-3])
    assert main(["replay", str(cut)]) == 3   # as `gyroscope replay --help` says
    out = capsys.readouterr().out
    assert "324 records" in out and "truncated tail: 5 trailing bytes" in out
    assert main(["replay", str(cut), "--verify", str(snap)]) == 1
    err = capsys.readouterr().err
    assert "verify failed: mismatch" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("content,needle", [(None, "cannot read ledger"), (b"not a ledger at all", "wrong magic"),
                                            (b"GYRL\x01\x00", "truncated ledger header")])
def test_bad_ledgers_are_one_line(tmp_path, capsys, content, needle):
    path = tmp_path / "bad.ledger"
    if content is not None:
        path.write_bytes(content)
    assert main(["replay", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0] and err[0].startswith("gyroscope: error:")


def test_bad_snapshot_is_one_line(ledger, tmp_path, capsys):
    path, _ = ledger
    bad = tmp_path / "bad.snap"
    bad.write_bytes(b"garbage")
    assert main(["replay", str(path), "--verify", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "snapshot cannot be read" in err[0]
