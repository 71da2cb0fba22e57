"""A real OTLP/HTTP receiver for tests: binds 127.0.0.1:0, decodes protobuf bodies with opentelemetry-proto."""
from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.profiles.v1development.profiles_service_pb2 import (
    ExportProfilesServiceRequest,
    ExportProfilesServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

_KINDS = {"/v1/traces": (ExportTraceServiceRequest, ExportTraceServiceResponse),
          "/v1/metrics": (ExportMetricsServiceRequest, ExportMetricsServiceResponse),
          "/v1/logs": (ExportLogsServiceRequest, ExportLogsServiceResponse),
          "/v1development/profiles": (ExportProfilesServiceRequest, ExportProfilesServiceResponse)}


def any_value(v: Any) -> Any:
    which = v.WhichOneof("value")
    if which == "array_value":
        return [any_value(x) for x in v.array_value.values]
    return getattr(v, which) if which else None


def attrs(kvs: Any) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in kvs}


class OtlpReceiver:
    def __init__(self, hang_s: float = 0.0, reject: dict[str, int] | None = None) -> None:
        """`reject`: path -> HTTP status to answer instead of decoding (e.g. a collector without profiles: 404)."""
        self.requests: dict[str, list[Any]] = {k: [] for k in _KINDS}
        self.hang_s = hang_s
        self.reject = dict(reject or {})
        self.rejected: dict[str, int] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                n = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(n)
                if receiver.hang_s:
                    time.sleep(receiver.hang_s)
                kind = _KINDS.get(self.path)
                if self.path in receiver.reject:
                    receiver.rejected[self.path] = receiver.rejected.get(self.path, 0) + 1
                    self.send_response(receiver.reject[self.path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if kind is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                req = kind[0]()
                req.ParseFromString(body)
                receiver.requests[self.path].append(req)
                out = kind[1]().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *a: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> OtlpReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ---- decoded views ---------------------------------------------------------------------
    def spans(self) -> list[Any]:
        return [s for r in self.requests["/v1/traces"] for rs in r.resource_spans
                for ss in rs.scope_spans for s in ss.spans]

    def resources(self) -> list[dict[str, Any]]:
        return [attrs(rs.resource.attributes) for r in self.requests["/v1/traces"] for rs in r.resource_spans]

    def metrics(self) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {}
        for r in self.requests["/v1/metrics"]:
            for rm in r.resource_metrics:
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        out.setdefault(m.name, []).append(m)
        return out

    def logs(self) -> list[Any]:
        return [lr for r in self.requests["/v1/logs"] for rl in r.resource_logs
                for sl in rl.scope_logs for lr in sl.log_records]


def profiles(receiver: OtlpReceiver) -> list[dict[str, Any]]:
    """Every received OTLP profile, decoded through its request's dictionary: {"sample_type", "unit",
    "resource", "samples": [{"value", "frames": [(function, file, line), ...] leaf first, "attrs",
    "location_attrs": [{...}, ...], "link": (trace_id, span_id) | None}]}."""
    out = []
    for req in receiver.requests["/v1development/profiles"]:
        d = req.dictionary
        st = d.string_table

        def kv(indices: Any, d: Any = d, st: Any = st) -> dict[str, Any]:
            return {st[d.attribute_table[i].key_strindex]: any_value(d.attribute_table[i].value) for i in indices}

        for rp in req.resource_profiles:
            res = attrs(rp.resource.attributes)
            for sp in rp.scope_profiles:
                for p in sp.profiles:
                    samples = []
                    for s in p.samples:
                        locs = [d.location_table[i] for i in d.stack_table[s.stack_index].location_indices]
                        frames = []
                        for loc in locs:
                            line = loc.lines[0]
                            fn = d.function_table[line.function_index]
                            frames.append((st[fn.name_strindex], st[fn.filename_strindex], line.line))
                        link = d.link_table[s.link_index] if s.link_index else None
                        samples.append({"value": list(s.values), "frames": frames, "attrs": kv(s.attribute_indices),
                                        "location_attrs": [kv(loc.attribute_indices) for loc in locs],
                                        "link": (link.trace_id, link.span_id) if link is not None else None})
                    out.append({"sample_type": st[p.sample_type.type_strindex],
                                "unit": st[p.sample_type.unit_strindex], "resource": res, "samples": samples})
    return out


def refused_endpoint() -> str:
    """An endpoint on 127.0.0.1 where nothing listens (connection refused)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"
