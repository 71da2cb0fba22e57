"""OpenTelemetry sink: traces, metrics and logs through the OTel SDK and its OTLP/HTTP exporters.

Configured the standard way (the SDK reads these itself):
  OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_{TRACES,METRICS,LOGS}_ENDPOINT,
  OTEL_EXPORTER_OTLP_HEADERS, OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_SDK_DISABLED,
  OTEL_EXPORTER_OTLP[_<SIGNAL>]_PROTOCOL (http/protobuf only: anything else is refused in one line),
plus `--otlp ENDPOINT` (base URL, e.g. http://127.0.0.1:4318; signal paths /v1/... are appended).
Nothing is exported unless asked: `--otlp`, OTEL_EXPORTER_OTLP_ENDPOINT (all signals) or a
per-signal endpoint variable (that signal only). Nothing listens on the network.

What is sent
  traces   span "gyroscope.session" (the whole session) and one child span "gyroscope.window"
           per report cycle; decisions and hot / contended entities are span events.
  metrics  observable gauges per entity: gyroscope.hot_loop_score, gyroscope.contention_score,
           gyroscope.iterations_per_s, gyroscope.cpu_share; histogram gyroscope.lock.wait_time (s);
           counters gyroscope.events, gyroscope.events.dropped.
  logs     one record per decision, event name "gyroscope.decision".
  profiles at the end, the session's sampled stacks as OTLP profiles (agent/profiles/otlp.py), same
           resource, samples linked to the session span; off with --no-otlp-profiles or
           OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT=none; a receiver without the signal (404 / 415)
           costs one line in the errors. result["export"]["otlp"]["profiles"] says what was sent.
Attributes follow the semantic conventions (code.function.name, code.file.path,
code.line.number, thread.id, thread.name, process.pid); our own live under `gyroscope.*`.

Never holding the program up: the providers are private (the global OTel providers, which the
watched program may use, are not touched), queues are bounded, exports time out quickly and
the flush at exit runs in a helper thread that is waited for at most FLUSH_BUDGET_S. `close`
returns a SinkReport whose `otlp` (agent/model.py OtlpExport: endpoint, spans, metrics, logs,
dropped, failed) the session puts into the result's `export` before the other sinks close.

Counting: each SDK exporter is wrapped in one `CountingExporter` that counts the items of every
export call as exported or failed, and passes everything else through to the SDK's exporter.
"""
from __future__ import annotations

import os
import threading
import time
from typing import Any

from gyroscope.agent.model import Action, OtlpExport, SessionResult
from gyroscope.agent.sinks.base import SinkReport, Window
from gyroscope.agent.sinks.otlp_env import (  # noqa: F401 (re-exported)
    _SIGNALS,
    PROTOCOL,
    requested_signals,
    sdk_disabled,
    unsupported_protocol,
)

EXPORT_TIMEOUT_S = 0.5          # one export request (the exporter retries within this deadline)
FLUSH_BUDGET_S = 0.8            # the flush at exit waits at most this (a dead endpoint costs ~1 s in all)
MAX_QUEUE = 2048                # spans / log records waiting to be exported
MAX_EVENTS_PER_SPAN = 64
METRIC_INTERVAL_MS = 5000



def _endpoint_label(signals: dict[str, str | None]) -> str:
    if not signals:
        return ""
    explicit = [v for v in signals.values() if v]
    if explicit:
        return explicit[0].rsplit("/v1/", 1)[0]
    base = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if base:
        return base
    return ", ".join(os.environ.get(f"OTEL_EXPORTER_OTLP_{s.upper()}_ENDPOINT", "") for s in signals)


class _SdkLogCapture:
    """The SDK reports export failures through `logging`; keep them off the program's stderr and
    handlers (the "opentelemetry" logger stops propagating) and count them instead."""

    def __init__(self) -> None:
        import logging

        class Handler(logging.Handler):
            def emit(inner, record: logging.LogRecord) -> None:  # noqa: N805
                capture.count += 1
                if len(capture.messages) < 5:
                    try:
                        capture.messages.append(record.getMessage())
                    except Exception:  # noqa: BLE001
                        pass

        capture = self
        self.count = 0
        self.messages: list[str] = []
        self.handler = Handler(logging.WARNING)
        log = logging.getLogger("opentelemetry")
        log.addHandler(self.handler)
        log.propagate = False


