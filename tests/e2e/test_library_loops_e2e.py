"""End to end: a program whose time is in a library's loop (pygments, a real third-party package:
rich depends on it) gets the decision on that loop, in the library's file, reached from the
program's line; the program's own entry loop is not the answer."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

GYRO = str(Path(sys.executable).parent / "gyroscope")

PROGRAM = '''\
import os
from pygments.lexers import PythonLexer

lexer = PythonLexer()
src = open(os.__file__, encoding="utf-8").read()
n = 0
for _ in range(4):
    for tok in lexer.get_tokens(src):
        n += 1
print(n)
'''


@pytest.mark.slow
def test_library_hot_loop_is_decided_with_the_programs_line(tmp_path):
    pytest.importorskip("pygments")
    prog = tmp_path / "lex_stdlib.py"
    prog.write_text(PROGRAM)
    out = tmp_path / "s.json"
    bare = subprocess.run([sys.executable, str(prog)], capture_output=True, text=True, timeout=120)
    p = subprocess.run([GYRO, "run", "--json", str(out), str(prog)], capture_output=True, text=True, timeout=180)
    assert p.returncode == bare.returncode == 0, p.stderr
    assert p.stdout == bare.stdout
    doc = json.loads(out.read_text())
    hot = [d for d in doc["decisions"] if d["action"] == "specialize_hot_loop"]
    assert hot, p.stdout
    d = hot[0]
    assert "pygments" in d["file"] and d["entity_kind"] == "loop", hot
    assert not any(h["file"] == str(prog) for h in hot), "the program's entry loop was decided"
    # the summary names the program's line that leads there
    assert f"reached from <module> ({prog.name}:8)" in p.stderr, p.stderr
    own_loop = next(e for e in doc["entities"] if e["file"] == str(prog) and e["kind"] == "loop" and e["line"] == 8)
    assert own_loop["measurements"]["library_share"] >= 0.7
    lib = next(e for e in doc["entities"] if e["id"] == d["entity_id"])
    assert lib["measurements"]["library"] is True and lib["measurements"]["cpu_share"] >= 0.25
