"""`gyroscope report SESSION.json [--html OUT.html]`."""
from __future__ import annotations

import argparse
import sys

from gyroscope.agent.errors import GyroscopeError

DESCRIPTION = """\
Render a session result written by `gyroscope run --json` or `gyroscope attach --json`.

  gyroscope report session.json                 print the terminal summary
  gyroscope report session.json --html out.html write one self-contained HTML file (works offline)
  gyroscope report session.json --pprof p.pb.gz  write the session's sampled stacks (also --speedscope
                                                 PATH, --collapsed PATH; several at once are fine)

Exit codes: 0 ok; 2 the session file is missing, unreadable, not a gyroscope session or has
fields of the wrong type, or an output file cannot be written (or is the session file).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("session", metavar="SESSION.json", help="a session result (schema gyroscope.session/1)")
    parser.add_argument("--html", metavar="OUT.html", default=None, help="write an HTML report instead of printing")
    from gyroscope.agent.sinks.factory import add_profile_arguments
    add_profile_arguments(parser)


def main(args: argparse.Namespace) -> int:
    from gyroscope.agent.outputs import check_outputs
    from gyroscope.agent.result import ResultError, load_result

    if args.html:
        check_outputs({"--html": args.html}, [args.session], ["the session file"])
    try:
        result = load_result(args.session)
    except ResultError as e:
        raise GyroscopeError(str(e)) from None
    from gyroscope.agent.sinks.factory import profile_paths

    paths = profile_paths(args)
    if paths:
        check_outputs({f"--{k}": v for k, v in paths.items()}, [args.session],
                      ["the session file"])
        from gyroscope.agent.profiles.sink import write_profile_files

        try:
            written = write_profile_files(result, paths)
        except OSError as e:
            raise GyroscopeError(f"cannot write {e.filename}: {e.strerror or e}") from None
        except ValueError as e:   # a profile of another format
            raise GyroscopeError(f"{args.session}: {e}") from None
        for w in written:
            print(f"gyroscope: wrote {w}", file=sys.stderr)
    try:
        if args.html:
            from gyroscope.agent.report_html import render_html

            write_text_atomic(args.html, render_html(result))
            print(f"gyroscope: wrote {args.html}", file=sys.stderr)
            return 0
        if paths:
            return 0
        from gyroscope.agent.summary import print_summary

        print_summary(result, sys.stdout)
    except (TypeError, ValueError, KeyError, AttributeError, IndexError) as e:
        # session_check catches the wrong types it knows of; anything it misses is still one line
        raise GyroscopeError(f"{args.session} cannot be rendered: a session field has an unexpected value "
                             f"({type(e).__name__}: {e})") from None
    return 0


def write_text_atomic(path: str, text: str) -> None:
    from gyroscope.agent import result

    try:
        result.write_text_atomic(path, text)
    except OSError as e:
        raise GyroscopeError(f"cannot write {path}: {e.strerror or e}") from None
