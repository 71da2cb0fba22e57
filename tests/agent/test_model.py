"""The typed session model (agent/model.py): round trips, v1 -> v2, unknown keys, bad types;
the session's closing order (the result is complete before any sink closes); the renderers on
a saved session; the error tree and its exit codes."""
from __future__ import annotations

import json

import pytest
from gyroscope.agent import errors
from gyroscope.agent.cli import EXIT_CODES, exit_code_for, main
from gyroscope.agent.model import (
    SCHEMA,
    AttachInfo,
    EntityRecord,
    OtlpExport,
    SessionResult,
    Slcp,
)
from gyroscope.agent.render import RENDERERS, HtmlRenderer, JsonRenderer, SummaryRenderer, renderer_for
from gyroscope.agent.session import Session
from gyroscope.agent.sinks.base import SinkReport
from gyroscope.agent.sinks.files import StreamSink
from gyroscope.bridges.events import Entity, EntityKind, Event, EventKind, Observation

from tests import report_fixtures as fx
from tests.conftest import ListSource


# ---- round trips ------------------------------------------------------------------------------
def test_v2_round_trip_through_json_and_a_file(tmp_path):
    s = fx.model()
    doc = s.to_json()
    assert doc["schema"] == SCHEMA == "gyroscope.session/2"
    assert SessionResult.from_json(json.loads(json.dumps(doc))) == s
    path = tmp_path / "s.json"
    s.save(path)
    loaded = SessionResult.load(path)
    assert loaded == s and loaded.to_json() == doc


def test_typed_fields_not_dicts():
    s = fx.model()
    e = s.entities[0]
    assert isinstance(e, EntityRecord) and isinstance(e.slcp, Slcp) and len(e.slcp.chi_hist64) == 64
    assert e.measurements.cpu_share == 0.71 and e.scores.action_structural == "specialize_hot_loop"
    assert s.entities[2].scores is None                      # v1 entity without scores stays without
    assert s.decisions[1].evidence["wait_s_total"] == 1.84
    assert s.timeline[0].entity_id == 2 and s.counters.gate_held == 40


def test_v1_is_converted():
    v1 = fx.session()
    assert v1["schema"] == "gyroscope.session/1"
    s = SessionResult.from_json(v1)
    (main_proc,) = s.processes
    assert main_proc.pid == 4242 and main_proc.python == "3.12.1" and main_proc.exit_code == 0
    assert main_proc.command == v1["command"]
    assert [t.name for t in main_proc.threads] == ["MainThread", "worker-1", "worker-2"]
    assert all(e.pid == 4242 for e in s.entities) and all(d.pid == 4242 for d in s.decisions)
    assert all(w.pid == 4242 for w in s.timeline)
    doc = s.to_json()
    assert doc["schema"] == SCHEMA and "threads" not in doc and doc["processes"][0]["threads"]
    # the main process's fields are repeated at the top level for readers
    assert (doc["pid"], doc["python"], doc["exit_code"], doc["command"]) == (4242, "3.12.1", 0, v1["command"])
    assert v1 == fx.session() | {"started_unix_s": v1["started_unix_s"]}   # the input was not modified


def test_unknown_keys_are_kept_at_every_level(tmp_path):
    doc = fx.model().to_json()
    doc["profile"] = {"format": "pprof", "samples": 12}
    doc["entities"][0]["lock_hold_s"] = 0.5
    doc["entities"][0]["measurements"]["hold_s_total"] = 0.25
    doc["counters"]["lock_events"] = 9
    s = SessionResult.from_json(doc)
    assert s.extra == {"profile": {"format": "pprof", "samples": 12}}
    assert s.entities[0].measurements.extra == {"hold_s_total": 0.25}
    path = tmp_path / "s.json"
    s.save(path)
    again = json.loads(path.read_text())
    assert again["profile"] == doc["profile"] and again["counters"]["lock_events"] == 9
    assert again["entities"][0]["lock_hold_s"] == 0.5
    assert again["entities"][0]["measurements"]["hold_s_total"] == 0.25


