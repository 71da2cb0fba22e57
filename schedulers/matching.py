"""Which live decisions concern a task: from a callable to the code it runs, to the decisions.

A decision names a place in the program's code: (file, qualified function, line), and for a lock
also the call sites where threads waited. A task is a callable. `code_footprint(fn)` is the set
of code objects the task runs, found cheaply and statically:
  - the callable itself, unwrapped: functools.partial -> .func, bound method -> __func__ (and its
    class's functions), decorated function -> __wrapped__, callable object -> type(obj).__call__;
  - the code objects nested in it (co_consts: inner functions, lambdas, comprehensions on 3.12-);
  - the functions its code names as globals (co_names looked up in its __globals__, and, for a
    method, in its class), and the functions named in its code on the global objects it uses
    (STORE.write(): write in type(STORE)'s MRO; module.func(); Class.method()), followed to depth
    MAX_DEPTH, at most MAX_CODES code objects;
  - the same for the classes of the first 4 arguments of the task (process(store, i) calling
    store.write()); the cache key is then (code, those classes).
This misses objects reached through attributes of attributes or containers, and dynamic dispatch. The footprint of one
code object is computed once and cached (by id, holding the code object alive).

A rule matches a code object when the files are the same (compared by real path) and either
the qualified names are equal or one of the rule's lines (its line, its call sites) lies in the
code object's line span [co_firstlineno, last line of co_lines()].
"""
from __future__ import annotations

import functools
import os
import types
from dataclasses import dataclass, field
from typing import Any

HOT = "specialize_hot_loop"
CONTENTION = "mitigate_contention"
LOCK_KINDS = frozenset({"lock"})
MAX_DEPTH = 3
MAX_CODES = 64

_real: dict[str, str] = {}


def real_path(path: str) -> str:
    """os.path.realpath, cached (filenames repeat)."""
    r = _real.get(path)
    if r is None:
        try:
            r = os.path.realpath(path)
        except (OSError, ValueError):
            r = path
        _real[path] = r
    return r


@dataclass(frozen=True, slots=True)
class Rule:
    """One decision, reduced to what matching needs."""
    action: str
    file: str                      # real path
    function: str
    lines: tuple[int, ...]         # decision line + call-site lines in `file`
    other_sites: tuple[tuple[str, int], ...]  # call sites in other files (real path, line)
    key: tuple[str, str, int]      # (file, function, line): the lock's / loop's identity
    detail: str = ""
    threads: frozenset[int] = field(default_factory=frozenset)
    protected: frozenset[int] = field(default_factory=frozenset)  # hot: threads left at full priority
    decision: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


def rules_from(decisions: list[dict[str, Any]]) -> list[Rule]:
    """Rules for the decisions the executor acts on: contention on a lock, hot loops/functions."""
    out = []
    for d in decisions:
        action = d.get("action")
        kind = str(d.get("kind") or d.get("entity_kind") or "")
        if action == CONTENTION and kind not in LOCK_KINDS:
            continue
        if action not in (HOT, CONTENTION):
            continue
        f = real_path(str(d.get("file") or ""))
        line = int(d.get("line") or 0)
        same, other = [line] if line else [], []
        for site in d.get("call_sites") or ():
            try:
                sf, sl = real_path(str(site[0])), int(site[1])
            except (TypeError, ValueError, IndexError):
                continue
            (same.append(sl) if sf == f else other.append((sf, sl)))
        func = str(d.get("function") or "")
        out.append(Rule(action, f, func, tuple(sorted(set(same))), tuple(other), (f, func, line),
                        str(d.get("detail") or ""), frozenset(int(t) for t in d.get("threads") or ()),
                        frozenset(int(t) for t in d.get("protected_threads") or ()), d))
    return out


def unwrap(fn: Any) -> tuple[types.CodeType | None, dict[str, Any], type | None]:
    """(code object, globals, owning class) of a callable; code None when it has none (builtins)."""
    owner = None
    for _ in range(8):
        if isinstance(fn, functools.partial):
            fn = fn.func
        elif isinstance(fn, types.MethodType):
            owner = type(fn.__self__) if not isinstance(fn.__self__, type) else fn.__self__
            fn = fn.__func__
        elif hasattr(fn, "__wrapped__") and not isinstance(fn, type):
            fn = fn.__wrapped__
        else:
            break
    code = getattr(fn, "__code__", None)
    if not isinstance(code, types.CodeType) and not isinstance(fn, (types.FunctionType, types.BuiltinFunctionType)):
        call = next((k.__dict__["__call__"] for k in type(fn).__mro__ if "__call__" in k.__dict__), None)
        code = getattr(call, "__code__", None)
        owner = type(fn)
        fn = call
    if not isinstance(code, types.CodeType):
        return None, {}, None
    return code, getattr(fn, "__globals__", {}) or {}, owner


