"""Profile writers checked by their real readers: go tool pprof, speedscope's JSON schema, folded-stack
parsing, and an OTLP/HTTP receiver that decodes the profiles signal with opentelemetry-proto."""
from __future__ import annotations

import gzip
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from gyroscope.agent.cli import main
from gyroscope.agent.profiles.collapsed import collapsed_lines, write_collapsed
from gyroscope.agent.profiles.pprof import _varint, encode_profile, write_pprof
from gyroscope.agent.profiles.speedscope import write_speedscope_profile
from gyroscope.agent.result import write_json_atomic
from gyroscope.agent.sinks.otel import OtelSink

from tests import report_fixtures as fx
from tests.otlp_receiver import OtlpReceiver, profiles

SCHEMA = Path(__file__).parents[1] / "fixtures" / "speedscope-file-format-schema-1.25.0.json"


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        pytest.skip("`go` is not installed (Debian package golang-go; .ci/setup installs it as root)")
    return go


def _pprof(go: str, *args: str) -> str:
    proc = subprocess.run([go, "tool", "pprof", *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_varint_encoding():
    assert _varint(1) == b"\x01" and _varint(300) == b"\xac\x02" and len(_varint(-1)) == 10


def test_pprof_top_names_the_hot_function_first(tmp_path):
    go = _go()
    path = tmp_path / "p.pb.gz"
    write_pprof(path, fx.profile_store(), 1_700_000_000 * 10**9, 3 * 10**9)
    assert gzip.decompress(path.read_bytes())[:1]   # gzipped
    top = _pprof(go, "-top", str(path))
    assert "Type: cpu" in top
    rows = [line.split() for line in top.splitlines() if line.strip().endswith(("crunch", "report", "bump", "main"))]
    assert rows[0][-1] == "crunch", top                          # flat CPU: the hot loop's function first
    assert "2130ms" in top.replace(" ", "") or "2.13s" in top    # 213 samples x 10 ms of CPU in crunch
    # the other sample types are there and read back: wall time includes the workers' waits in bump
    wall = _pprof(go, "-top", "-sample_index=wall", str(path))
    bump = next(line.split() for line in wall.splitlines() if line.strip().endswith("bump"))
    assert bump[0] == "1420ms", wall                              # 2 x (70 waiting + 1 running) x 10 ms
    traces = _pprof(go, "-traces", "-sample_index=samples", str(path))
    assert "thread_name:  worker-1" in traces and "state:  wait" in traces and "(module)" in traces


def test_pprof_is_deterministic_and_empty_store_is_valid(tmp_path):
    from gyroscope.agent.profiles.store import StackStore

    assert encode_profile(fx.profile_store(), 1, 2) == encode_profile(fx.profile_store(), 1, 2)
    go = _go()
    path = tmp_path / "empty.pb.gz"
    write_pprof(path, StackStore())
    _pprof(go, "-top", str(path))


def test_speedscope_passes_the_published_schema(tmp_path):
    jsonschema = pytest.importorskip("jsonschema", reason="the dev extra jsonschema is not installed")
    path = tmp_path / "p.speedscope.json"
    store = fx.profile_store()
    write_speedscope_profile(path, store, "fixture")
    doc = json.loads(path.read_text())
    jsonschema.validate(doc, json.loads(SCHEMA.read_text()))
    assert len(doc["profiles"]) == 3                             # one per thread
    main_p = next(p for p in doc["profiles"] if p["name"].startswith("MainThread"))
    frames = doc["shared"]["frames"]
    assert main_p["unit"] == "nanoseconds" and main_p["endValue"] == 2280 * 1_000_000
    first = main_p["samples"][0]
    assert frames[first[0]]["name"] == "<module>" and frames[first[-1]]["name"] == "crunch"   # outermost first
    # the schema is strict enough to catch a broken file
    doc["profiles"][0]["type"] = "sampledd"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, json.loads(SCHEMA.read_text()))


def test_collapsed_parses_and_sums_to_the_sample_count(tmp_path):
    store = fx.profile_store()
    path = tmp_path / "p.folded"
    write_collapsed(path, store)
    total = 0
    for line in path.read_text().splitlines():
        stack, count = line.rsplit(" ", 1)
        parts = stack.split(";")
        assert len(parts) >= 2 and all(parts)
        total += int(count)
    assert total == store.totals()["samples"] == 370
    top = collapsed_lines(store)[0]
    assert top == "MainThread (tid 1001);<module> (mixed_hot_and_lock.py:40);main (mixed_hot_and_lock.py:34);" \
                  "crunch (mixed_hot_and_lock.py:12) 150"


def test_report_writes_profiles_from_a_saved_session(tmp_path, capsys):
    session = tmp_path / "s.json"
    write_json_atomic(session, fx.session())
    out = {k: tmp_path / f"p.{k}" for k in ("pprof", "speedscope", "collapsed")}
    assert main(["report", str(session), "--pprof", str(out["pprof"]), "--speedscope", str(out["speedscope"]),
                 "--collapsed", str(out["collapsed"])]) == 0
    assert all(p.stat().st_size > 0 for p in out.values())
    assert sum(int(x.rsplit(" ", 1)[1]) for x in out["collapsed"].read_text().splitlines()) == 370
    err = capsys.readouterr().err
    assert err.count("gyroscope: wrote") == 3


def test_report_profile_to_a_bad_path_is_one_line(tmp_path, capsys):
    session = tmp_path / "s.json"
    write_json_atomic(session, fx.session())
    (tmp_path / "afile").write_text("")
    assert main(["report", str(session), "--pprof", str(tmp_path / "afile" / "p.pb.gz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write" in err[0] and "not a directory" in err[0].lower()


def test_session_without_stacks_gives_empty_but_valid_files(tmp_path):
    session = tmp_path / "s.json"
    write_json_atomic(session, fx.session(with_profile=False))
    assert main(["report", str(session), "--collapsed", str(tmp_path / "c"), "--speedscope", str(tmp_path / "s")]) == 0
    assert (tmp_path / "c").read_text() == ""
    assert json.loads((tmp_path / "s").read_text())["profiles"] == []


# ---- OTLP profiles ------------------------------------------------------------------------------
def _export(endpoint: str, **kw) -> dict:
    sink = OtelSink.create(endpoint, **kw)
    assert sink is not None
    for w in fx.windows(2):
        sink.on_window(w)
    from gyroscope.agent.model import SessionResult
    result = SessionResult.from_json(fx.session())
    report = sink.close(result)
    if report is not None:
        report.apply(result)
    return result.to_json()


@pytest.mark.timeout(60)
def test_otlp_profiles_reach_the_receiver(monkeypatch):
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT", raising=False)
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test")
    with OtlpReceiver() as rx:
        result = _export(rx.endpoint)
        got = profiles(rx)
        spans = rx.spans()
        trace_res = rx.resources()[0]
    assert {p["sample_type"] for p in got} == {"cpu", "wall", "samples"}
    cpu = next(p for p in got if p["sample_type"] == "cpu")
    assert cpu["unit"] == "nanoseconds" and cpu["resource"] == trace_res       # the traces' resource
    assert cpu["resource"]["deployment.environment"] == "test"
    # the leaf functions match the store's, weighted alike: crunch holds the CPU
    leaf_cpu: dict[str, int] = {}
    for s in cpu["samples"]:
        leaf_cpu[s["frames"][0][0]] = leaf_cpu.get(s["frames"][0][0], 0) + s["value"][0]
    assert max(leaf_cpu, key=leaf_cpu.get) == "crunch" and leaf_cpu["crunch"] == 2130 * 1_000_000
    store_leaves = {r.frames[0].function for r in fx.profile_store().iter_rows()}
    assert set(leaf_cpu) == store_leaves
    s = next(s for s in cpu["samples"] if s["frames"][0][0] == "crunch")
    assert s["frames"][-1][0] == "<module>" and s["frames"][0][1] == fx.FILE
    assert s["attrs"] == {"thread.id": fx.MAIN, "thread.name": "MainThread", "process.pid": 4242,
                          "gyroscope.thread.state": "run"}
    assert s["location_attrs"][0]["code.function.name"] == "crunch"
    assert s["location_attrs"][0]["code.file.path"] == fx.FILE and "code.line.number" in s["location_attrs"][0]
    session = next(sp for sp in spans if sp.name == "gyroscope.session")
    assert s["link"] == (session.trace_id, session.span_id)                    # linked to the session span
    info = result["export"]["otlp"]["profiles"]
    assert info["ok"] and info["profiles"] == 3 and info["samples"] > 0
    assert not [e for e in result["errors"] if "profiles" in e]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("status", [404, 415])
def test_otlp_receiver_without_profiles_costs_one_line(status, monkeypatch, capsys):
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT", raising=False)
    with OtlpReceiver(reject={"/v1development/profiles": status}) as rx:
        result = _export(rx.endpoint)
        assert rx.rejected == {"/v1development/profiles": 1} and rx.spans()
    lines = [e for e in result["errors"] if "profiles" in e]
    assert len(lines) == 1 and f"HTTP {status}" in lines[0] and "\n" not in lines[0]
    exp = result["export"]["otlp"]
    assert exp["failed"] == 0 and exp["spans"] > 0                            # the other signals are unaffected
    import io

    from gyroscope.agent.model import SessionResult
    from gyroscope.agent.summary import print_summary
    buf = io.StringIO()
    print_summary(SessionResult.from_json(result), buf)
    lines = buf.getvalue().splitlines()
    assert sum("profiles" in line and line.lstrip().startswith("error:") for line in lines) == 1
    assert any("otlp" in line and "0 profiles" in line for line in lines)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["env", "flag"])
def test_otlp_profiles_opt_out(how, monkeypatch):
    if how == "env":
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT", "none")
        kw = {}
    else:
        monkeypatch.delenv("OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT", raising=False)
        kw = {"profiles": False}
    with OtlpReceiver() as rx:
        result = _export(rx.endpoint, **kw)
        assert rx.requests["/v1development/profiles"] == [] and rx.spans()
    assert "profiles" not in result["export"]["otlp"]
