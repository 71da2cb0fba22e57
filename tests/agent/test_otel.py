"""The OTel sink against a real OTLP/HTTP receiver on 127.0.0.1 (protobuf bodies decoded)."""
from __future__ import annotations

import time

import pytest
from gyroscope.agent.model import Action, SessionResult
from gyroscope.agent.sinks import otel
from gyroscope.agent.sinks.base import SinkReport
from gyroscope.agent.sinks.otel import OtelSink, requested_signals

from tests import report_fixtures as fx
from tests.otlp_receiver import OtlpReceiver, attrs, refused_endpoint

pytestmark = pytest.mark.timeout(60)


def _close(sink: OtelSink, result: SessionResult) -> dict:
    """Close as the session does (the sink's report goes into the result); the result's JSON."""
    report = sink.close(result)
    assert isinstance(report, SinkReport)
    report.apply(result)
    return result.to_json()


def _run(endpoint: str, **kw) -> dict:
    sink = OtelSink.create(endpoint, **kw)
    assert sink is not None
    for w in fx.windows(3):
        sink.on_window(w)
    return _close(sink, fx.model())


def test_exports_traces_metrics_logs():
    with OtlpReceiver() as rx:
        result = _run(rx.endpoint)
        spans = rx.spans()
    names = [s.name for s in spans]
    assert names.count("gyroscope.session") == 1
    assert names.count("gyroscope.window") == 3
    session = next(s for s in spans if s.name == "gyroscope.session")
    windows = [s for s in spans if s.name == "gyroscope.window"]
    assert all(w.parent_span_id == session.span_id and w.trace_id == session.trace_id for w in windows)
    sa = attrs(session.attributes)
    assert sa["process.pid"] == 4242 and sa["gyroscope.source"] == "run"
    assert sa["gyroscope.counters.dropped"] == 7
    first = min(windows, key=lambda s: s.start_time_unix_nano)
    evs = {e.name: attrs(e.attributes) for e in first.events}
    dec = [attrs(e.attributes) for e in first.events if e.name == "gyroscope.decision"]
    assert {d["gyroscope.action"] for d in dec} == {"specialize_hot_loop", "mitigate_contention"}
    hot = next(d for d in dec if d["gyroscope.action"] == "specialize_hot_loop")
    assert hot["code.function.name"] == "crunch" and hot["code.line.number"] == 12
    assert hot["code.file.path"] == fx.FILE and hot["gyroscope.hot_loop_score"] == pytest.approx(0.84)
    assert evs["gyroscope.hot_entity"]["gyroscope.chi6"] == 17
    assert evs["gyroscope.hot_entity"]["gyroscope.resonance_key"] == 41
    assert evs["gyroscope.hot_entity"]["thread.id"] == fx.MAIN
    assert evs["gyroscope.contended_entity"]["gyroscope.wait_s_total"] == pytest.approx(1.84)
    assert first.end_time_unix_nano - first.start_time_unix_nano == 1_000_000_000
    assert rx.resources()[0]["service.name"] == "gyroscope"

    metrics = rx.metrics()
    for g in ("gyroscope.hot_loop_score", "gyroscope.contention_score", "gyroscope.iterations_per_s",
              "gyroscope.cpu_share"):
        assert g in metrics and metrics[g][-1].WhichOneof("data") == "gauge", g
    pts = {attrs(p.attributes)["code.function.name"]: p.as_double
           for p in metrics["gyroscope.hot_loop_score"][-1].gauge.data_points}
    assert pts["crunch"] == pytest.approx(0.84)
    hist = metrics["gyroscope.lock.wait_time"][-1]
    assert hist.unit == "s"
    assert sum(p.count for p in hist.histogram.data_points) == 6
    assert sum(p.sum for p in hist.histogram.data_points) == pytest.approx(3 * 0.008)
    assert {attrs(p.attributes)["thread.name"] for p in hist.histogram.data_points} == {"worker-1", "worker-2"}
    ev = metrics["gyroscope.events"][-1].sum
    assert ev.is_monotonic and sum(p.as_int for p in ev.data_points) == 3 * 1800
    assert sum(p.as_int for p in metrics["gyroscope.events.dropped"][-1].sum.data_points) == 6

    logs = rx.logs()
    assert len(logs) == 2 and all(lr.event_name == "gyroscope.decision" for lr in logs)
    la = attrs(logs[0].attributes)
    assert la["gyroscope.action"] in ("specialize_hot_loop", "mitigate_contention")
    assert logs[0].trace_id == session.trace_id

    exp = result["export"]["otlp"]
    assert exp["endpoint"] == rx.endpoint
    assert exp["spans"] == 4 and exp["logs"] == 2 and exp["metrics"] > 0
    assert exp["dropped"] == 0 and exp["failed"] == 0 and not exp["flush_timed_out"]


def test_refused_endpoint_is_bounded_and_counted():
    sink = OtelSink.create(refused_endpoint())
    for w in fx.windows(3):
        sink.on_window(w)
    t = time.monotonic()
    result = _close(sink, fx.model())
    assert time.monotonic() - t < otel.FLUSH_BUDGET_S + 0.5  # the bound itself, not a speed claim
    exp = result["export"]["otlp"]
    assert exp["spans"] == 0 and exp["logs"] == 0
    assert exp["failed"] + exp["dropped"] >= 6
    assert any("otlp export" in e for e in result["errors"])


