"""`gyroscope report SESSION.json [-r RENDERER] [-o OUT]`: render a saved session."""
from __future__ import annotations

import argparse
import os
import sys

from gyroscope.agent.errors import InputError, OutputError, UsageError

DESCRIPTION = """\
Render a session result written by `gyroscope run --json` or `gyroscope attach --json`
(schema gyroscope.session/2; gyroscope.session/1 files are read too).

  gyroscope report session.json                   print the terminal summary
  gyroscope report session.json -o out.html       write one self-contained HTML file (works offline)
  gyroscope report session.json -r json           print the session as gyroscope.session/2 JSON
  gyroscope report session.json --html out.html   the same as -o out.html
  gyroscope report session.json --pprof p.pb.gz   write the session's sampled stacks (also --speedscope
                                                  PATH, --collapsed PATH; several at once are fine)

The renderer is --renderer NAME, else the extension of -o (.txt summary, .html html,
.json json), else the summary. Renderers: summary, html, json.

Exit codes: 0 ok; 2 the session file is missing, unreadable, not a gyroscope session or has
a field of the wrong type, an unknown renderer, or an output that cannot be written.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("session", metavar="SESSION.json", help="a session result (schema gyroscope.session/2 or /1)")
    parser.add_argument("-r", "--renderer", metavar="NAME", default=None,
                        help="summary, html or json (default: from the extension of -o, else summary)")
    parser.add_argument("-o", "--output", metavar="PATH", default=None,
                        help="write to PATH instead of printing")
    parser.add_argument("--html", metavar="OUT.html", default=None, help="write an HTML report to OUT.html")
    from gyroscope.agent.sinks.factory import add_profile_arguments
    add_profile_arguments(parser)


def main(args: argparse.Namespace) -> int:
    from gyroscope.agent.model import SessionResult
    from gyroscope.agent.outputs import check_outputs, resolve_outputs
    from gyroscope.agent.render import renderer_for
    from gyroscope.agent.sinks.factory import profile_paths

    if args.html and args.output:
        raise UsageError("give either --html or -o, not both")
    outputs = resolve_outputs(args)
    if args.output:
        outputs["-o"] = args.output = os.path.abspath(args.output)
    check_outputs(outputs, [args.session], ["the session file"])
    output = args.html or args.output
    paths = profile_paths(args)
    renderer = renderer_for("html" if args.html else args.renderer, output)
    session = SessionResult.load(args.session)
    if paths:
        from gyroscope.agent.profiles.sink import write_profile_files
        try:
            written = write_profile_files(session.to_json(), paths)
        except OSError as e:
            raise OutputError(f"cannot write {e.filename}: {e.strerror or e}") from None
        except ValueError as e:   # a profile of another format
            raise InputError(f"{args.session}: {e}") from None
        for w in written:
            print(f"gyroscope: wrote {w}", file=sys.stderr)
        if output is None and args.renderer is None:
            return 0
    out = renderer.render(session)
    if output is None:
        if isinstance(out, bytes):
            if sys.stdout.isatty():
                raise UsageError(f"the {renderer.name} renderer writes binary data: give -o PATH")
            sys.stdout.buffer.write(out)
        else:
            sys.stdout.write(out)
        return 0
    _write(output, out)
    print(f"gyroscope: wrote {output}", file=sys.stderr)
    return 0


def _write(path: str, data: str | bytes) -> None:
    from gyroscope.agent import result

    try:
        if isinstance(data, bytes):
            result.write_bytes_atomic(path, data)
        else:
            result.write_text_atomic(path, data)
    except OSError as e:
        raise OutputError(f"cannot write {os.fspath(path)}: {e.strerror or e}") from None
