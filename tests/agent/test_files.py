"""File sinks: JSONL stream, Chrome trace events, speedscope; and the sink factory."""
from __future__ import annotations

import argparse
import json

import pytest
from gyroscope.agent.errors import GyroscopeError
from gyroscope.agent.sinks.factory import add_sink_arguments, build_sinks
from gyroscope.agent.sinks.files import StreamSink, TraceSink, write_speedscope

from tests import report_fixtures as fx


def _parse(argv):
    p = argparse.ArgumentParser()
    add_sink_arguments(p)
    return p.parse_args(argv)


def test_stream_is_flushed_per_window(tmp_path):
    path = tmp_path / "s.jsonl"
    sink = StreamSink(path)
    ws = fx.windows(3)
    sink.on_window(ws[0])
    # readable before close: nothing held back past a window
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [x["type"] for x in lines] == ["window", "entity", "entity", "decision", "decision"]
    assert lines[0]["index"] == 5 and lines[0]["counters"]["events"] == 1800
    assert lines[1]["function"] == "crunch" and lines[1]["window"] == 5
    for w in ws[1:]:
        sink.on_window(w)
    sink.close(fx.model())
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert lines[-1]["type"] == "session" and lines[-1]["schema"] == "gyroscope.session/2"
    assert lines[-1]["entities"] == 3 and len(lines[-1]["decisions"]) == 2
    assert sum(x["type"] == "window" for x in lines) == 3


def test_chrome_trace_is_valid_trace_event_format(tmp_path):
    path = tmp_path / "t.json"
    sink = TraceSink(path)
    for w in fx.windows(3):
        sink.on_window(w)
    sink.close(fx.model())
    doc = json.loads(path.read_text())
    assert doc["displayTimeUnit"] == "ms"
    evs = doc["traceEvents"]
    for e in evs:
        assert e["ph"] in ("X", "C", "M", "i") and isinstance(e["pid"], int) and isinstance(e["tid"], int)
        if e["ph"] != "M":
            assert isinstance(e["ts"], (int, float)) and e["ts"] >= 0
        if e["ph"] == "X":
            assert e["dur"] >= 0
    windows = [e for e in evs if e.get("cat") == "window"]
    assert len(windows) == 3 and windows[1]["ts"] == pytest.approx(1e6) and windows[0]["dur"] == pytest.approx(1e6)
    waits = [e for e in evs if e.get("cat") == "wait"]
    assert {e["tid"] for e in waits} == {fx.WORKER1, fx.WORKER2}
    assert sorted(e["dur"] for e in waits)[:2] == [3000.0, 3000.0]
    names = {e["tid"]: e["args"]["name"] for e in evs if e["ph"] == "M" and e["name"] == "thread_name"}
    assert names[fx.WORKER1].startswith("worker-1") and names[fx.MAIN].startswith("MainThread")
    counters = [e for e in evs if e["ph"] == "C"]
    assert counters and counters[0]["args"]["iterations_per_s"] == 800_000.0
    assert any(e["ph"] == "i" and e["name"].startswith("specialize_hot_loop") for e in evs)


def test_speedscope(tmp_path):
    path = tmp_path / "p.speedscope.json"
    main = [("inner", "a.py", 3), ("outer", "a.py", 10)]
    write_speedscope(path, [("MainThread", main, 3), ("MainThread", main[1:], 1), ("worker", [("run", "b.py", 5)], 2)])
    doc = json.loads(path.read_text())
    assert doc["$schema"] == "https://www.speedscope.app/file-format-schema.json"
    frames = doc["shared"]["frames"]
    assert {f["name"] for f in frames} == {"inner", "outer", "run"}
    prof = {p["name"]: p for p in doc["profiles"]}
    mt = prof["MainThread"]
    assert mt["type"] == "sampled" and mt["weights"] == [3, 1] and mt["endValue"] == 4
    assert [frames[i]["name"] for i in mt["samples"][0]] == ["outer", "inner"]   # outermost first


def test_factory_builds_requested_sinks(tmp_path, monkeypatch):
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    args = _parse(["--stream", str(tmp_path / "s.jsonl"), "--trace", str(tmp_path / "t.json"),
                   "--ledger", str(tmp_path / "l.ledger")])
    sinks = build_sinks(args, "run")
    assert [s.name for s in sinks] == ["stream", "trace"]
    assert args.ledger == str(tmp_path / "l.ledger") and args.otlp is None and not args.quiet
    for s in sinks:
        s.close(fx.model())
    assert build_sinks(_parse([]), "run") == []


def test_factory_errors_are_one_line(tmp_path):
    with pytest.raises(GyroscopeError, match="cannot write"):
        build_sinks(_parse(["--stream", str(tmp_path / "no" / "dir" / "s.jsonl")]), "run")
    with pytest.raises(GyroscopeError, match="http"):
        build_sinks(_parse(["--otlp", "localhost:4318"]), "run")
