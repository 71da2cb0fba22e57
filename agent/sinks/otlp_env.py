"""What the OpenTelemetry environment asks for (OTEL_SDK_DISABLED, OTEL_EXPORTER_OTLP_*), read
without importing any exporter: `gyroscope run` checks it before the program starts."""
from __future__ import annotations

import os

_SIGNALS = ("traces", "metrics", "logs")
_TRUE = ("true", "1", "yes", "on")


def sdk_disabled() -> bool:
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() in _TRUE


def requested_signals(otlp: str | None) -> dict[str, str | None]:
    """Signal -> endpoint to pass the exporter (None: let the SDK read its env vars).
    Empty when nothing asks for export or OTEL_SDK_DISABLED is true."""
    if sdk_disabled():
        return {}
    if otlp:
        base = otlp.rstrip("/")
        return {s: f"{base}/v1/{s}" for s in _SIGNALS}
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return {s: None for s in _SIGNALS}
    return {s: None for s in _SIGNALS if os.environ.get(f"OTEL_EXPORTER_OTLP_{s.upper()}_ENDPOINT")}


PROTOCOL = "http/protobuf"   # the only OTLP protocol gyroscope's exporters speak


def unsupported_protocol(signals: dict[str, str | None]) -> str | None:
    """The first OTEL_EXPORTER_OTLP[_<SIGNAL>]_PROTOCOL setting that asks for something other than
    http/protobuf for a requested signal, as "VAR=value"; None when all is well. The SDK's HTTP
    exporters do not read these variables, so a grpc setting would otherwise be silently ignored."""
    general = os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "").strip()
    for s in _SIGNALS:
        if s not in signals:
            continue
        var = f"OTEL_EXPORTER_OTLP_{s.upper()}_PROTOCOL"
        value = os.environ.get(var, "").strip()
        if not value:
            var, value = "OTEL_EXPORTER_OTLP_PROTOCOL", general
        if value and value.lower() != PROTOCOL:
            return f"{var}={value}"
    return None
