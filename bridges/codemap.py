"""Source positions -> code structure: which function (as CPython's ``co_qualname`` names it) and
which loop a line of a file belongs to. Shared by the in-process sampler and py-spy attach, so
that both name the same place the same way.

For each file (parsed once with `ast`, cached; unreadable or unparseable files give no answer,
never an exception) the map knows every scope and every loop:

- scopes: the module (``<module>``), classes (their body runs as ``Outer.Inner``), functions,
  lambdas (``<lambda>``) and generator expressions (``<genexpr>``), nested as CPython nests
  ``co_qualname`` (``outer.<locals>.inner``, ``Grid.relax``). List/set/dict comprehensions are
  inlined since Python 3.12 (PEP 709) and belong to their enclosing scope, unless the caller
  names the frame ``<listcomp>``/``<setcomp>``/``<dictcomp>`` (an older target interpreter);
- loops: ``for``, ``while``, ``async for`` statements and comprehensions (a comprehension is a
  loop: sys.monitoring sees its backward jumps at its line, so the in-process bridge and this
  map must agree). The loop of a line is the innermost loop of the line's own scope that
  contains it; a nested ``def`` inside a loop body is its own scope, not part of the loop.

A scope's first line is CPython's ``co_firstlineno``: the first decorator line when decorated.
"""
from __future__ import annotations

import ast
import re
import threading
import tokenize
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

_COMP_NAMES = {ast.ListComp: "<listcomp>", ast.SetComp: "<setcomp>", ast.DictComp: "<dictcomp>"}
_LOOP_STMTS = (ast.For, ast.While, ast.AsyncFor)
_FUNC_NODES = (ast.FunctionDef, ast.AsyncFunctionDef)


@dataclass(frozen=True, slots=True)
class Location:
    """Where a line sits: its scope's qualified name and first line, its innermost loop, and the
    loops of its scope around that one (innermost first)."""
    qualname: str
    first_line: int
    loop_header: int | None
    outer_loops: tuple[int, ...] = ()


@dataclass(slots=True)
class _Scope:
    qualname: str
    name: str          # the last component, what co_name would be
    first_line: int    # co_firstlineno
    start: int         # span of the node (lines)
    end: int
    inlined: bool      # a 3.12+ inlined comprehension: only chosen when asked for by name
    loops: list[tuple[int, int]]   # (header, end) of loops directly in this scope


class FileMap:
    """The scopes and loops of one source file."""

    def __init__(self, lines: list[str], scopes: list[_Scope]) -> None:
        self.lines = lines
        self.scopes = scopes

    def scope_at(self, line: int, name: str | None = None) -> _Scope | None:
        """The innermost scope containing `line`; when `name` (a co_name or qualname) is given and
        several scopes contain the line (a lambda on a def's line), the innermost whose name matches."""
        short = name.rsplit(".", 1)[-1] if name else None
        best: _Scope | None = None
        best_named: _Scope | None = None
        for s in self.scopes:
            if not (s.start <= line <= s.end):
                continue
            if short is not None and s.name == short:
                if best_named is None or _inner(s, best_named):
                    best_named = s
            if s.inlined:
                continue
            if best is None or _inner(s, best):
                best = s
        if best_named is not None:
            return best_named
        return best

    def locate(self, line: int, name: str | None = None) -> Location | None:
        scope = self.scope_at(line, name)
        if scope is None:
            return None
        around = sorted((end - start, start) for start, end in scope.loops if start <= line <= end)
        if not around:
            return Location(scope.qualname, scope.first_line, None)
        return Location(scope.qualname, scope.first_line, around[0][1], tuple(h for _, h in around[1:]))


def _inner(a: _Scope, b: _Scope) -> bool:
    """Is scope `a` nested inside (or tighter than) scope `b`?"""
    return (a.end - a.start, -a.start) < (b.end - b.start, -b.start)


# the words without which a node's text cannot hold a scope or a loop (an expression: a lambda
# or a comprehension; a statement: also a def, a class or a while). Matched as substrings ("format"
# holds "for"): a false match only walks a node for nothing.
_EXPR_WORDS = ("for", "lambda")
_STMT_WORDS = ("for", "lambda", "while", "def", "class")
_SCOPE_EXPRS = (ast.Lambda, ast.GeneratorExp, ast.ListComp, ast.SetComp, ast.DictComp)


