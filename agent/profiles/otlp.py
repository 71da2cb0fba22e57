"""The OpenTelemetry profiles signal: the session's stacks as OTLP profiles (v1development), over
OTLP/HTTP to `/v1development/profiles`.

Message (opentelemetry-proto >= 1.43, `opentelemetry.proto.profiles.v1development`): one
ExportProfilesServiceRequest with one ProfilesDictionary (string, function, location, stack,
attribute and link tables, each with its zero entry first) and one ResourceProfiles carrying the
same resource as the traces. This proto version gives a Profile a single sample type, so one
Profile is sent per sample type that has data: cpu (nanoseconds), wall (nanoseconds), samples
(count), lock_wait / lock_hold (nanoseconds) when the exact lock profiler fed them.

  - a Sample per store row: its stack, values [v], attributes thread.id, thread.name, process.pid,
    gyroscope.thread.state; link_index -> the session's trace and span ids when known;
  - Function: name, file (code.function.name / code.file.path are the Function's own fields) and
    start_line; Line: function and line number; each Location also carries the attributes
    code.function.name, code.file.path, code.line.number (the semantic conventions' names).

Where it goes (`profiles_endpoint`): OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT (a full URL; "none" or an
empty value turns the signal off), else `--otlp BASE` or OTEL_EXPORTER_OTLP_ENDPOINT + the path.
`--no-otlp-profiles` also turns it off. Headers: OTEL_EXPORTER_OTLP_PROFILES_HEADERS or
OTEL_EXPORTER_OTLP_HEADERS (k=v,k=v). A receiver that answers 404 / 415 (it does not know the
signal yet: most collectors in 2026 still need a feature gate) is reported in one short line.
"""
from __future__ import annotations

import os
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import unquote

from gyroscope.agent.profiles.store import SAMPLE_TYPES, StackStore

PATH = "/v1development/profiles"
ORDER = ("cpu", "wall", "samples", "lock_wait", "lock_hold")


def profiles_endpoint(otlp: str | None, disabled: bool = False) -> str | None:
    """The URL profiles are POSTed to, or None when the signal is off or nothing asks for export."""
    if disabled:
        return None
    env = os.environ.get("OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT")
    if env is not None:
        env = env.strip()
        return None if env.lower() in ("", "none", "off", "false") else env
    if otlp:
        return otlp.rstrip("/") + PATH
    base = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    return base.rstrip("/") + PATH if base else None


def _headers() -> dict[str, str]:
    raw = os.environ.get("OTEL_EXPORTER_OTLP_PROFILES_HEADERS") or os.environ.get("OTEL_EXPORTER_OTLP_HEADERS") or ""
    out = {}
    for part in raw.split(","):
        if "=" in part:
            k, v = part.split("=", 1)
            if k.strip():
                out[unquote(k.strip())] = unquote(v.strip())
    return out


def _any_value(v: Any) -> Any:
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue

    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, int):
        return AnyValue(int_value=v)
    if isinstance(v, float):
        return AnyValue(double_value=v)
    if isinstance(v, (list, tuple)):
        return AnyValue(array_value=ArrayValue(values=[_any_value(x) for x in v]))
    return AnyValue(string_value=str(v))


