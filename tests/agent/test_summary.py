"""The terminal summary."""
from __future__ import annotations

import io
import re

from gyroscope.agent.summary import print_summary

from tests import report_fixtures as fx

ANSI = re.compile(r"\x1b\[")


def test_order_and_content_without_tty():
    out = io.StringIO()
    print_summary(fx.model(), out)
    text = out.getvalue()
    assert not ANSI.search(text)
    i_dec, i_loops, i_waits = text.index("Decisions"), text.index("Top loops"), text.index("Top waits")
    i_counters = text.index("samples 300")
    assert i_dec < i_loops < i_waits < i_counters
    dec = text[i_dec:i_loops]
    assert "specialize_hot_loop" in dec and "crunch" in dec and "mixed_hot_and_lock.py:12" in dec
    assert "0.84" in dec and "cpu_share=71%" in dec
    assert "mitigate_contention" in dec and "wait_s_total=1.84s" in dec
    loops = text[i_loops:i_waits]
    assert "71.0%" in loops and "800.0k" in loops
    waits = text[i_waits:i_counters]
    assert "1.84s" in waits and "4.6ms" in waits and "bump" in waits
    assert "dropped 7" in text and "errors 1" in text and "sampler: 1 sample skipped" in text


def test_quiet_prints_nothing():
    out = io.StringIO()
    print_summary(fx.model(), out, quiet=True)
    assert out.getvalue() == ""


def test_empty_session_and_no_decisions():
    r = fx.model()
    r.decisions, r.entities = [], []
    out = io.StringIO()
    print_summary(r, out)
    assert "Decisions: none" in out.getvalue() and "Top loops" not in out.getvalue()
