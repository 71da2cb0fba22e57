"""bridges/codemap.py: line -> (co_qualname, first line, innermost loop), checked against what
CPython itself reports for the same lines (frames captured while the fixture code runs)."""
from __future__ import annotations

import importlib.util
import sys
import textwrap
from pathlib import Path

import pytest
from gyroscope.bridges.codemap import CodeMap

FIXTURE = textwrap.dedent('''\
    import sys

    SEEN = []


    def here():
        f = sys._getframe(1)
        SEEN.append((f.f_code.co_qualname, f.f_lineno, f.f_code.co_firstlineno))


    def deco(fn):
        return fn


    def plain(n):
        here()
        total = 0
        for i in range(n):
            here()
            while total < i:
                total += 1
                here()
        return total


    class Grid:
        here()

        def relax(self, sweeps):
            for _ in range(sweeps):
                for j in range(2):
                    here()
            here()

        @staticmethod
        @deco
        def decorated():
            here()

        class Inner:
            def deep(self):
                here()


    def outer():
        def inner():
            for _ in range(1):
                here()
        inner()
        g = list(here() for _ in range(2))
        squares = [here() for _ in range(2)]
        f = lambda: here()  # noqa: E731
        f()
        return g, squares


    async def agen():
        here()


    here()
    for _k in range(1):
        here()
    ''')