@pytest.mark.parametrize("edit,needle", [
    (lambda d: d["entities"][0]["measurements"].__setitem__("cpu_share", "a lot"),
     "session.entities[0].measurements.cpu_share must be a number, not a string"),
    (lambda d: d.__setitem__("entities", {}), "session.entities must be a list, not an object"),
    (lambda d: d["decisions"][0].pop("action"), "session.decisions[0]: missing field 'action'"),
    (lambda d: d["processes"][0].__setitem__("pid", True), "session.processes[0].pid must be an integer"),
    (lambda d: d.__setitem__("schema", "other/1"), "not a gyroscope session of schema"),
])
def test_bad_files_are_one_clear_line(tmp_path, capsys, edit, needle):
    doc = fx.model().to_json()
    edit(doc)
    path = tmp_path / "s.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(errors.SessionFileError) as ei:
        SessionResult.load(path)
    assert needle in ei.value.message and "\n" not in ei.value.message
    assert main(["report", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]


def test_v1_file_with_a_wrong_type_is_refused():
    v1 = fx.session()
    v1["threads"] = "none"
    with pytest.raises(errors.SessionFileError, match="threads"):
        SessionResult.from_json(v1)


# ---- the session's closing order ------------------------------------------------------------
class _ReportingSink:
    """Stands in for the OTLP exporter: reports counts and an error when it closes."""
    name = "fake-otlp"
    reports = True

    def __init__(self, order):
        self.order = order

    def on_window(self, window):
        pass

    def close(self, result):
        self.order.append(self.name)
        return SinkReport(otlp=OtlpExport(endpoint="http://127.0.0.1:1", spans=3), errors=["fake-otlp: 1 dropped"])


class _OrderedStream(StreamSink):
    def __init__(self, path, order):
        super().__init__(path)
        self.order = order

    def close(self, result):
        self.order.append(self.name)
        return super().close(result)


def _observation():
    ent = Entity(EntityKind.LOOP, "/tmp/app/app.py", "crunch", 3, pid=777)
    return Observation(0, 10_000_000, [Event(ent, "iter", EventKind.LOOP_ITER, 7, 0, 5, 0),
                                       Event(ent, "run", EventKind.SAMPLE_RUN, 7, 0, 4, 40)])


def test_stream_closing_record_is_complete(tmp_path):
    """attach's order: finish, complete the result (python, attach block), then close the sinks:
    the exporter's report is in the result before the --stream file writes its closing record."""
    order: list[str] = []
    path = tmp_path / "s.jsonl"
    stream = _OrderedStream(path, order)
    s = Session(ListSource([_observation()], name="attach"), [stream, _ReportingSink(order)], window_s=0.01,
                command=["python", "app.py"], pid=777, python="")
    s.start()
    result = s.finish(None)
    assert result.python == "" and result.entities and result.entities[0].pid == 777
    result.main.python = "3.11.4"
    result.attach = AttachInfo(samples=5, rate_hz=100.0)
    s.close_sinks(result)
    assert order == ["fake-otlp", "stream"]               # the reporting sink first
    last = json.loads(path.read_text().splitlines()[-1])
    assert last["type"] == "session" and last["schema"] == SCHEMA
    assert last["python"] == "3.11.4" and last["processes"][0]["python"] == "3.11.4"
    assert last["attach"]["samples"] == 5 and last["export"]["otlp"]["spans"] == 3
    assert "fake-otlp: 1 dropped" in last["errors"] and "fake-otlp: 1 dropped" in result.errors
    assert last["entities"] == len(result.entities)


def test_entity_scores_are_set_when_built_and_decisions_leave_records_alone():
    s = Session(ListSource([_observation()], name="attach"), [], window_s=0.01, command=["app.py"])
    s.start()
    r = s.stop(0)
    (e,) = r.entities
    assert e.scores is not None and e.slcp is not None and e.slcp.step > 0
    before = e.to_json()
    from gyroscope.agent.actuators import Context, decide
    decide(r.entities, Context(duration_s=r.duration_s, threads=1, samples=4))
    assert e.to_json() == before


# ---- renderers ----------------------------------------------------------------------------------
def test_every_renderer_on_a_saved_session(tmp_path):
    path = tmp_path / "s.json"
    fx.model().save(path)
    session = SessionResult.load(path)
    assert set(RENDERERS) >= {"summary", "html", "json"}
    for name in RENDERERS:
        out = renderer_for(name).render(session)
        assert out, name
        text = out.decode("latin-1") if isinstance(out, bytes) else out
        assert "crunch" in text, name
    assert SessionResult.from_json(json.loads(JsonRenderer().render(session))) == session
    assert "Top waits" in SummaryRenderer().render(session)
    assert 'id="gyroscope-data"' in HtmlRenderer().render(session)


def test_renderer_chosen_by_name_or_extension():
    assert isinstance(renderer_for(path="out.HTML"), HtmlRenderer)
    assert isinstance(renderer_for(path="out.json"), JsonRenderer)
    assert isinstance(renderer_for(path="out.txt"), SummaryRenderer)
    assert isinstance(renderer_for(), SummaryRenderer)
    assert isinstance(renderer_for("json", "out.html"), JsonRenderer)    # the name wins
    with pytest.raises(errors.UsageError, match="unknown renderer 'pdf'"):
        renderer_for("pdf")
    with pytest.raises(errors.UsageError, match="extension"):
        renderer_for(path="out.pdf")


def test_report_command_writes_each_format(tmp_path, capsys):
    src = tmp_path / "s.json"
    src.write_text(json.dumps(fx.session()))                      # a v1 file
    assert main(["report", str(src), "-o", str(tmp_path / "r.json")]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["schema"] == SCHEMA
    assert main(["report", str(src), "-o", str(tmp_path / "r.html")]) == 0
    assert (tmp_path / "r.html").read_text().startswith("<!DOCTYPE html>")
    assert main(["report", str(src), "-r", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["processes"][0]["pid"] == 4242
    assert main(["report", str(src), "-o", str(tmp_path / "r.pdf")]) == 2
    assert "extension" in capsys.readouterr().err


# ---- the error tree ------------------------------------------------------------------------------
@pytest.mark.parametrize("cls,code", [
    (errors.NoSuchProcess, 3), (errors.PermissionDenied, 4), (errors.NotPython, 5),
    (errors.PySpyNotFound, 6), (errors.UnsupportedPython, 7), (errors.PySpyFailed, 8),
    (errors.UsageError, 2), (errors.SessionFileError, 2), (errors.OutputError, 2),
    (errors.ProgramNotFound, 1), (errors.GyroscopeError, 2),
])
def test_exit_codes_are_mapped_in_the_cli(cls, code):
    e = cls("x")
    assert exit_code_for(e) == code == e.exit_code
    assert isinstance(e, errors.GyroscopeError)


def test_legacy_attach_error_builds_the_subclass():
    from gyroscope.bridges import pyspy
    for code in range(3, 9):
        e = pyspy.AttachError("msg", code)
        assert type(e) is not errors.AttachError and isinstance(e, errors.AttachError)
        assert e.exit_code == code and e.message == "msg"
        assert EXIT_CODES[type(e)] == code


def test_v2_without_processes_takes_the_top_level_copy():
    doc = fx.model().to_json()
    doc.pop("processes")
    s = SessionResult.from_json(doc)
    assert (s.pid, s.python, s.exit_code, s.command) == (4242, "3.12.1", 0, doc["command"])


def test_every_field_is_documented_in_its_class():
    import dataclasses

    from gyroscope.agent import model
    classes = [c for c in vars(model).values()
               if isinstance(c, type) and issubclass(c, model._Record) and c is not model._Record]
    assert len(classes) >= 15
    for cls in classes:
        doc = cls.__doc__ or ""
        missing = [f.name for f in dataclasses.fields(cls) if f.name != "extra" and f.name not in doc]
        assert not missing, f"{cls.__name__}: {missing} not documented"


# ---- the program's Actions (CoherenceExecutor lanes shipped by schedulers/live.py) ---------------
def _lane(routed: int, tasks: list[str], t_unix: float) -> dict:
    return {"action": "route_to_lane", "entity": {"kind": "lock", "file": "/tmp/app/app.py",
                                                  "function": "write_shared", "line": 12, "detail": "lock"},
            "limit": 1, "workers": 4, "tasks": tasks, "routed": routed, "executor": 1, "decision_version": 2,
            "reason": "mitigate_contention on lock write_shared (/tmp/app/app.py:12)", "t_s": 0.5,
            "t_unix": t_unix}


def test_program_actions_become_one_action_per_lane_with_the_last_counts(tmp_path):
    """Observation.actions carry (pid, index, dict) each window the program's copy changed; the
    session keeps the latest copy of each lane and turns it into a typed Action."""
    import time as _time
    t0 = _time.time()
    first = Observation(0, 10, actions=[(4242, 0, _lane(3, ["write_shared (/tmp/app/app.py:10)"], t0 + 1.0))])
    later = Observation(10, 20, actions=[(4242, 0, _lane(40, ["write_shared (/tmp/app/app.py:10)", "other"], t0 + 1.0)),
                                         (4242, 1, {"action": "route_to_lane", "entity": "not a dict"})])
    s = Session(ListSource([first, later]), [], window_s=0.01, command=["app.py"])
    s.start()
    _time.sleep(0.1)
    r = s.stop(0)
    (a,) = [a for a in r.actions if a.action == "route_to_lane"]
    assert a.pid == 4242 and a.thread == 0 and a.mechanism == "executor_lane" and a.ok
    assert (a.from_, a.to) == (4, 1) and "40 tasks routed" in a.reason
    assert a.lane is not None and a.lane.routed == 40 and a.lane.tasks[-1] == "other"
    assert a.lane.entity.function == "write_shared" and a.lane.entity.line == 12 and a.lane.limit == 1
    assert 0.5 < a.t_s < 1.5                                    # seconds since the session started
    assert any("program action" in e for e in r.errors)        # the malformed one: one line, no crash
    path = tmp_path / "s.json"
    r.save(path)
    back = SessionResult.load(path)
    assert back.actions == r.actions
    doc = json.loads(path.read_text())
    (j,) = [x for x in doc["actions"] if x["action"] == "route_to_lane"]
    assert j["lane"]["entity"]["kind"] == "lock" and j["lane"]["routed"] == 40
