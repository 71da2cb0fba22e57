"""`gyroscope report`: terminal summary, self-contained HTML (checked in headless Chromium), errors."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from gyroscope.agent.cli import main
from gyroscope.agent.result import write_json_atomic

from tests import report_fixtures as fx

ROOT = Path(__file__).resolve().parents[2]


def _session_file(tmp_path, **kw) -> Path:
    p = tmp_path / "session.json"
    write_json_atomic(p, fx.session(**kw))
    return p


def test_report_prints_summary(tmp_path, capsys):
    assert main(["report", str(_session_file(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert out.index("specialize_hot_loop") < out.index("Top loops") < out.index("Top waits")


@pytest.mark.parametrize("content,needle", [(None, "no such session file"), ("{not json", "invalid JSON"),
                                            ('{"schema": "other/1"}', "not a gyroscope session")])
def test_bad_session_is_one_line(tmp_path, capsys, content, needle):
    p = tmp_path / "s.json"
    if content is not None:
        p.write_text(content)
    assert main(["report", str(p)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]


def test_html_is_self_contained(tmp_path):
    out = tmp_path / "r.html"
    assert main(["report", str(_session_file(tmp_path)), "--html", str(out)]) == 0
    text = out.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)   # no external resources
    assert "<script" in text and "gyroscope-data" in text
    data = re.search(r'<script type="application/json" id="gyroscope-data">(.*?)</script>', text, re.S).group(1)
    assert json.loads(data)["decisions"][0]["function"] == "crunch"


def test_html_escapes_hostile_names(tmp_path):
    r = fx.session()
    r["decisions"][0]["function"] = "</script><script>alert(1)</script>"
    r["command"] = ["<b>x</b>"]
    from gyroscope.agent.report_html import render_html
    text = render_html(r)
    assert "</script><script>alert" not in text and "<b>x</b>" not in text


class _Dom(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.decision_rows = 0
        self.svgs: list[dict] = []
        self.rects = 0
        self.body_rendered = False
        self.notes = 0
        self.frame_titles: list[str] = []     # flame graph rects' hover titles
        self.wait_titles: list[str] = []      # timeline rects' hover titles
        self.details = 0
        self.line_rows = 0
        self.sentences: list[str] = []
        self._in: list[str] = []
        self._text: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "body" and a.get("data-rendered") == "1":
            self.body_rendered = True
        if tag == "tr" and a.get("class") == "decision":
            self.decision_rows += 1
        if tag == "svg":
            self.svgs.append(a)
        if tag == "rect":
            self.rects += 1
            self._in.append(a.get("class", ""))
        if a.get("class") == "note":
            self.notes += 1
        if tag == "details":
            self.details += 1
        if tag == "table" and a.get("class") == "lines":
            self._in.append("lines")
        if tag == "tr" and "lines" in self._in:
            self.line_rows += 1
        if tag == "div" and a.get("class") == "text":
            self._in.append("sentence")
        if tag == "title":
            self._text = []

    def handle_data(self, data):
        self._text.append(data)

    def handle_endtag(self, tag):
        if tag == "title" and self._in and self._in[-1] in ("frame", "wait"):
            (self.frame_titles if self._in[-1] == "frame" else self.wait_titles).append("".join(self._text))
        if tag == "rect" and self._in and self._in[-1] in ("frame", "wait", "bar", ""):
            self._in.pop()
        if tag == "table" and self._in and self._in[-1] == "lines":
            self._in.pop()
        if tag == "div" and self._in and self._in[-1] == "sentence":
            self.sentences.append("".join(self._text).strip())
            self._in.pop()


def _chromium_dom(html_path: Path, tmp_path: Path, fragment: str = "") -> _Dom:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium is not installed (Debian package `chromium`)")
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", "--dump-dom", html_path.as_uri() + fragment]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = _Dom()
    dom.feed(proc.stdout)
    return dom


@pytest.mark.slow
def test_html_renders_in_chromium(tmp_path):
    out = tmp_path / "r.html"
    assert main(["report", str(_session_file(tmp_path)), "--html", str(out)]) == 0
    dom = _chromium_dom(out, tmp_path)
    assert dom.body_rendered                       # the inline script ran to its end
    assert dom.decision_rows == 2
    classes = [s.get("class", "") for s in dom.svgs]
    assert classes.count("plot chi") == 2 and classes.count("plot spectrum") == 2
    assert "plot timeline" in classes
    assert dom.rects >= 4 * 64 + 40                # 64 bars per plot, one rect per wait
    # decisions read as sentences, the raw evidence folded behind a <details>
    assert dom.details == 2
    assert any("took 71% of the program's sampled CPU at 800.0k iterations/s; reached from main" in s
               for s in dom.sentences), dom.sentences
    assert dom.line_rows == 3                      # crunch's sampled lines 12, 13, 14
    # the flame graph: every node a rect whose hover says function, file and samples
    assert "plot flame" in classes
    crunch = [x for x in dom.frame_titles if x.startswith("crunch (mixed_hot_and_lock.py:10)")]
    assert crunch and "213 samples" in crunch[0], dom.frame_titles
    # each wait says what was waited on
    assert len(dom.wait_titles) == 40
    assert dom.wait_titles[0].startswith("worker-1 (1002) waited 30.0ms on the lock [lock] in bump")


@pytest.mark.slow
def test_flame_graph_zooms(tmp_path):
    out = tmp_path / "r.html"
    assert main(["report", str(_session_file(tmp_path)), "--html", str(out)]) == 0
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    full = _chromium_dom(out, tmp_path / "a")
    zoomed = _chromium_dom(out, tmp_path / "b", "#zoom=main")
    assert zoomed.body_rendered
    # zoomed into main: only main and what it calls are drawn, as shares of main
    assert [x.split(" (")[0] for x in zoomed.frame_titles] == ["main", "crunch", "report"], zoomed.frame_titles
    assert "100.0% of the zoomed node" in zoomed.frame_titles[0] and len(full.frame_titles) > 3


@pytest.mark.slow
def test_html_without_histograms_or_timeline(tmp_path):
    out = tmp_path / "r.html"
    assert main(["report", str(_session_file(tmp_path, with_hist=False, with_timeline=False, with_profile=False)),
                 "--html", str(out)]) == 0
    dom = _chromium_dom(out, tmp_path)
    assert dom.body_rendered and dom.decision_rows == 2
    assert dom.svgs == [] and dom.notes >= 5       # one note per entity, the timeline, the flame graph


@pytest.mark.slow
def test_end_to_end_run_then_report(tmp_path):
    """A real `gyroscope run --json` of the labeled workload, then report + stream + trace."""
    workload = Path("/work/shared/workloads/mixed_hot_and_lock.py")
    if not workload.exists():
        pytest.skip("shared workloads are not available")
    sj, st, tr = tmp_path / "s.json", tmp_path / "s.jsonl", tmp_path / "t.json"
    proc = subprocess.run([sys.executable, "-m", "gyroscope.agent.cli", "run", "--json", str(sj), "--stream", str(st),
                           "--trace", str(tr), "-q", str(workload)], cwd=ROOT, capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(sj.read_text())
    assert result["schema"] == "gyroscope.session/2" and result["entities"]
    lines = [json.loads(x) for x in st.read_text().splitlines()]
    assert lines[0]["type"] == "window" and lines[-1]["type"] == "session"
    assert json.loads(tr.read_text())["displayTimeUnit"] == "ms"
    rep = subprocess.run([sys.executable, "-m", "gyroscope.agent.cli", "report", str(sj)], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert rep.returncode == 0 and "Decisions" in rep.stdout
    out = tmp_path / "r.html"
    assert main(["report", str(sj), "--html", str(out)]) == 0
    dom = _chromium_dom(out, tmp_path)
    assert dom.body_rendered and dom.decision_rows == len(result["decisions"])
