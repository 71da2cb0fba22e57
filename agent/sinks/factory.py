"""Build the sinks a user asked for on the command line (shared by `run` and `attach`)."""
from __future__ import annotations

import argparse

from gyroscope.agent.errors import OutputError, UsageError
from gyroscope.agent.sinks.base import Sink

SINK_HELP = """\
export: --otlp ENDPOINT (or the standard OTEL_EXPORTER_OTLP_* variables) sends traces, metrics
and logs over OTLP/HTTP; --stream, --trace and --ledger write files."""


def add_sink_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --otlp, --stream, --trace, --ledger, -q/--quiet (shared by run and attach)."""
    g = parser.add_argument_group("export", SINK_HELP)
    g.add_argument("--otlp", metavar="ENDPOINT", default=None,
                   help="export over OTLP/HTTP to ENDPOINT (e.g. http://127.0.0.1:4318); also enabled by "
                        "OTEL_EXPORTER_OTLP_ENDPOINT or a per-signal variant; OTEL_SDK_DISABLED=true turns it off")
    g.add_argument("--stream", metavar="PATH", default=None,
                   help="write a JSONL stream of windows, entities and decisions (flushed per window)")
    g.add_argument("--trace", metavar="PATH", default=None,
                   help="write a Chrome trace-event JSON file (open it in https://ui.perfetto.dev)")
    g.add_argument("--ledger", metavar="PATH", default=None,
                   help="record the kernel's ingest ledger (replay it with `gyroscope replay PATH`)")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")


def build_sinks(args: argparse.Namespace, source: str) -> list[Sink]:
    """The sinks to feed during the session, from parsed arguments. Bad paths -> GyroscopeError."""
    sinks: list[Sink] = []
    try:
        if getattr(args, "stream", None):
            from gyroscope.agent.sinks.files import StreamSink
            sinks.append(StreamSink(args.stream))
        if getattr(args, "trace", None):
            from gyroscope.agent.sinks.files import TraceSink
            sinks.append(TraceSink(args.trace))
    except OSError as e:
        for s in sinks:
            try:
                s.close(None)
            except Exception:  # noqa: BLE001
                pass
        raise OutputError(f"cannot write {e.filename}: {e.strerror or e}") from None
    otlp = getattr(args, "otlp", None)
    if otlp is not None and not otlp.startswith(("http://", "https://")):
        raise UsageError(f"--otlp needs an http:// or https:// endpoint, got {otlp!r}")
    from gyroscope.agent.sinks.otel import OtelSink, requested_signals
    if requested_signals(otlp):
        try:
            sinks.append(OtelSink.create(otlp))
        except Exception as e:  # noqa: BLE001 - e.g. a malformed OTEL_* variable
            raise UsageError(f"cannot set up OpenTelemetry export: {type(e).__name__}: {e}") from None
    return sinks
