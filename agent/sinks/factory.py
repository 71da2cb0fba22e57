"""Build the sinks a user asked for on the command line (shared by `run` and `attach`)."""
from __future__ import annotations

from gyroscope.agent.errors import GyroscopeError

TYPE_CHECKING = False   # not argparse nor typing: `run` builds its sinks before the program starts
if TYPE_CHECKING:
    import argparse
    from typing import Any, TextIO

    from gyroscope.agent.sinks.base import Sink

SINK_HELP = """\
export: --otlp ENDPOINT (or the standard OTEL_EXPORTER_OTLP_* variables) sends traces, metrics
logs and profiles over OTLP/HTTP; --stream, --trace and --ledger write files; --pprof, --speedscope
and --collapsed write the sampled call stacks (also from a saved session: gyroscope report S.json --pprof X)."""


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
    add_profile_arguments(g)
    g.add_argument("--no-otlp-profiles", dest="no_otlp_profiles", action="store_true",
                   help="do not send the OTLP profiles signal (also OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT=none)")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")


def add_profile_arguments(g: argparse._ActionsContainer) -> None:
    """--pprof, --speedscope, --collapsed (run, attach and report)."""
    g.add_argument("--pprof", metavar="PATH", default=None,
                   help="write the sampled call stacks as a gzipped pprof profile (go tool pprof, Pyroscope, Parca)")
    g.add_argument("--speedscope", metavar="PATH", default=None,
                   help="write the sampled call stacks as a speedscope file, one profile per thread "
                        "(https://www.speedscope.app)")
    g.add_argument("--collapsed", metavar="PATH", default=None,
                   help="write folded stacks 'a;b;c count' (flamegraph.pl, inferno, speedscope)")


def profile_paths(args: argparse.Namespace) -> dict[str, str]:
    return {k: getattr(args, k) for k in ("pprof", "speedscope", "collapsed") if getattr(args, k, None)}


def check_sink_args(args: argparse.Namespace) -> dict[str, str | None]:
    """Refuse bad export options (GyroscopeError) without importing any exporter; return the OTLP
    signals asked for. `run` calls it before the program starts."""
    otlp = getattr(args, "otlp", None)
    if otlp is not None and not otlp.startswith(("http://", "https://")):
        raise GyroscopeError(f"--otlp needs an http:// or https:// endpoint, got {otlp!r}")
    from gyroscope.agent.sinks.otlp_env import PROTOCOL, requested_signals, unsupported_protocol
    signals = requested_signals(otlp)
    bad = unsupported_protocol(signals)
    if bad:
        raise GyroscopeError(f"{bad}: gyroscope exports OTLP over {PROTOCOL} only "
                             f"(unset it or set it to {PROTOCOL})")
    return signals


def build_sinks(args: argparse.Namespace, source: str, otlp_too: bool = True) -> list[Sink]:
    """The sinks to feed during the session, from parsed arguments. Bad paths -> GyroscopeError.
    With `otlp_too=False`, only the file sinks (light: `run` opens them before the program
    starts; build_otlp_sink adds the exporter afterwards)."""
    # everything that can be refused is checked before any file is opened
    check_sink_args(args)
    sinks: list[Sink] = []
    try:
        if getattr(args, "stream", None):
            from gyroscope.agent.sinks.files import StreamSink
            sinks.append(StreamSink(args.stream))
        if getattr(args, "trace", None):
            from gyroscope.agent.sinks.files import TraceSink
            sinks.append(TraceSink(args.trace))
        if profile_paths(args):
            from gyroscope.agent.profiles.sink import ProfileFilesSink
            sinks.append(ProfileFilesSink(profile_paths(args)))
    except OSError as e:
        _abort_all(sinks)
        raise GyroscopeError(f"cannot write {e.filename}: {e.strerror or e}") from None
    if otlp_too:
        try:
            sinks.extend(build_otlp_sink(args))
        except GyroscopeError:
            _abort_all(sinks)
            raise
    return sinks


def build_otlp_sink(args: argparse.Namespace) -> list[Sink]:
    """The OTLP exporter sink when export is asked for (by --otlp or OTEL_* variables), else []."""
    signals = check_sink_args(args)
    if not signals:
        return []
    from gyroscope.agent.sinks.otel import OtelSink
    try:
        return [OtelSink.create(getattr(args, "otlp", None), profiles=not getattr(args, "no_otlp_profiles", False),
                                profiles_per_cycle=bool(getattr(args, "continuous", False)))]
    except Exception as e:  # noqa: BLE001 - e.g. a malformed OTEL_* variable
        raise GyroscopeError(f"cannot set up OpenTelemetry export: {type(e).__name__}: {e}") from None


def make_session(session_class: Any, source: Any, sinks: list[Sink], **kw: Any) -> Any:
    """Build the Session; a ledger that cannot be opened (missing folder, a directory, a file
    that is not a GYRL ledger, /proc/version) becomes one line (GyroscopeError, exit 2) and the
    sinks are released. The caller stops its source."""
    from gyroscope.cyext.errors import KernelError, LedgerError
    try:
        return session_class(source, sinks, **kw)
    except (LedgerError, KernelError) as e:
        _abort_all(sinks)
        raise GyroscopeError(str(e)) from None
    except OSError as e:
        _abort_all(sinks)
        if not kw.get("ledger"):
            raise
        raise GyroscopeError(f"cannot open ledger {kw['ledger']}: {e.strerror or e}") from None


def _abort_all(sinks: list[Sink]) -> None:
    """Setup failed: release what the sinks hold without writing a session record or a file."""
    for s in sinks:
        try:
            abort = getattr(s, "abort", None)
            if abort is not None:
                abort()
        except Exception:  # noqa: BLE001
            pass


def sink_failures(result: Any) -> list[str]:
    """One line per failing sink or exporter, from the session's errors: "sink stream.on_window:
    OSError: ... (12 times)", "otlp export to ...: 3 items failed". What `-q` still prints: quiet
    hides the summary, never a lost export."""
    first: dict[str, str] = {}
    count: dict[str, int] = {}
    errors = result.get("errors") if isinstance(result, dict) else result.errors
    for e in errors or []:
        if not isinstance(e, str) or not e.startswith(("sink ", "otlp ", "cannot write ")):   # (a profile file)
            continue
        key = e.split(":", 1)[0]
        first.setdefault(key, e)
        count[key] = count.get(key, 0) + 1
    return [first[k] + (f" ({count[k]} times)" if count[k] > 1 else "") for k in first]


def print_sink_failures(result: Any, stream: TextIO) -> None:
    """Print sink_failures(result) as `gyroscope: error: ...` lines (used under -q)."""
    for line in sink_failures(result):
        try:
            print(f"gyroscope: error: {' '.join(line.split())}", file=stream)
        except Exception:  # noqa: BLE001 - a closed stderr must not break the exit path
            pass
