"""gyroscope's private temporary directories (bridges/tmpdir.py)."""
from __future__ import annotations

import os
import shutil
import stat
import tempfile

from gyroscope.bridges import tmpdir


def test_private_dir_is_new_0700_and_removed_with_its_files(monkeypatch) -> None:
    root = tempfile.mkdtemp(dir="/tmp")      # short: a long $TMPDIR is not used (socket paths)
    monkeypatch.setenv("TMPDIR", root)
    a, b = tmpdir.private_dir("gyroscope-x"), tmpdir.private_dir("gyroscope-x")
    assert a != b and os.path.dirname(a) == root
    assert os.path.basename(a).startswith(f"gyroscope-x-{os.getpid()}-")
    assert stat.S_IMODE(os.stat(a).st_mode) == 0o700
    for name in ("s", "chunk1.json"):
        open(os.path.join(a, name), "w").close()
    tmpdir.remove_dir(a)
    tmpdir.remove_dir(a)             # already gone: fine
    assert not os.path.exists(a) and os.path.isdir(b)
    shutil.rmtree(root)


def test_a_long_or_missing_tmpdir_falls_back_to_tmp(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path / "missing"))
    assert tmpdir.base() == "/tmp"
    monkeypatch.setenv("TMPDIR", "/" + "x" * 80)
    assert tmpdir.base() == "/tmp"