def test_hanging_receiver_is_bounded():
    with OtlpReceiver(hang_s=5.0) as rx:
        sink = OtelSink.create(rx.endpoint)
        for w in fx.windows(2):
            sink.on_window(w)
        t = time.monotonic()
        result = _close(sink, fx.model())
        assert time.monotonic() - t < otel.FLUSH_BUDGET_S + 0.5
    exp = result["export"]["otlp"]
    assert exp["spans"] == 0
    assert exp["failed"] + exp["dropped"] >= 3
    assert result["errors"]


def test_only_when_asked(monkeypatch):
    for v in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
              "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "OTEL_SDK_DISABLED"):
        monkeypatch.delenv(v, raising=False)
    assert requested_signals(None) == {}
    assert OtelSink.create(None) is None
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:1/v1/traces")
    assert set(requested_signals(None)) == {"traces"}
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
    assert set(requested_signals(None)) == {"traces", "metrics", "logs"}
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert requested_signals("http://127.0.0.1:1") == {}


def test_env_configuration(monkeypatch):
    with OtlpReceiver() as rx:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rx.endpoint)
        monkeypatch.setenv("OTEL_SERVICE_NAME", "my-app")
        monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test")
        result = _run(None)
        res = rx.resources()[0]
    assert res["service.name"] == "my-app" and res["deployment.environment"] == "test"
    assert result["export"]["otlp"]["spans"] == 4


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_end_to_end_run_exports_and_dead_endpoint_keeps_program_output(tmp_path):
    """A real `gyroscope run --otlp` of the labeled workload to a live receiver, then to a refused port."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    workload = Path("/work/shared/workloads/mixed_hot_and_lock.py")
    if not workload.exists():
        pytest.skip("shared workloads are not available")
    root = Path(__file__).resolve().parents[2]
    bare = subprocess.run([sys.executable, str(workload)], capture_output=True, text=True, timeout=120)

    def run(endpoint: str) -> tuple[subprocess.CompletedProcess, dict]:
        sj = tmp_path / "s.json"
        p = subprocess.run([sys.executable, "-m", "gyroscope.agent.cli", "run", "-q", "--json", str(sj), "--otlp", endpoint,
                            str(workload)], cwd=root, capture_output=True, text=True, timeout=120)
        return p, json.loads(sj.read_text())

    with OtlpReceiver() as rx:
        p, result = run(rx.endpoint)
        spans, logs, metrics = rx.spans(), rx.logs(), rx.metrics()
    assert p.returncode == bare.returncode and p.stdout == bare.stdout
    names = [s.name for s in spans]
    assert names.count("gyroscope.session") == 1 and "gyroscope.window" in names
    assert len(logs) >= len(result["decisions"]) >= 1
    assert {"gyroscope.hot_loop_score", "gyroscope.lock.wait_time", "gyroscope.events"} <= set(metrics)
    assert result["export"]["otlp"]["spans"] == len(spans) and result["export"]["otlp"]["failed"] == 0

    p, result = run(refused_endpoint())
    assert p.returncode == bare.returncode and p.stdout == bare.stdout
    # -q: no SDK warnings on the program's stderr, only gyroscope's one line about the failed export
    assert p.stderr.startswith(bare.stderr)
    extra = p.stderr[len(bare.stderr):].splitlines()
    assert len(extra) == 1 and extra[0].startswith("gyroscope: error: otlp export to "), p.stderr
    exp = result["export"]["otlp"]
    assert exp["spans"] == 0 and exp["failed"] + exp["dropped"] >= 1


def test_per_signal_endpoint_exports_only_that_signal(monkeypatch):
    for v in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
              "OTEL_SDK_DISABLED"):
        monkeypatch.delenv(v, raising=False)
    with OtlpReceiver() as rx:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", rx.endpoint + "/v1/traces")
        result = _run(None)
        assert len(rx.spans()) == 4
        assert rx.requests["/v1/metrics"] == [] and rx.requests["/v1/logs"] == []
    assert result["export"]["otlp"]["signals"] == ["traces"] and result["export"]["otlp"]["logs"] == 0


def test_actions_are_exported_as_logs_and_span_events():
    with OtlpReceiver() as rx:
        sink = OtelSink.create(rx.endpoint)
        result = fx.model()
        result.actions = [Action.from_json(a) for a in [
            {"action": "lower_priority", "thread": 101, "mechanism": "nice", "from": 0, "to": 10,
             "reason": "background thread while hot loop crunch runs", "ok": True, "error": None, "t_s": 0.5},
            {"action": "restore_priority", "thread": 101, "mechanism": "nice", "from": None, "to": 0,
             "reason": "restore", "ok": False, "error": "thread exited", "t_s": 1.0}]]
        sink.close(result)
        spans, logs = rx.spans(), rx.logs()
    session = next(s for s in spans if s.name == "gyroscope.session")
    evs = [attrs(e.attributes) for e in session.events if e.name == "gyroscope.action"]
    assert [e["gyroscope.action.action"] for e in evs] == ["lower_priority", "restore_priority"]
    acts = [attrs(lr.attributes) for lr in logs if lr.event_name == "gyroscope.action"]
    assert len(acts) == 2 and acts[0]["thread.id"] == 101 and acts[0]["gyroscope.action.to"] == 10
    assert acts[1]["gyroscope.action.ok"] is False and acts[1]["gyroscope.action.error"] == "thread exited"
