"""The one rule that says which code is the program's own ("own code"), for every source.

Own code: files under one of `roots` (the script's directory, or the current directory for
-m), except those inside the standard library, site-packages or the interpreter prefix (unless
the root itself lies inside them, as a benchmark file shipped by an installed package does),
and never gyroscope's own packages. The script or module the user names (`extra`) is always
own code, wherever it lives. `include` patterns (fnmatch on the absolute file name) add more;
`all_code` takes everything but gyroscope and frozen/generated code.

The rule is built in the gyroscope process (`OwnCode.for_program`, which reads sysconfig) and
shipped to the program's process as a string (`to_config` / `from_config`): inside the watched
program this module must import nothing python does not load at start-up but os (`re` for the
standard library's path and `fnmatch` for --include are imported where they are used: a
program run by a wheel-installed gyroscope would otherwise find ~15 more modules loaded).

Used by: the in-process bridge (which code objects get loop counters), the stack classifier
of both sources (which frame of a sampled stack is the program's), and the decisions.
"""
import os

# realpath: the paths asked about are resolved too (a development install reaches these folders
# through links, .ci/setup)
_PROJECT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
GYROSCOPE_DIRS = tuple(os.path.join(_PROJECT, d, "") for d in ("agent", "bridges", "cyext", "schedulers"))
_STDLIB_PATTERN = r"[/\\]lib(64)?[/\\]python\d+(\.\d+)?t?[/\\]|[/\\]Lib[/\\]"
_STDLIB = None
_FIELD = "\x1f"


def is_gyroscope(path: str) -> bool:
    """A file of gyroscope itself (its scheduler's lock, its executor's worker loop inside a
    program): never the program's, and never a decision's place. Cached per name: realpath is a
    system call per path component, and every report asks again for every entity."""
    got = _IS_GYROSCOPE.get(path)
    if got is None:
        got = bool(path) and os.path.isabs(path) and os.path.realpath(path).startswith(GYROSCOPE_DIRS)
        if len(_IS_GYROSCOPE) > 10_000:
            _IS_GYROSCOPE.clear()
        _IS_GYROSCOPE[path] = got
    return got


_IS_GYROSCOPE: dict = {}


def looks_like_program(path: str) -> bool:
    """The rule when only a file name is known (a remote target's stack, a saved session's
    entity): anything outside the standard library, site-packages / dist-packages and gyroscope
    itself, and not frozen or generated code ("<stdin>", the script of `run -`, is the program's)."""
    if not path or (path.startswith("<") and path != "<stdin>"):
        return False
    if "site-packages" in path or "dist-packages" in path:
        return False
    if is_gyroscope(path):
        return False
    return _stdlib_re().search(path) is None


def _stdlib_re():
    """The standard library's path pattern, compiled on first use (the watcher's side only)."""
    global _STDLIB
    if _STDLIB is None:
        import re
        _STDLIB = re.compile(_STDLIB_PATTERN)
    return _STDLIB


_ITEM = "\x1e"


class OwnCode:
    """`ours(filename)`: is this file the program's own code? Cached per file name."""

    def __init__(self, roots: list[str], excluded: list[str], extra: list[str] | None = None,
                 include: list[str] | None = None, all_code: bool = False) -> None:
        self.roots = [os.path.join(os.path.realpath(r), "") for r in roots if r]
        self.excluded = [os.path.join(os.path.realpath(e), "") for e in excluded if e]
        self.extra = {f if f.startswith("<") else os.path.realpath(f) for f in (extra or []) if f}
        self.include = list(include or [])
        self.all_code = all_code
        self._cache: dict[str, bool] = {}
        self._folders: dict[str, str] = {}

    @classmethod
    def for_program(cls, roots: list[str], extra: list[str] | None = None, include: list[str] | None = None,
                    all_code: bool = False) -> "OwnCode":
        """The rule for a program run by this interpreter (the gyroscope process's side)."""
        import site
        import sys
        stdlib = os.path.dirname(os.__file__)   # what sysconfig's stdlib/platstdlib say, without importing it
        excluded = {stdlib, *site.getsitepackages()}
        excluded |= {sys.prefix, sys.base_prefix, sys.exec_prefix}
        excluded |= {p for p in sys.path if p and ("site-packages" in p or "dist-packages" in p)}
        return cls(roots, sorted(e for e in excluded if e), extra, include, all_code)

    def ours(self, filename: str) -> bool:
        r = self._cache.get(filename)
        if r is None:
            if len(self._cache) > 100_000:   # programs that generate code: stay bounded
                self._cache.clear()
            r = self._cache[filename] = self._decide(filename)
        return r

    __call__ = ours

    def _decide(self, filename: str) -> bool:
        if filename in self.extra:   # the script the user named, "<stdin>" for `run -`
            return True
        if not filename or filename.startswith("<"):
            return False
        path = self._realpath(filename)
        if path.startswith(GYROSCOPE_DIRS):
            return False
        if self.include:
            import fnmatch
            if any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(filename, p) for p in self.include):
                return True
        if self.all_code or path in self.extra:
            return True
        for root in self.roots:
            if path.startswith(root):
                return not any(path.startswith(e) and not root.startswith(e) for e in self.excluded)
        return False

    def _realpath(self, filename: str) -> str:
        """os.path.realpath, with its folder's resolution cached: realpath is a system call per
        path component (~13 us a file; a program's imports meet a few hundred files, in the
        program's process), and the files of one folder share theirs."""
        path = os.path.abspath(filename)
        if os.path.islink(path):
            return os.path.realpath(path)
        folder, name = os.path.split(path)
        real = self._folders.get(folder)
        if real is None:
            if len(self._folders) > 10_000:
                self._folders.clear()
            real = self._folders[folder] = os.path.realpath(folder)
        return os.path.join(real, name)

    # ---- shipping the rule to the program's process --------------------------------------
    def to_config(self) -> str:
        return _FIELD.join([_ITEM.join(self.roots), _ITEM.join(self.excluded), _ITEM.join(sorted(self.extra)),
                            _ITEM.join(self.include), "1" if self.all_code else "0"])

    @classmethod
    def from_config(cls, text: str) -> "OwnCode":
        roots, excluded, extra, include, all_code = (text.split(_FIELD) + [""] * 5)[:5]

        def items(s: str) -> list[str]:
            return [x for x in s.split(_ITEM) if x]
        return cls(items(roots), items(excluded), items(extra), items(include), all_code == "1")