def code_footprint(fn: Any, arg_types: tuple[type, ...] = ()) -> list[types.CodeType]:
    """The code objects a task runs, as far as a cheap static look finds (see module docstring).

    arg_types: the classes of objects passed to the task; the methods its own code names on them
    are followed too (process(store, i) calling store.write())."""
    code, glb, owner = unwrap(fn)
    if code is None:
        return []
    out: list[types.CodeType] = []
    seen: set[int] = set()
    stack: list[tuple[types.CodeType, dict[str, Any], type | None, int]] = [(code, glb, owner, 0)]
    while stack and len(out) < MAX_CODES:
        c, g, own, depth = stack.pop()
        if id(c) in seen:
            continue
        seen.add(id(c))
        out.append(c)
        for k in c.co_consts:
            if isinstance(k, types.CodeType):
                stack.append((k, g, own, depth))
        if depth >= MAX_DEPTH:
            continue
        holders: list[Any] = list(arg_types) if c is code else []
        for name in c.co_names:
            obj = g.get(name)
            if obj is None and own is not None:
                obj = _class_attr(own, name)
            if isinstance(obj, (staticmethod, classmethod)):
                obj = obj.__func__
            if isinstance(obj, types.FunctionType):
                stack.append((obj.__code__, obj.__globals__, own, depth + 1))
            elif obj is not None:
                holders.append(obj)
        for obj in holders:   # STORE.write(), module.func(), Class.method(): the names called on them
            for name in c.co_names:
                if isinstance(obj, types.ModuleType):
                    f, cls = obj.__dict__.get(name), None
                else:
                    cls = obj if isinstance(obj, type) else type(obj)
                    if cls.__module__ == "builtins":
                        break
                    f = _class_attr(cls, name)
                if isinstance(f, (staticmethod, classmethod)):
                    f = f.__func__
                if isinstance(f, types.FunctionType):
                    stack.append((f.__code__, f.__globals__, cls, depth + 1))
    return out


def _class_attr(cls: type, name: str) -> Any:
    """cls's own attribute `name` along its MRO, without calling descriptors or __getattr__."""
    for k in cls.__mro__:
        if name in k.__dict__:
            return k.__dict__[name]
    return None


def _span(code: types.CodeType) -> tuple[int, int]:
    last = code.co_firstlineno
    for _, _, ln in code.co_lines():
        if ln is not None and ln > last:
            last = ln
    return code.co_firstlineno, last


def matches(rule: Rule, code: types.CodeType) -> bool:
    """Does this decision concern this code object?"""
    f = real_path(code.co_filename)
    if f == rule.file:
        if rule.function and code.co_qualname == rule.function:
            return True
        if rule.lines:
            lo, hi = _span(code)
            if any(lo <= ln <= hi for ln in rule.lines):
                return True
    if rule.other_sites:
        lo, hi = _span(code)
        return any(sf == f and lo <= sl <= hi for sf, sl in rule.other_sites)
    return False


class Classifier:
    """Task -> (contention rule, hot rule) under one set of rules; cached per code object."""

    def __init__(self, rules: list[Rule]) -> None:
        self.rules = rules
        self.locks = [r for r in rules if r.action == CONTENTION]
        self.hot = [r for r in rules if r.action == HOT]
        self._cache: dict[Any, tuple[types.CodeType, Rule | None, Rule | None]] = {}

    def classify(self, fn: Any, args: tuple = ()) -> tuple[Rule | None, Rule | None]:
        """(the lock rule to route this task by, or None; the hot rule it belongs to, or None)."""
        if not self.rules:
            return None, None
        code = unwrap(fn)[0]
        if code is None:
            return None, None
        arg_types = tuple(t for t in (type(a) for a in args[:4]) if t.__module__ != "builtins")
        key = (id(code), arg_types) if arg_types else id(code)
        hit = self._cache.get(key)
        if hit is not None and hit[0] is code:
            return hit[1], hit[2]
        codes = code_footprint(fn, arg_types)
        lock = next((r for r in self.locks if any(matches(r, c) for c in codes)), None)
        hot = next((r for r in self.hot if any(matches(r, c) for c in codes)), None)
        self._cache[key] = (code, lock, hot)
        return lock, hot