def _running_counts(lines: list[str], words: tuple[str, ...]) -> list[int]:
    """counts[i] = how many of the first i lines contain one of `words`."""
    return list(accumulate((any(w in line for w in words) for line in lines), initial=0))


class _Builder(ast.NodeVisitor):
    """Scopes and loops of a module. Only the nodes whose lines hold one of the words a scope or a
    loop needs are walked (most statements and expressions of a module cannot add either)."""

    def __init__(self, lines: list[str]) -> None:
        module = _Scope("<module>", "<module>", 1, 1, max(len(lines), 1), False, [])
        self.lines = lines
        self.scopes: list[_Scope] = [module]
        self.stack: list[tuple[_Scope, bool]] = [(module, False)]   # (scope, is a function-like scope)
        self._expr_words = _running_counts(lines, _EXPR_WORDS)
        self._stmt_words = _running_counts(lines, _STMT_WORDS)

    def generic_visit(self, node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if self._may_hold(child):
                self.visit(child)

    def _may_hold(self, node: ast.AST) -> bool:
        """Whether `node` may contain a scope or a loop (its lines hold one of the words)."""
        if isinstance(node, ast.expr):
            if isinstance(node, _SCOPE_EXPRS):
                return True
            counts = self._expr_words
        elif isinstance(node, ast.stmt):
            counts = self._stmt_words
        else:
            return True
        start = getattr(node, "lineno", None)
        if start is None:
            return True
        end = min(getattr(node, "end_lineno", None) or start, len(counts) - 1)
        return counts[end] > counts[start - 1]

    def _prefix(self) -> str:
        # scopes nested in an inlined comprehension are named after the comprehension's owner (3.12+)
        scope, is_func = next((s, f) for s, f in reversed(self.stack) if not s.inlined)
        if scope.qualname == "<module>":
            return ""
        return scope.qualname + (".<locals>." if is_func else ".")

    def _enter(self, node: ast.AST, name: str, is_func: bool, first_line: int, inlined: bool = False) -> _Scope:
        start = getattr(node, "lineno", 1)
        end = getattr(node, "end_lineno", None) or start
        qual = self._prefix() + name
        s = _Scope(qual, name, first_line, min(start, first_line), end, inlined, [])
        self.scopes.append(s)
        return s

    def _body(self, scope: _Scope, is_func: bool, nodes: list[ast.AST]) -> None:
        self.stack.append((scope, is_func))
        for n in nodes:
            if self._may_hold(n):
                self.visit(n)
        self.stack.pop()

    def _decorated(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> int:
        lines = [d.lineno for d in node.decorator_list] + [node.lineno]
        return min(lines)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        # decorators, defaults and annotations are evaluated in the enclosing scope
        for d in node.decorator_list:
            self.visit(d)
        self.visit(node.args)
        if node.returns is not None:
            self.visit(node.returns)
        scope = self._enter(node, node.name, True, self._decorated(node))
        self._body(scope, True, node.body)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for d in node.decorator_list:
            self.visit(d)
        for b in node.bases:
            self.visit(b)
        for k in node.keywords:
            self.visit(k)
        scope = self._enter(node, node.name, False, self._decorated(node))
        self._body(scope, False, node.body)

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self.visit(node.args)
        scope = self._enter(node, "<lambda>", True, node.lineno)
        self._body(scope, True, [node.body])

    def visit_GeneratorExp(self, node: ast.GeneratorExp) -> None:
        # the first iterable is evaluated in the enclosing scope
        if node.generators:
            self.visit(node.generators[0].iter)
        scope = self._enter(node, "<genexpr>", True, node.lineno)
        scope.loops.append((node.lineno, node.end_lineno or node.lineno))
        rest: list[ast.AST] = [node.elt]
        for i, g in enumerate(node.generators):
            rest.append(g.target)
            if i:
                rest.append(g.iter)
            rest.extend(g.ifs)
        self._body(scope, True, rest)

    def _comprehension(self, node: ast.ListComp | ast.SetComp | ast.DictComp) -> None:
        span = (node.lineno, node.end_lineno or node.lineno)
        # inlined (PEP 709): a loop of the nearest real scope; for older interpreters its own scope
        for owner, _ in reversed(self.stack):
            if not owner.inlined:
                owner.loops.append(span)
                break
        scope = self._enter(node, _COMP_NAMES[type(node)], True, node.lineno, inlined=True)
        scope.loops.append(span)
        self._body(scope, True, list(ast.iter_child_nodes(node)))

    visit_ListComp = _comprehension
    visit_SetComp = _comprehension
    visit_DictComp = _comprehension

    def _loop(self, node: ast.For | ast.While | ast.AsyncFor) -> None:
        self.stack[-1][0].loops.append((node.lineno, node.end_lineno or node.lineno))
        self.generic_visit(node)

    visit_For = _loop
    visit_While = _loop
    visit_AsyncFor = _loop


def read_source_lines(path: str) -> list[str] | None:
    """The lines of a source file (PEP 263 encoding), or None when it cannot be read."""
    try:
        with tokenize.open(path) as f:
            return f.read().splitlines(keepends=True)
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError, LookupError):
        return None


def build_file_map(source: str) -> FileMap:
    """A FileMap from source text (raises SyntaxError/ValueError/RecursionError when unparseable)."""
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    b = _Builder(lines)
    b._body(b.scopes[0], False, tree.body)
    return FileMap(lines, b.scopes)


_DEF_LINE = re.compile(r"([ \t]*)(?:async[ \t]+)?def[ \t]+(\w+)")
_SLICE_TRIES = 4     # block ends tried past the first (a string or bracket at a lower indentation)


def _indent(text: str) -> int:
    return len(text) - len(text.lstrip(" \t"))


def _block_ends(lines: list[str], start: int, indent: int):
    """The candidate ends (exclusive, 0-based) of the block of the def at `start`: each following
    code line indented no deeper than the def (the first is the end unless a string or a bracket
    runs across it), then the end of the file."""
    for k in range(start + 1, len(lines)):
        text = lines[k].lstrip(" \t")
        if text and not text.startswith("#") and text[0] not in ")]}\n\r" and _indent(lines[k]) <= indent:
            yield k
    yield len(lines)


def _locate_in_function(lines: list[str], line: int, short: str,
                        parsed: dict[tuple[int, int], FileMap | None] | None = None) -> Location | None:
    """See CodeMap.locate_in_function; `parsed` keeps the slices parsed (by start and end line) for
    the next line of the same function."""
    parsed = {} if parsed is None else parsed
    for start in range(min(line, len(lines)) - 1, -1, -1):
        m = _DEF_LINE.match(lines[start])
        if m is None or m.group(2) != short:
            continue
        indent = len(m.group(1))
        for tries, end in enumerate(_block_ends(lines, start, indent)):
            if tries > _SLICE_TRIES:
                break
            if end < line:
                continue         # a string or bracket at a lower indentation, or the block ends above
            # a nested def parses inside "if 1:" at its own indentation; slice line 1 is then "if 1:"
            head = ["if 1:\n"] if indent else []
            if (start, end) not in parsed:
                try:
                    parsed[(start, end)] = build_file_map("".join(head + lines[start:end]))
                except (SyntaxError, ValueError, RecursionError, MemoryError):
                    parsed[(start, end)] = None
            fm = parsed[(start, end)]
            if fm is None:
                continue
            shift = start - len(head)
            loc = fm.locate(line - shift, short)
            if loc is None or loc.qualname.rsplit(".", 1)[-1] != short:
                break            # the line is not in this def: one further up may hold it
            return Location(loc.qualname, loc.first_line + shift,
                            None if loc.loop_header is None else loc.loop_header + shift,
                            tuple(h + shift for h in loc.outer_loops))
    return None


class CodeMap:
    """A cache of FileMaps, safe to use from several threads. Bounded: past `max_files` the
    oldest entries are forgotten (and re-read when asked again)."""

    def __init__(self, max_files: int = 2048) -> None:
        self.max_files = max_files
        self._files: dict[str, FileMap | None] = {}
        self._texts: dict[str, list[str] | None] = {}   # files read for their text only (source_line)
        self._located: dict[tuple[str, int, str | None], Location | None] = {}
        self._slices: dict[str, dict[tuple[int, int], FileMap | None]] = {}   # functions parsed alone
        self._lock = threading.Lock()

    def _remember(self, cache: dict, key: str, value: Any) -> None:
        with self._lock:
            if len(cache) >= self.max_files:
                for k in list(cache)[: max(1, self.max_files // 4)]:
                    del cache[k]
            cache[key] = value

    def _lines(self, path: str) -> list[str] | None:
        got = self._texts.get(path, False)
        if got is not False:
            return got  # type: ignore[return-value]
        lines = read_source_lines(path) if path and not path.startswith("<") else None
        self._remember(self._texts, path, lines)
        return lines

    def file_map(self, path: str) -> FileMap | None:
        fm = self._files.get(path, False)
        if fm is not False:
            return fm  # type: ignore[return-value]
        fm = None
        lines = self._lines(path)
        if lines is not None:
            try:
                fm = build_file_map("".join(lines))
            except (SyntaxError, ValueError, RecursionError, MemoryError):
                fm = FileMap(lines, [])
        self._remember(self._files, path, fm)
        return fm

    def locate_in_function(self, path: str, line: int, name: str) -> Location | None:
        """What locate() says of `line` in the function `name` (a co_name or qualname), from that
        function's source alone: the nearest `def <name>` above the line whose block (by
        indentation) reaches it, parsed with the same builder. A library frame needs only its
        loop, and a large module's whole parse costs 10-50 ms where one function's costs well under
        one. None when the function cannot be cut out and parsed (the caller then parses the file)."""
        key = (path, line, "\0" + name)
        try:
            return self._located[key]
        except KeyError:
            pass
        lines = self._lines(path)
        if lines is None:
            return self._remember_located(key, None)
        with self._lock:
            if len(self._slices) >= self.max_files:
                self._slices.clear()
            parsed = self._slices.setdefault(path, {})
        return self._remember_located(key, _locate_in_function(lines, line, name.rsplit(".", 1)[-1], parsed))

    def _remember_located(self, key: tuple[str, int, str | None], loc: Location | None) -> Location | None:
        with self._lock:
            if len(self._located) >= 16 * self.max_files:
                self._located.clear()
            self._located[key] = loc
        return loc

    def has_map(self, path: str) -> bool:
        """Whether `path` was read and parsed already (a lookup costs nothing then)."""
        return path in self._files

    def locate(self, path: str, line: int, name: str | None = None) -> Location | None:
        key = (path, line, name)
        try:
            return self._located[key]
        except KeyError:
            pass
        fm = self.file_map(path)
        return self._remember_located(key, fm.locate(line, name) if fm is not None and fm.scopes else None)

    def qualname_at(self, path: str, line: int, name: str | None = None) -> str | None:
        loc = self.locate(path, line, name)
        return loc.qualname if loc else None

    def loop_header(self, path: str, line: int, name: str | None = None) -> int | None:
        loc = self.locate(path, line, name)
        return loc.loop_header if loc else None

    def source_line(self, path: str, line: int) -> str:
        """The text of one line: read, never parsed (a wait's line in threading.py or queue.py
        needs no map of the module)."""
        fm = self._files.get(path)
        lines = fm.lines if fm is not None else self._lines(path)
        if lines is None or not (1 <= line <= len(lines)):
            return ""
        return lines[line - 1].strip()

    def clear(self) -> None:
        with self._lock:
            self._files.clear()
            self._texts.clear()
            self._located.clear()
            self._slices.clear()


DEFAULT = CodeMap()


def locate(path: str, line: int, name: str | None = None) -> Location | None:
    """Scope qualname, its first line and the innermost loop header of `path:line` (None if unknown)."""
    return DEFAULT.locate(path, line, name)


def locate_in_function(path: str, line: int, name: str) -> Location | None:
    """locate() of a line in the function `name`, from that function's source alone (or None)."""
    return DEFAULT.locate_in_function(path, line, name)


def has_map(path: str) -> bool:
    """Whether `path` is parsed already."""
    return DEFAULT.has_map(path)


def qualname_at(path: str, line: int, name: str | None = None) -> str | None:
    """The co_qualname of the code running at `path:line`; `name` disambiguates (e.g. a lambda)."""
    return DEFAULT.qualname_at(path, line, name)


def loop_header(path: str, line: int, name: str | None = None) -> int | None:
    """The header line of the innermost loop of the line's own function containing it, or None."""
    return DEFAULT.loop_header(path, line, name)


def source_line(path: str, line: int) -> str:
    """The stripped text of `path:line`, or "" when unknown."""
    return DEFAULT.source_line(path, line)
