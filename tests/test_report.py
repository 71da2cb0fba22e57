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

ROOT = Path(__file__).resolve().parent.parent


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
        if a.get("class") == "note":
            self.notes += 1


def _chromium_dom(html_path: Path, tmp_path: Path) -> _Dom:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium is not installed (Debian package `chromium`)")
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", "--dump-dom", html_path.as_uri()]
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


@pytest.mark.slow
def test_html_without_histograms_or_timeline(tmp_path):
    out = tmp_path / "r.html"
    assert main(["report", str(_session_file(tmp_path, with_hist=False, with_timeline=False)),
                 "--html", str(out)]) == 0
    dom = _chromium_dom(out, tmp_path)
    assert dom.body_rendered and dom.decision_rows == 2
    assert dom.svgs == [] and dom.notes >= 4       # one note per entity + one for the timeline


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