@pytest.fixture()
def fixture_module(tmp_path: Path):
    path = tmp_path / "structure.py"
    path.write_text(FIXTURE)
    spec = importlib.util.spec_from_file_location("structure_fixture", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.plain(3)
    mod.Grid().relax(2)
    mod.Grid.decorated()
    mod.Grid.Inner().deep()
    mod.outer()
    coro = mod.agen()
    try:
        coro.send(None)
    except StopIteration:
        pass
    return path, mod


def test_qualnames_and_first_lines_match_cpython(fixture_module):
    path, mod = fixture_module
    cm = CodeMap()
    assert len(mod.SEEN) > 10
    for qualname, line, first in mod.SEEN:
        loc = cm.locate(str(path), line, qualname.rsplit(".", 1)[-1])
        assert loc is not None
        assert (loc.qualname, loc.first_line) == (qualname, first), (qualname, line)
        # without the name hint the innermost scope is found too (no two scopes share these lines)
        if qualname.rsplit(".", 1)[-1] != "<lambda>":
            assert cm.qualname_at(str(path), line) == qualname


def _line(path: Path, text: str, nth: int = 0) -> int:
    hits = [i for i, ln in enumerate(path.read_text().splitlines(), 1) if text in ln]
    return hits[nth]


def test_loop_headers(fixture_module):
    path, _ = fixture_module
    p = str(path)
    cm = CodeMap()
    for_i = _line(path, "for i in range(n):")
    while_ = _line(path, "while total < i:")
    assert cm.loop_header(p, for_i + 1) == for_i            # here() directly in the for body
    assert cm.loop_header(p, while_ + 1) == while_          # inside the nested while
    assert cm.loop_header(p, while_) == while_              # the header line itself
    assert cm.loop_header(p, for_i - 1) is None             # `total = 0`: not in a loop
    assert cm.loop_header(p, _line(path, "return total")) is None
    inner_for = _line(path, "for j in range(2):")
    assert cm.loop_header(p, inner_for + 1) == inner_for
    assert cm.locate(p, inner_for + 2).loop_header is None   # here() after the loops in relax
    # a nested def's loop belongs to the nested function; the def line is not in outer's loop
    nested_for = _line(path, "for _ in range(1):")
    assert cm.locate(p, nested_for + 1).qualname == "outer.<locals>.inner"
    assert cm.loop_header(p, nested_for + 1) == nested_for
    # comprehensions are loops: inlined ones (3.12) of their function, generator expressions of their own
    listcomp = _line(path, "squares = [")
    assert cm.locate(p, listcomp, "outer").loop_header == listcomp
    assert cm.locate(p, listcomp, "outer").qualname == "outer"
    genexp = _line(path, "g = list(")
    assert cm.locate(p, genexp, "<genexpr>").loop_header == genexp
    assert cm.locate(p, genexp, "outer").loop_header is None
    # an older interpreter names the comprehension frame <listcomp>
    assert cm.locate(p, listcomp, "<listcomp>").qualname == "outer.<locals>.<listcomp>"
    # module level
    mod_for = _line(path, "for _k in range(1):")
    assert cm.locate(p, mod_for + 1).qualname == "<module>"
    assert cm.loop_header(p, mod_for + 1) == mod_for


def test_name_hint_picks_the_lambda_or_its_enclosing_function(fixture_module):
    path, _ = fixture_module
    line = _line(path, "f = lambda")
    cm = CodeMap()
    assert cm.qualname_at(str(path), line, "<lambda>") == "outer.<locals>.<lambda>"
    assert cm.qualname_at(str(path), line, "outer") == "outer"


def test_source_line(fixture_module):
    path, _ = fixture_module
    cm = CodeMap()
    line = _line(path, "while total < i:")
    assert cm.source_line(str(path), line) == "while total < i:"
    assert cm.source_line(str(path), 10_000) == ""


def test_unreadable_and_unparseable_files(tmp_path: Path):
    cm = CodeMap()
    bad = tmp_path / "bad.py"
    bad.write_text("def broken(:\n    pass\n")
    assert cm.locate(str(bad), 1) is None
    assert cm.source_line(str(bad), 1) == "def broken(:"     # the text is still there
    assert cm.locate(str(tmp_path / "missing.py"), 3) is None
    assert cm.locate(str(tmp_path), 3) is None              # a directory
    binary = tmp_path / "bin.py"
    binary.write_bytes(b"\xff\xfe\x00\x00garbage\x00")
    assert cm.locate(str(binary), 1) is None
    assert cm.locate("<frozen importlib._bootstrap>", 10) is None
    assert cm.locate("<string>", 1) is None


def test_non_utf8_source_with_coding_cookie(tmp_path: Path):
    src = tmp_path / "latin.py"
    src.write_bytes("# -*- coding: latin-1 -*-\ndef f():\n    s = 'caf\xe9'\n    while s:\n        s = s[1:]\n"
                    .encode("latin-1"))
    cm = CodeMap()
    assert cm.locate(str(src), 5).qualname == "f"
    assert cm.loop_header(str(src), 5) == 4


def test_stdlib_qualnames():
    import threading
    cm = CodeMap()
    code = threading.Condition.wait.__code__
    assert cm.qualname_at(code.co_filename, code.co_firstlineno + 3, "wait") == "Condition.wait"
    code = threading.Event.wait.__code__
    assert cm.qualname_at(code.co_filename, code.co_firstlineno + 3, "wait") == "Event.wait"
    assert sys.version_info >= (3, 12)


SLICED = textwrap.dedent('''\
    import functools


    class Lexer:
        @functools.cache
        def tokens(self, text,
        ):
            """A docstring
    with a line at column 0."""
            out = []
            for ch in text:
                def inner(x):
                    while x:
                        x -= 1
                    return x
                out.append(inner(ch))
            return out


    def tokens(n):
        return [i for i in range(n)]
    ''')


def test_a_function_alone_gives_the_loops_its_whole_module_gives(tmp_path: Path):
    """locate_in_function (a library frame's loop from its function's source alone) agrees with
    the whole module's map on every line of every function: a signature whose closing bracket
    sits at the def's indentation, a docstring line at column 0, a nested def, a comprehension,
    two functions of one name. Run over large stdlib modules too."""
    import logging
    import subprocess

    from gyroscope.bridges.codemap import _locate_in_function, build_file_map, read_source_lines
    src = tmp_path / "lexer.py"
    src.write_text(SLICED)
    checked = 0
    for path in (str(src), logging.__file__, subprocess.__file__):
        lines = read_source_lines(path)
        whole = build_file_map("".join(lines))
        for scope in whole.scopes:
            def_line = next(i for i in range(scope.start, scope.end + 1)
                            if lines[i - 1].lstrip().startswith(("def ", "async def ", "class ", "lambda", "[", "(")) or
                            "lambda" in lines[i - 1] or i == scope.end)
            if scope.inlined or scope.name.startswith("<") or lines[def_line - 1].lstrip().startswith("class "):
                continue
            for line in range(def_line, scope.end + 1):
                full = whole.locate(line, scope.name)
                if full is None or full.qualname.rsplit(".", 1)[-1] != scope.name:
                    continue
                got = _locate_in_function(lines, line, scope.name)
                assert got is not None, (path, line)
                assert got.loop_header == full.loop_header, (path, line, got, full)
                checked += 1
    assert checked > 3000
    cm = CodeMap()
    assert cm.locate_in_function(str(src), 13, "Lexer.tokens").loop_header == 11    # the `for`, not the nested while
    assert cm.locate_in_function(str(src), 14, "inner").loop_header == 13
    assert cm.locate_in_function(str(src), 21, "tokens").loop_header == 21        # the second `tokens`
    assert not cm.has_map(str(src))