_LOG_CAPTURE: _SdkLogCapture | None = None


def _capture_sdk_logs() -> _SdkLogCapture:
    global _LOG_CAPTURE
    if _LOG_CAPTURE is None:
        _LOG_CAPTURE = _SdkLogCapture()
    return _LOG_CAPTURE


def _code_attrs(d: dict[str, Any]) -> dict[str, Any]:
    return {"code.function.name": str(d.get("function", "")), "code.file.path": str(d.get("file", "")),
            "code.line.number": int(d.get("line", 0))}


def _scalar_attrs(prefix: str, d: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in (d or {}).items():
        if isinstance(v, bool) or isinstance(v, (int, float, str)):
            out[f"{prefix}{k}"] = v
    return out


class _Counts:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ok = {s: 0 for s in _SIGNALS}
        self.failed = {s: 0 for s in _SIGNALS}

    def add(self, signal: str, n: int, success: bool) -> None:
        with self.lock:
            (self.ok if success else self.failed)[signal] += n


class CountingExporter:
    """One wrapper around any SDK exporter (spans, metrics, logs): every export call's items are
    counted as exported or failed under `signal`; every other attribute (shutdown, force_flush,
    the metric reader's preferred temporality and aggregation) is the wrapped exporter's."""

    def __init__(self, inner: Any, signal: str, counts: _Counts, size: Any = len) -> None:
        self._inner = inner
        self._signal = signal
        self._counts = counts
        self._size = size

    def export(self, batch: Any, *args: Any, **kw: Any) -> Any:
        r = self._inner.export(batch, *args, **kw)
        self._counts.add(self._signal, self._size(batch), getattr(r, "name", "") == "SUCCESS")
        return r

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _metric_points(data: Any) -> int:
    n = 0
    for rm in getattr(data, "resource_metrics", ()):
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                n += len(getattr(m.data, "data_points", ()))
    return n


class OtelSink:
    """Sink (agent.sinks.base) exporting through the OTel SDK. Build with `OtelSink.create(...)`."""
    name = "otlp"
    reports = True   # closed before the other sinks: its SinkReport goes into the result

    def __init__(self, signals: dict[str, str | None], resource_attrs: dict[str, Any] | None = None,
                 export_timeout_s: float = EXPORT_TIMEOUT_S, flush_budget_s: float = FLUSH_BUDGET_S,
                 metric_interval_ms: int = METRIC_INTERVAL_MS, profiles_url: str | None = None,
                 profiles_per_cycle: bool = False) -> None:
        from opentelemetry.sdk.resources import Resource

        self.signals = dict(signals)
        self.profiles_url = profiles_url
        # continuous sessions (attach --continuous): one OTLP profile per report cycle, not one at the end
        self.profiles_per_cycle = bool(profiles_per_cycle and profiles_url)
        self._cycle_exports: list[tuple[threading.Thread, dict[str, Any]]] = []
        self.cycle_profiles = {"sent": 0, "failed": 0, "skipped_busy": 0}
        self.export_timeout_s = export_timeout_s
        self._logs_capture = _capture_sdk_logs()
        self._logs_seen = self._logs_capture.count
        self.endpoint = _endpoint_label(signals)
        self.flush_budget_s = flush_budget_s
        self.counts = _Counts()
        self.emitted = {s: 0 for s in _SIGNALS}
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._gauges: dict[int, dict[str, Any]] = {}       # entity id -> {"attrs", metric -> value}
        self._threads: dict[int, str] = {}
        res = Resource.create(dict(resource_attrs or {}))
        if str(res.attributes.get("service.name", "")).startswith("unknown_service"):
            res = res.merge(Resource({"service.name": "gyroscope"}))
        self.resource = res
        self._tracer_provider = self._meter_provider = self._logger_provider = None
        self._tracer = self._logger = None
        self._session_span = None
        self._session_ctx = None
        self._t0_unix_ns: int | None = None
        self._logged: set[tuple[str, int]] = set()   # (action, entity id) already sent as a log record
        timeout = export_timeout_s
        counts = self.counts
        if "traces" in signals:
            self._setup_traces(signals["traces"], timeout, counts)
        if "metrics" in signals:
            self._setup_metrics(signals["metrics"], timeout, counts, metric_interval_ms)
        if "logs" in signals:
            self._setup_logs(signals["logs"], timeout, counts)

    @classmethod
    def create(cls, otlp: str | None, profiles: bool = True, **kw: Any) -> OtelSink | None:
        from gyroscope.agent.profiles.otlp import profiles_endpoint

        signals = requested_signals(otlp)
        if not signals:
            return None
        kw.setdefault("profiles_url", profiles_endpoint(otlp, disabled=not profiles))
        return cls(signals, **kw)

    # ---- setup ----------------------------------------------------------------------------
    def _setup_traces(self, endpoint: str | None, timeout: float, counts: _Counts) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace import SpanLimits, TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        tp = TracerProvider(resource=self.resource, shutdown_on_exit=False, span_limits=SpanLimits(max_events=MAX_EVENTS_PER_SPAN + 8))
        tp.add_span_processor(BatchSpanProcessor(
            CountingExporter(OTLPSpanExporter(endpoint=endpoint, timeout=timeout), "traces", counts),
            max_queue_size=MAX_QUEUE, schedule_delay_millis=1000, max_export_batch_size=256,
            export_timeout_millis=int(timeout * 1000)))
        self._tracer_provider = tp
        self._tracer = tp.get_tracer("gyroscope")

    def _setup_metrics(self, endpoint: str | None, timeout: float, counts: _Counts, interval_ms: int) -> None:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.metrics import Observation
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        exporter = CountingExporter(OTLPMetricExporter(endpoint=endpoint, timeout=timeout), "metrics", counts,
                                    size=_metric_points)
        reader = PeriodicExportingMetricReader(exporter,  # type: ignore[arg-type]
                                               export_interval_millis=interval_ms,
                                               export_timeout_millis=int(timeout * 1000))
        mp = MeterProvider(resource=self.resource, metric_readers=[reader], shutdown_on_exit=False)
        meter = mp.get_meter("gyroscope")

        def gauge_cb(metric: str):
            def cb(_options):
                with self._lock:
                    items = [(g["attrs"], g[metric]) for g in self._gauges.values() if metric in g]
                return [Observation(v, a) for a, v in items]
            return cb

        for metric, unit, desc in (("hot_loop_score", "1", "structural hot-loop score (0..1)"),
                                   ("contention_score", "1", "structural contention score (0..1)"),
                                   ("iterations_per_s", "{iteration}/s", "loop iterations per second"),
                                   ("cpu_share", "1", "share of the process's sampled running time")):
            meter.create_observable_gauge(f"gyroscope.{metric}", callbacks=[gauge_cb(metric)], unit=unit,
                                          description=desc)
        self._wait_hist = meter.create_histogram("gyroscope.lock.wait_time", unit="s",
                                                 description="time threads spent blocked on a lock")
        self._events_ctr = meter.create_counter("gyroscope.events", unit="{event}",
                                                description="events the agent saw")
        self._dropped_ctr = meter.create_counter("gyroscope.events.dropped", unit="{event}",
                                                 description="events or samples lost by bounded queues")
        self._meter_provider = mp

    def _setup_logs(self, endpoint: str | None, timeout: float, counts: _Counts) -> None:
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
        from opentelemetry.sdk._logs import LoggerProvider
        from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

        lp = LoggerProvider(resource=self.resource, shutdown_on_exit=False)
        lp.add_log_record_processor(BatchLogRecordProcessor(
            CountingExporter(OTLPLogExporter(endpoint=endpoint, timeout=timeout), "logs", counts),
            max_queue_size=MAX_QUEUE, schedule_delay_millis=1000, max_export_batch_size=256,
            export_timeout_millis=int(timeout * 1000)))
        self._logger_provider = lp
        self._logger = lp.get_logger("gyroscope")

    # ---- the sink -------------------------------------------------------------------------
    def _ensure_session(self, unix_ns: int) -> None:
        if self._tracer is None or self._session_span is not None:
            return
        from opentelemetry import trace

        self._t0_unix_ns = unix_ns
        self._session_span = self._tracer.start_span("gyroscope.session", start_time=unix_ns,
                                                     attributes={"process.pid": os.getpid()})
        self._session_ctx = trace.set_span_in_context(self._session_span)
        self.emitted["traces"] += 1

    def on_window(self, window: Window) -> None:
        start_ns = int(window.unix_start_s * 1e9)
        end_ns = start_ns + max(0, window.t_end_ns - window.t_start_ns)
        self._threads.update(window.threads)
        self._update_gauges(window)
        if self._tracer is not None:
            self._window_span(window, start_ns, end_ns)
        if self._meter_provider is not None:
            for w in window.waits:
                self._wait_hist.record(w.get("duration_ns", 0) / 1e9, self._wait_attrs(w))
            self._events_ctr.add(int(window.counters.get("events", 0)))
            self._dropped_ctr.add(int(window.counters.get("dropped", 0)))
        if self._logger is not None:
            for d in window.decisions:
                self._log_decision(d, end_ns)
        if self.profiles_per_cycle and window.stacks:
            self._export_cycle_profile(window, start_ns, end_ns)

    def _export_cycle_profile(self, window: Window, start_ns: int, end_ns: int) -> None:
        """The cycle's stacks as one OTLP profile, sent from a helper thread; a cycle whose previous
        export is still in flight is skipped and counted (a slow receiver never piles up threads)."""
        from gyroscope.agent.profiles.store import StackStore
        alive = []
        for t, o in self._cycle_exports:
            if t.is_alive():
                alive.append((t, o))
            else:
                self._count_cycle(o)
        self._cycle_exports = alive
        if alive:
            self.cycle_profiles["skipped_busy"] += 1
            return
        store = StackStore()
        store.add_many(window.stacks)
        started = self._start_profiles_export({"profile": store.to_json(), "started_unix_s": start_ns / 1e9,
                                               "duration_s": (end_ns - start_ns) / 1e9})
        if started is not None:
            self._cycle_exports.append(started)

    def _count_cycle(self, out: dict[str, Any]) -> None:
        self.cycle_profiles["sent" if out.get("ok") else "failed"] += 1

    def _wait_attrs(self, w: dict[str, Any]) -> dict[str, Any]:
        tid = w["thread"]
        attrs: dict[str, Any] = {"thread.id": tid, "gyroscope.entity_id": w["entity_id"]}
        if tid in self._threads:
            attrs["thread.name"] = self._threads[tid]
        return attrs

    def _update_gauges(self, window: Window) -> None:
        with self._lock:
            for e in window.entities:
                eid = e["id"]
                g = self._gauges.setdefault(eid, {})
                g["attrs"] = {"gyroscope.entity_id": eid, "gyroscope.entity_kind": str(e.get("kind", "")),
                              **_code_attrs(e)}
                m = e.get("measurements", {})
                for k in ("iterations_per_s", "cpu_share"):
                    if k in m:
                        g[k] = float(m[k])
                for k, v in (e.get("scores", {})).items():
                    if k in ("hot_loop_score", "contention_score"):
                        g[k] = float(v)
            for d in window.decisions:
                eid = d["entity_id"]
                g = self._gauges.setdefault(eid, {"attrs": {"gyroscope.entity_id": eid,
                                                            "gyroscope.entity_kind": str(d.get("entity_kind", "")),
                                                            **_code_attrs(d)}})
                for k in ("hot_loop_score", "contention_score"):
                    if k in d:
                        g[k] = float(d[k])

    def _window_span(self, window: Window, start_ns: int, end_ns: int) -> None:
        self._ensure_session(start_ns)
        span = self._tracer.start_span(
            "gyroscope.window", context=self._session_ctx, start_time=start_ns,
            attributes={"gyroscope.window.index": window.index,
                        "gyroscope.window.entities": len(window.entities),
                        "gyroscope.window.decisions": len(window.decisions),
                        **_scalar_attrs("gyroscope.window.", window.counters)})
        n = 0
        for d in window.decisions:
            if n >= MAX_EVENTS_PER_SPAN:
                break
            span.add_event("gyroscope.decision", attributes=self._decision_attrs(d), timestamp=end_ns)
            n += 1
        for e in window.entities:
            if n >= MAX_EVENTS_PER_SPAN:
                break
            name = _entity_event_name(e)
            if name:
                span.add_event(name, attributes=self._entity_attrs(e), timestamp=end_ns)
                n += 1
        span.end(end_time=end_ns)
        self.emitted["traces"] += 1

    @staticmethod
    def _decision_attrs(d: dict[str, Any]) -> dict[str, Any]:
        attrs = {"gyroscope.action": str(d.get("action", "")),
                 "gyroscope.entity_id": d["entity_id"],
                 "gyroscope.entity_kind": str(d.get("entity_kind", "")),
                 "gyroscope.hot_loop_score": d["hot_loop_score"],
                 "gyroscope.contention_score": d["contention_score"],
                 **_code_attrs(d)}
        ev = d["evidence"]
        attrs.update(_scalar_attrs("gyroscope.evidence.", ev))
        return attrs

    @staticmethod
    def _entity_attrs(e: dict[str, Any]) -> dict[str, Any]:
        attrs = {"gyroscope.entity_id": e["id"], "gyroscope.entity_kind": str(e.get("kind", "")),
                 **_code_attrs(e), **_scalar_attrs("gyroscope.", e.get("measurements", {})),
                 **_scalar_attrs("gyroscope.", e.get("slcp", {})),
                 **_scalar_attrs("gyroscope.", {k: v for k, v in (e.get("scores", {})).items()})}
        if e.get("detail"):
            attrs["gyroscope.detail"] = str(e["detail"])
        threads = [int(t) for t in e.get("threads", [])]
        if len(threads) == 1:
            attrs["thread.id"] = threads[0]
        elif threads:
            attrs["gyroscope.threads"] = threads
        return attrs

    def _log_decision(self, d: dict[str, Any], ts_ns: int) -> None:
        from opentelemetry._logs import SeverityNumber

        body = (f"{d.get('action', '')} {d.get('entity_kind', '')} {d.get('function', '')} "
                f"({d.get('file', '')}:{d.get('line', 0)})")
        self._logged.add((str(d.get("action", "")), d["entity_id"]))
        self._logger.emit(timestamp=ts_ns, observed_timestamp=time.time_ns(), severity_number=SeverityNumber.INFO,
                          severity_text="INFO", body=body, attributes=self._decision_attrs(d),
                          event_name="gyroscope.decision", context=self._session_ctx)
        self.emitted["logs"] += 1

    def close(self, result: SessionResult | None) -> SinkReport | None:
        """End the session span, flush everything within FLUSH_BUDGET_S; report what was sent."""
        end_ns = time.time_ns()
        if result is None:   # the session never started
            self._shutdown_all()
            return None
        decisions = [d.to_json() for d in result.decisions]
        if self._tracer is not None:
            start = int(result.started_unix_s * 1e9) or end_ns
            self._ensure_session(start)
            span = self._session_span
            span.set_attribute("process.pid", result.pid)
            span.set_attribute("gyroscope.source", result.source)
            span.set_attribute("gyroscope.windows", result.windows)
            span.set_attribute("gyroscope.decisions", len(result.decisions))
            span.set_attribute("process.command_args", list(result.command))
            for k, v in result.counters.items():
                span.set_attribute(f"gyroscope.counters.{k}", int(v))
            for d in decisions[:MAX_EVENTS_PER_SPAN]:
                span.add_event("gyroscope.decision", attributes=self._decision_attrs(d), timestamp=end_ns)
            for a in result.actions[:MAX_EVENTS_PER_SPAN]:
                span.add_event("gyroscope.action", attributes=_action_attrs(a), timestamp=end_ns)
            if result.duration_s:
                end_ns = max(end_ns, start + int(result.duration_s * 1e9))
            span.end(end_time=end_ns)
        for t, o in self._cycle_exports:   # the cycles' profiles still in flight
            t.join(timeout=self.export_timeout_s)
            self._count_cycle(o)
        self._cycle_exports = []
        profiles_thread = None if self.profiles_per_cycle else self._start_profiles_export(
            {"profile": result.extra.get("profile"), "started_unix_s": result.started_unix_s,
             "duration_s": result.duration_s})
        if self._logger is not None:
            # the session's final decisions that the gate never let through a window
            for d in decisions:
                if (d["action"], d["entity_id"]) not in self._logged:
                    self._log_decision(d, end_ns)
            # every change made to the program (opt-in actuators), one record each
            from opentelemetry._logs import SeverityNumber
            for a in result.actions:
                self._logger.emit(timestamp=end_ns, observed_timestamp=time.time_ns(),
                                  severity_number=SeverityNumber.INFO if a.ok else SeverityNumber.WARN,
                                  severity_text="INFO" if a.ok else "WARN",
                                  body=f"{a.action} thread {a.thread} ({a.mechanism})",
                                  attributes=_action_attrs(a), event_name="gyroscope.action",
                                  context=self._session_ctx)
                self.emitted["logs"] += 1
        if self._meter_provider is not None:
            # final values for every entity of the session, so the last collection is complete
            self._update_gauges(Window(index=-1, t_start_ns=0, t_end_ns=0, unix_start_s=0.0,
                                       entities=[e.to_json() for e in result.entities], decisions=decisions))
        t_flush = time.monotonic()
        timed_out = not self._shutdown_all()
        profiles_info = self._finish_profiles_export(profiles_thread, t_flush)
        with self.counts.lock:
            ok, failed = dict(self.counts.ok), dict(self.counts.failed)
        spans_dropped = max(0, self.emitted["traces"] - ok["traces"] - failed["traces"])
        logs_dropped = max(0, self.emitted["logs"] - ok["logs"] - failed["logs"])
        info = OtlpExport(endpoint=self.endpoint, signals=sorted(self.signals), spans=ok["traces"],
                          metrics=ok["metrics"], logs=ok["logs"], dropped=spans_dropped + logs_dropped,
                          failed=failed["traces"] + failed["metrics"] + failed["logs"], flush_timed_out=timed_out,
                          emitted={"spans": self.emitted["traces"], "logs": self.emitted["logs"]},
                          sdk_warnings=self._logs_capture.count - self._logs_seen)
        errors = list(self.errors)
        failed_all = bool(info.failed or info.dropped or timed_out)
        profiles_failed = bool(profiles_info is not None and profiles_info.get("error"))
        if self.profiles_per_cycle:
            info.extra["profiles_per_cycle"] = dict(self.cycle_profiles)
        if profiles_info is not None:
            info.extra["profiles"] = profiles_info
            if profiles_failed and not failed_all:   # only the profiles signal was refused: one line
                errors.append(f"otlp profiles to {self.profiles_url}: {profiles_info['error']}")
        if failed_all:   # the endpoint failed: one line for every signal, profiles included
            errors.append(f"otlp export to {self.endpoint}: {info.failed} items failed, {info.dropped} dropped"
                          + (" and the profiles" if profiles_failed else "")
                          + (f", flush gave up after {self.flush_budget_s:g}s" if timed_out else "")
                          + (f" ({self._logs_capture.messages[-1]})" if self._logs_capture.messages else ""))
        return SinkReport(otlp=info, errors=errors)

    def _start_profiles_export(self, result: dict[str, Any]) -> tuple[threading.Thread, dict[str, Any]] | None:
        """Send the session's profiles from a helper thread, alongside the flush of the other signals."""
        if not self.profiles_url or not isinstance(result.get("profile"), dict):
            return None
        from gyroscope.agent.profiles.otlp import export_profiles
        from gyroscope.agent.profiles.store import store_from_result

        trace_id = span_id = b""
        if self._session_span is not None:
            ctx = self._session_span.get_span_context()
            trace_id, span_id = ctx.trace_id.to_bytes(16, "big"), ctx.span_id.to_bytes(8, "big")
        out: dict[str, Any] = {"endpoint": self.profiles_url, "profiles": 0, "samples": 0, "ok": False,
                               "error": "not sent within the flush budget"}
        start_ns = int(float(result.get("started_unix_s", 0) or 0) * 1e9)
        dur_ns = int(float(result.get("duration_s", 0) or 0) * 1e9)
        attrs = dict(self.resource.attributes)

        def run() -> None:
            try:
                out.update(export_profiles(self.profiles_url, store_from_result(result), attrs, start_ns, dur_ns,
                                           trace_id, span_id, timeout_s=self.export_timeout_s))
            except Exception as e:  # noqa: BLE001 - never break the agent
                out["error"] = f"{type(e).__name__}: {e}"

        t = threading.Thread(target=run, name="gyroscope-otel-profiles", daemon=True)
        t.start()
        return t, out

    def _finish_profiles_export(self, started: tuple[threading.Thread, dict[str, Any]] | None,
                                t_flush: float) -> dict[str, Any] | None:
        if started is None:
            return None
        t, out = started
        t.join(max(0.0, self.flush_budget_s - (time.monotonic() - t_flush)))
        return dict(out)

    def _shutdown_all(self) -> bool:
        """Shut the providers down in a helper thread; wait at most flush_budget_s. True if done."""
        providers = [p for p in (self._tracer_provider, self._logger_provider, self._meter_provider) if p]
        budget_ms = int(self.flush_budget_s * 1000)

        def run() -> None:
            for p in providers:
                try:
                    if p is self._meter_provider:
                        p.shutdown(timeout_millis=budget_ms)   # the reader collects one last time
                    else:
                        p.force_flush(budget_ms)
                        p.shutdown()
                except Exception as e:  # noqa: BLE001 - a failing exporter must not break the agent
                    self.errors.append(f"{type(e).__name__}: {e}")

        t = threading.Thread(target=run, name="gyroscope-otel-flush", daemon=True)
        t.start()
        t.join(self.flush_budget_s)
        return not t.is_alive()


def _action_attrs(a: Action) -> dict[str, Any]:
    """An Action (agent/model.py) as attributes: thread.id plus gyroscope.action.*."""
    attrs: dict[str, Any] = {"thread.id": a.thread, "gyroscope.action.action": a.action,
                             "gyroscope.action.mechanism": a.mechanism, "gyroscope.action.reason": a.reason,
                             "gyroscope.action.ok": a.ok}
    if a.error is not None:
        attrs["gyroscope.action.error"] = a.error
    for k, v in (("from", a.from_), ("to", a.to)):
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            attrs[f"gyroscope.action.{k}"] = v
    return attrs


def _entity_event_name(e: dict[str, Any]) -> str:
    """'gyroscope.hot_entity' for code that ran, 'gyroscope.contended_entity' for places threads waited."""
    m = e.get("measurements", {})
    kind = e.get("kind")
    if kind in ("lock", "wait") and (m.get("wait_s_total", 0) or m.get("samples_waiting", 0)):
        return "gyroscope.contended_entity"
    if kind in ("loop", "function") and (m.get("cpu_share", 0) or m.get("iterations", 0)):
        return "gyroscope.hot_entity"
    return ""
