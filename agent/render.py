"""Renderers: a finished session (agent/model.py `SessionResult`) as text or bytes.

One interface, as pyinstrument's renderers have: `Renderer.render(session) -> str | bytes`.
A renderer is chosen by name (`gyroscope report --renderer NAME`) or by the output file's
extension (`-o out.html`), and knows nothing about the others or about the live sinks
(agent/sinks/: stream, trace, OTLP, which are fed during the session).

    name      extensions        output
    summary   .txt              the terminal summary (decisions, top loops, top waits, counters)
    html      .html .htm        one self-contained HTML report (no CDN, works offline)
    json      .json             the session file itself (schema gyroscope.session/2)

Adding one (the profile formats: speedscope, pprof, collapsed stacks, ...): subclass Renderer,
set `name`, `extensions` and `binary`, and call `register(MyRenderer)` in the module that
defines it, listed in PLUGINS so that `renderer_for` finds it without importing it eagerly.
"""
from __future__ import annotations

import importlib
import io
import json
import os
from typing import ClassVar

from gyroscope.agent.errors import UsageError
from gyroscope.agent.model import SessionResult


class Renderer:
    """Turns a finished session into one output. Subclasses set the class attributes below."""

    name: ClassVar[str] = ""
    extensions: ClassVar[tuple[str, ...]] = ()
    binary: ClassVar[bool] = False          # render() returns bytes
    description: ClassVar[str] = ""

    def render(self, session: SessionResult) -> str | bytes:
        raise NotImplementedError


class SummaryRenderer(Renderer):
    name = "summary"
    extensions = (".txt",)
    description = "terminal summary: decisions, top loops, top waits, counters"

    def __init__(self, color: bool = False) -> None:
        self.color = color

    def render(self, session: SessionResult) -> str:
        from gyroscope.agent.summary import print_summary

        class _Out(io.StringIO):
            def isatty(inner) -> bool:  # noqa: N805 - rich asks the stream whether to use colour
                return self.color

        out = _Out()
        print_summary(session, out)
        return out.getvalue()


class HtmlRenderer(Renderer):
    name = "html"
    extensions = (".html", ".htm")
    description = "one self-contained HTML report (tables, histograms, spectra, wait timeline)"

    def render(self, session: SessionResult) -> str:
        from gyroscope.agent.report_html import render_html
        return render_html(session.to_json())


class JsonRenderer(Renderer):
    name = "json"
    extensions = (".json",)
    description = "the session file (schema gyroscope.session/2; a v1 file comes out converted)"

    def render(self, session: SessionResult) -> str:
        return json.dumps(session.to_json(), indent=1) + "\n"


RENDERERS: dict[str, type[Renderer]] = {}

# Modules that register more renderers when imported (the profile writers plug in here).
PLUGINS: tuple[str, ...] = ()


def register(cls: type[Renderer]) -> type[Renderer]:
    """Add a renderer to the registry (usable as a class decorator)."""
    if not cls.name:
        raise ValueError(f"renderer {cls.__name__} has no name")
    RENDERERS[cls.name] = cls
    return cls


for _cls in (SummaryRenderer, HtmlRenderer, JsonRenderer):
    register(_cls)


def _load_plugins() -> None:
    for mod in PLUGINS:
        try:
            importlib.import_module(mod)
        except ImportError:   # a build without that plugin: its renderers are simply absent
            pass


def renderer_for(name: str | None = None, path: str | os.PathLike[str] | None = None) -> Renderer:
    """The renderer called `name`, else the one for the extension of `path`, else the summary.
    An unknown name or extension is a UsageError that lists what exists."""
    _load_plugins()
    if name:
        cls = RENDERERS.get(name)
        if cls is None:
            raise UsageError(f"unknown renderer {name!r} (choose from {', '.join(sorted(RENDERERS))})")
        return cls()
    if path is not None:
        ext = os.path.splitext(os.fspath(path))[1].lower()
        for cls in RENDERERS.values():
            if ext in cls.extensions:
                return cls()
        known = sorted(e for c in RENDERERS.values() for e in c.extensions)
        raise UsageError(f"cannot tell the output format of {os.fspath(path)!r} from its extension "
                         f"(use --renderer, or one of {', '.join(known)})")
    return SummaryRenderer()
