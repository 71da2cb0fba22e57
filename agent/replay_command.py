"""`gyroscope replay LEDGER [--verify SNAPSHOT] [--snapshot OUT] [--base SNAPSHOT]` (cyext.ledger)."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from gyroscope.agent.errors import GyroscopeError, InputError

DESCRIPTION = """\
Replay a kernel ingest ledger (written with `gyroscope run --ledger PATH`) into a fresh cell
pool and print what it holds.

  gyroscope replay session.ledger                        summary: records, cells, truncated tail
  gyroscope replay session.ledger --verify state.snap    check that the replay equals a snapshot
  gyroscope replay session.ledger --snapshot out.snap    write the replayed state as a snapshot

Exit codes: 0 ok; 1 --verify found a mismatch; 2 missing, corrupt or foreign input (a bad
magic, version, law hash or header, a record that cannot be replayed), or --snapshot cannot be
written; 3 the ledger has a truncated tail (its last record was cut off, e.g. by a crash): the
valid prefix was still replayed, verified and written, and the summary says how many bytes
were ignored.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ledger", metavar="LEDGER", help="a ledger file (magic GYRL)")
    parser.add_argument("--verify", metavar="SNAPSHOT", default=None,
                        help="compare the replayed pool with this snapshot, array by array")
    parser.add_argument("--snapshot", metavar="OUT", default=None, help="write the replayed pool as a snapshot")
    parser.add_argument("--base", metavar="SNAPSHOT", default=None,
                        help="the snapshot the ledger starts from (a ledger attached to a restored pool)")


EXIT_TRUNCATED = 3


def main(args: argparse.Namespace) -> int:
    from gyroscope.agent.outputs import check_outputs
    from gyroscope.cyext import ledger as lg
    from gyroscope.cyext.errors import KernelError, LedgerError, SnapshotError

    out = sys.stdout
    if args.snapshot:
        check_outputs({"--snapshot": args.snapshot}, [args.ledger, args.verify, args.base],
                      ["the ledger", "the --verify snapshot", "the --base snapshot"])
    try:
        header, ids, _words, truncated = lg.read_ledger_full(args.ledger)
        control = int((ids & lg.CONTROL).astype(bool).sum())
        pool = lg.replay(args.ledger, base=args.base)
        try:
            active = len(pool.active_cells())
            capacity = pool.capacity
            print(f"ledger {args.ledger}: {len(ids)} records ({len(ids) - control} words, {control} control), "
                  f"capacity {capacity}, profile {lg.law.PROFILE_NAMES[header.profile_id]}, {active} cells allocated after replay",
                  file=out)
            if truncated:
                print(f"ledger {args.ledger}: truncated tail: {truncated} trailing bytes ignored "
                      f"(the last record was cut off; the valid prefix was replayed)", file=out)
            if args.snapshot:
                _write_snapshot(pool, args.snapshot)
                print(f"wrote snapshot {args.snapshot}", file=out)
        finally:
            pool.close()
        if args.verify:
            res = lg.verify(args.ledger, args.verify, base=args.base)
            if not res and res.message.startswith("snapshot cannot be read"):
                raise InputError(f"{args.verify}: {res.message}")
            if not res:
                print(f"gyroscope: verify failed: {res.message}", file=sys.stderr)
                return 1
            print(f"verified: {res.message}", file=out)
    except FileNotFoundError as e:
        raise InputError(f"no such file: {e.filename}") from None
    except (LedgerError, SnapshotError, KernelError) as e:
        raise InputError(str(e)) from None
    except OSError as e:
        raise GyroscopeError(f"{getattr(e, 'filename', '') or args.ledger}: {e.strerror or e}") from None
    return EXIT_TRUNCATED if truncated else 0


def _write_snapshot(pool: Any, path: str) -> None:
    """The replayed pool as a GYRG snapshot, through agent/outputs.py (a symlink is written
    through, a device is not replaced, the umask is respected; errors name `path`)."""
    from gyroscope.agent.outputs import write_bytes
    from gyroscope.cyext import persist

    data = persist.encode(pool.export_state(), capacity=pool.capacity, profile_id=pool.profile_id,
                          flags=0, created_unix_ns=getattr(pool, "created_unix_ns", 0))
    try:
        write_bytes(path, data)
    except OSError as e:
        raise GyroscopeError(f"cannot write {path}: {e.strerror or e}") from None