def build_profiles_request(store: StackStore, resource_attrs: dict[str, Any] | None = None,
                           time_unix_ns: int = 0, duration_ns: int = 0, trace_id: bytes = b"",
                           span_id: bytes = b"", scope_version: str = "") -> Any:
    """The ExportProfilesServiceRequest for a store (None when the store is empty)."""
    from opentelemetry.proto.collector.profiles.v1development.profiles_service_pb2 import (
        ExportProfilesServiceRequest,
    )
    from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope, KeyValue
    from opentelemetry.proto.profiles.v1development import profiles_pb2 as pb
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource

    if not store.rows:
        return None
    d = pb.ProfilesDictionary()
    strings: dict[str, int] = {}

    def s(text: str) -> int:
        i = strings.get(text)
        if i is None:
            i = strings[text] = len(d.string_table)
            d.string_table.append(text)
        return i

    s("")
    d.mapping_table.add()
    d.location_table.add()
    d.function_table.add()
    d.link_table.add()
    d.attribute_table.add()
    d.stack_table.add()
    attrs: dict[tuple[str, Any], int] = {}

    def attr(key: str, value: Any) -> int:
        k = (key, value if not isinstance(value, bool) else ("bool", value))
        i = attrs.get(k)
        if i is None:
            i = attrs[k] = len(d.attribute_table)
            d.attribute_table.add(key_strindex=s(key), value=_any_value(value))
        return i

    link = 0
    if trace_id and span_id:
        d.link_table.add(trace_id=trace_id, span_id=span_id)
        link = 1
    functions: dict[tuple[str, str, int], int] = {}
    locations: dict[int, int] = {}

    def location(fi: int) -> int:
        li = locations.get(fi)
        if li is None:
            f = store.frames[fi]
            key = (f.function, f.file, f.first_line)
            fn = functions.get(key)
            if fn is None:
                fn = functions[key] = len(d.function_table)
                d.function_table.add(name_strindex=s(f.function), system_name_strindex=s(f.function),
                                     filename_strindex=s(f.file), start_line=f.first_line)
            li = locations[fi] = len(d.location_table)
            loc = d.location_table.add(attribute_indices=[attr("code.function.name", f.function),
                                                          attr("code.file.path", f.file),
                                                          attr("code.line.number", f.line)])
            loc.lines.add(function_index=fn, line=f.line)
        return li

    stacks: dict[int, int] = {}
    rows = []
    for (pid, tid, stack, state), v in store.rows.items():
        si = stacks.get(stack)
        if si is None:
            si = stacks[stack] = len(d.stack_table)
            d.stack_table.add(location_indices=[location(fi) for fi in store.stacks[stack]])
        a = [attr("thread.id", tid), attr("thread.name", store.threads.get((pid, tid), "")),
             attr("process.pid", pid), attr("gyroscope.thread.state", state)]
        rows.append((si, a, v))
    totals = store.totals()
    index = {name: i for i, (name, _unit) in enumerate(SAMPLE_TYPES)}
    units = dict(SAMPLE_TYPES)
    req = ExportProfilesServiceRequest()
    rp = req.resource_profiles.add(resource=Resource(attributes=[
        KeyValue(key=str(k), value=_any_value(v)) for k, v in (resource_attrs or {}).items()]))
    sp = rp.scope_profiles.add(scope=InstrumentationScope(name="gyroscope", version=scope_version))
    for name in ORDER:
        if not totals.get(name):
            continue
        i = index[name]
        prof = sp.profiles.add(time_unix_nano=time_unix_ns, duration_nano=duration_ns,
                               profile_id=os.urandom(16))
        prof.sample_type.type_strindex = s(name)
        prof.sample_type.unit_strindex = s(units[name])
        prof.period_type.type_strindex = s("wall")
        prof.period_type.unit_strindex = s("nanoseconds")
        for si, a, v in rows:
            if v[i]:
                prof.samples.add(stack_index=si, attribute_indices=a, link_index=link, values=[v[i]])
    if not sp.profiles:
        return None
    req.dictionary.CopyFrom(d)   # last: the profiles above added their strings (a constructor argument is copied)
    return req


def post_profiles(url: str, body: bytes, timeout_s: float) -> tuple[bool, str]:
    """POST one request; (ok, one-line reason when not ok)."""
    headers = {"Content-Type": "application/x-protobuf", **_headers()}
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:   # noqa: S310 - the user's endpoint
            resp.read()
            return True, ""
    except urllib.error.HTTPError as e:
        if e.code in (404, 415):
            return False, f"the receiver does not accept OTLP profiles (HTTP {e.code} on {PATH})"
        return False, f"HTTP {e.code} {e.reason}"
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        return False, f"{type(reason).__name__}: {reason}"


def export_profiles(url: str, store: StackStore, resource_attrs: dict[str, Any] | None = None,
                    time_unix_ns: int = 0, duration_ns: int = 0, trace_id: bytes = b"", span_id: bytes = b"",
                    timeout_s: float = 0.5) -> dict[str, Any]:
    """Build and send the session's profiles. Returns {"endpoint", "profiles", "samples", "ok", "error"}."""
    info: dict[str, Any] = {"endpoint": url, "profiles": 0, "samples": 0, "ok": False, "error": ""}
    try:
        req = build_profiles_request(store, resource_attrs, time_unix_ns, duration_ns, trace_id, span_id)
    except Exception as e:  # noqa: BLE001 - e.g. an opentelemetry-proto without the profiles signal
        info["error"] = f"cannot build OTLP profiles: {type(e).__name__}: {e}"
        return info
    if req is None:
        info["ok"] = True
        return info
    profiles = [p for rp in req.resource_profiles for sp in rp.scope_profiles for p in sp.profiles]
    ok, why = post_profiles(url, req.SerializeToString(), timeout_s)
    info.update(ok=ok, error=why)
    if ok:
        info["profiles"] = len(profiles)
        info["samples"] = sum(len(p.samples) for p in profiles)
    return info
