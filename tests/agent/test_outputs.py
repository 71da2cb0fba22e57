"""agent/outputs.py: every file gyroscope writes never destroys what is at its path.

Unit tests of the writer, then the same rules through `gyroscope run` as a user types it:
a device stays a device, a symlink stays a link and its target gets the content, a FIFO is
written, the umask is respected, relative paths resolve against the start directory, and an
output that is the script, an input or another output is refused before the program runs.
"""
from __future__ import annotations

import argparse
import errno
import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from gyroscope.agent import outputs
from gyroscope.agent.errors import GyroscopeError

from tests.conftest import one_line_error

PY = sys.executable
PROJECT = Path(__file__).resolve().parents[2]


def gyro(*args: str, cwd: Path, umask: int | None = None, stdout=subprocess.PIPE,
         timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(PROJECT)   # `python -m gyroscope...` from any cwd, as the editable install does
    for k in [k for k in env if k.startswith("OTEL_")]:
        del env[k]
    return subprocess.run([PY, "-m", "gyroscope.agent.cli", *args], cwd=cwd, env=env, stdout=stdout,
                          stderr=subprocess.PIPE, text=True, timeout=timeout,
                          preexec_fn=(lambda: os.umask(umask)) if umask is not None else None)


@pytest.fixture()
def app(tmp_path: Path) -> Path:
    script = tmp_path / "app.py"
    script.write_text("print('hi')\n")
    return script


def null_device(tmp_path: Path) -> Path:
    """A character device with /dev/null's numbers, made in tmp_path (we are root in CI)."""
    path = tmp_path / "null"
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("mknod needs root / CAP_MKNOD")
    return path


def read_fifo(path: Path, out: list[bytes]) -> threading.Thread:
    def run() -> None:
        with open(path, "rb") as f:   # blocks until the writer opens it
            out.append(f.read())
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


# ---- the writer -------------------------------------------------------------------------------
def test_regular_file_is_replaced_atomically_and_new_files_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        path = tmp_path / "out" / "r.json"      # the missing folder is created
        outputs.write_json(path, {"a": 1})
        assert json.loads(path.read_text()) == {"a": 1}
        assert stat.S_IMODE(path.stat().st_mode) == 0o640      # 0666 & ~027, not mkstemp's 0600
        path.chmod(0o604)
        ino = path.stat().st_ino
        outputs.write_text(path, "two\n")
        assert path.read_text() == "two\n"
        assert path.stat().st_ino != ino                         # renamed over: atomic
        assert stat.S_IMODE(path.stat().st_mode) == 0o604        # a replaced file keeps its mode
        assert sorted(p.name for p in path.parent.iterdir()) == ["r.json"]   # no temporary left
    finally:
        os.umask(old)


def test_symlink_target_is_written_and_link_stays_a_link(tmp_path):
    target = tmp_path / "real" / "t.json"
    target.parent.mkdir()
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    outputs.write_json(link, {"x": 2})
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert json.loads(target.read_text()) == {"x": 2}
    # a dangling link: its target is created, the link kept
    dangling = tmp_path / "dangling.json"
    dangling.symlink_to(tmp_path / "real" / "new.json")
    outputs.write_text(dangling, "made\n")
    assert dangling.is_symlink() and (tmp_path / "real" / "new.json").read_text() == "made\n"


def test_device_is_written_directly_never_replaced(tmp_path):
    dev = null_device(tmp_path)
    outputs.write_json(dev, {"gone": True})
    assert stat.S_ISCHR(os.lstat(dev).st_mode)
    with outputs.open_stream(dev) as f:
        f.write("x\n")
    assert stat.S_ISCHR(os.lstat(dev).st_mode)


def test_fifo_is_written_directly(tmp_path):
    fifo = tmp_path / "f"
    os.mkfifo(fifo)
    got: list[bytes] = []
    t = read_fifo(fifo, got)
    outputs.write_text(fifo, "through the pipe\n")
    t.join(10)
    assert got == [b"through the pipe\n"] and stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_hard_linked_file_is_rewritten_in_place(tmp_path):
    a = tmp_path / "a.json"
    a.write_text("old")
    b = tmp_path / "b.json"
    os.link(a, b)
    outputs.write_text(a, "new\n")
    assert b.read_text() == "new\n" and a.stat().st_ino == b.stat().st_ino


def test_directory_and_file_as_folder_are_errors_naming_the_users_path(tmp_path):
    with pytest.raises(IsADirectoryError) as e:
        outputs.write_text(tmp_path, "x")
    assert e.value.filename == str(tmp_path)
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError) as e:
        outputs.write_text(tmp_path / "file" / "x.json", "x")
    assert e.value.filename == str(tmp_path / "file" / "x.json")


def test_a_failed_rename_names_the_output_not_the_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "r.json"

    def fail(src, dst):
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), src, dst)
    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError) as e:
        outputs.write_text(path, "x")
    assert e.value.filename == str(path) and ".tmp" not in str(e.value)
    assert list(tmp_path.iterdir()) == []     # the temporary file is gone


def test_resolve_outputs_makes_paths_absolute_against_the_start_dir(tmp_path):
    args = argparse.Namespace(json="a.json", stream=None, trace="sub/t.json", ledger=str(tmp_path / "abs.l"))
    got = outputs.resolve_outputs(args, start_dir=str(tmp_path))
    assert args.json == str(tmp_path / "a.json") and args.trace == str(tmp_path / "sub" / "t.json")
    assert got == {"--json": args.json, "--trace": args.trace, "--ledger": str(tmp_path / "abs.l")}


def test_check_outputs_refuses_inputs_duplicates_and_bad_ledgers(tmp_path, app):
    link = tmp_path / "link.py"
    link.symlink_to(app)
    with pytest.raises(GyroscopeError, match="is the script"):
        outputs.check_outputs({"--json": str(link)}, [str(app)], ["the script"])
    with pytest.raises(GyroscopeError, match="--json and --trace are the same file"):
        outputs.check_outputs({"--json": str(tmp_path / "o"), "--trace": str(tmp_path / "o")}, [str(app)])
    dev = null_device(tmp_path)
    outputs.check_outputs({"--json": str(dev), "--trace": str(dev)}, [str(app)])   # /dev/null twice is fine
    with pytest.raises(GyroscopeError, match="no such directory"):
        outputs.check_outputs({"--stream": str(tmp_path / "no" / "s")}, [])
    outputs.check_outputs({"--json": str(tmp_path / "no" / "s")}, [])   # whole files create their folder
    (tmp_path / "notes").write_text("mine")
    with pytest.raises(GyroscopeError, match="not a gyroscope ledger"):
        outputs.check_outputs({"--ledger": str(tmp_path / "notes")}, [])
    with pytest.raises(GyroscopeError, match="names a directory"):
        outputs.check_outputs({"--json": str(tmp_path / "newdir") + "/"}, [])
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(GyroscopeError, match="symbolic links"):
        outputs.check_outputs({"--json": str(loop)}, [])
    with pytest.raises(OSError):
        outputs.write_text(loop, "x")
    assert loop.is_symlink()     # a loop is reported, never renamed over


def test_check_outputs_refuses_a_folder_it_may_not_write(tmp_path, monkeypatch):
    """A new file needs its nearest existing folder writable, an existing one its folder or itself
    (as root, os.access grants all: the rule is checked with access() answering as for a user)."""
    locked, mine = tmp_path / "locked", tmp_path / "locked" / "mine.json"
    locked.mkdir()
    mine.write_text("{}")
    real_access = os.access
    monkeypatch.setattr(outputs.os, "access",
                        lambda p, mode: False if os.fspath(p) == str(locked) else real_access(p, mode))
    with pytest.raises(GyroscopeError, match=r"permission denied: .*locked$"):
        outputs.check_outputs({"--json": str(locked / "new.json")}, [])
    with pytest.raises(GyroscopeError, match=r"permission denied: .*locked$"):
        outputs.check_outputs({"--trace": str(locked / "sub" / "t.json")}, [])
    outputs.check_outputs({"--json": str(mine)}, [])   # an existing writable file: rewritten in place
    monkeypatch.setattr(outputs.os, "access", lambda p, mode: os.fspath(p) != str(mine))
    outputs.check_outputs({"--json": str(mine)}, [])   # a read-only file in a writable folder: replaced
    monkeypatch.setattr(outputs.os, "access", lambda p, mode: False)
    with pytest.raises(GyroscopeError, match="permission denied$"):
        outputs.check_outputs({"--json": str(mine)}, [])


# ---- through `gyroscope run`, as a user types it ---------------------------------------------
def test_run_json_to_a_device_leaves_it_a_device(tmp_path, app):
    dev = null_device(tmp_path)
    p = gyro("run", "-q", "--json", str(dev), "--trace", str(dev), "--stream", str(dev), "--ledger", str(dev),
             str(app), cwd=tmp_path)
    assert p.returncode == 0 and p.stderr == "", p.stderr    # -q: any sink failure would be printed
    assert stat.S_ISCHR(os.lstat(dev).st_mode)


def test_run_outputs_through_symlinks(tmp_path, app):
    (tmp_path / "real").mkdir()
    for name in ("s.json", "t.json", "x.jsonl"):
        (tmp_path / name).symlink_to(tmp_path / "real" / name)
    p = gyro("run", "-q", "--json", "s.json", "--trace", "t.json", "--stream", "x.jsonl", str(app), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    for name in ("s.json", "t.json", "x.jsonl"):
        assert (tmp_path / name).is_symlink()
    assert json.loads((tmp_path / "real" / "s.json").read_text())["schema"] == "gyroscope.session/2"
    assert "traceEvents" in json.loads((tmp_path / "real" / "t.json").read_text())
    assert json.loads((tmp_path / "real" / "x.jsonl").read_text().splitlines()[-1])["type"] == "session"


def test_run_json_into_a_fifo(tmp_path, app):
    fifo = tmp_path / "f"
    os.mkfifo(fifo)
    got: list[bytes] = []
    t = read_fifo(fifo, got)
    p = gyro("run", "-q", "--json", str(fifo), str(app), cwd=tmp_path)
    t.join(10)
    assert p.returncode == 0, p.stderr
    assert json.loads(got[0])["schema"] == "gyroscope.session/2" and stat.S_ISFIFO(os.lstat(fifo).st_mode)


@pytest.mark.parametrize("name", ["/dev/stdout", "/dev/fd/1"])
def test_run_json_to_dev_stdout_appends_after_the_programs_output(tmp_path, app, name):
    if not (os.path.islink("/dev/stdout") if name == "/dev/stdout" else os.path.realpath("/dev/fd").startswith("/proc/")):
        # the machine is shared: a gyroscope without outputs.py run as root replaces /dev/stdout
        pytest.skip(f"{name} is not a link to a descriptor on this machine")
    out = tmp_path / "out.txt"
    with open(out, "w") as f:
        p = gyro("run", "-q", "--json", name, str(app), cwd=tmp_path, stdout=f)
    assert p.returncode == 0, p.stderr
    text = out.read_text()
    assert text.startswith("hi\n") and json.loads(text[3:])["schema"] == "gyroscope.session/2"
    p = gyro("run", "-q", "--json", name, str(app), cwd=tmp_path)   # a pipe
    assert p.stdout.startswith("hi\n") and json.loads(p.stdout[3:])["exit_code"] == 0
    assert os.path.islink("/dev/stdout")


def test_run_files_respect_the_umask(tmp_path, app):
    p = gyro("run", "-q", "--json", "s.json", "--trace", "t.json", "--stream", "x.jsonl", "--ledger", "k.ledger",
             str(app), cwd=tmp_path, umask=0o027)
    assert p.returncode == 0, p.stderr
    for name in ("s.json", "t.json", "x.jsonl", "k.ledger"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o640, name


def test_run_relative_outputs_resolve_against_the_start_directory(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    script = tmp_path / "mover.py"
    script.write_text("import os\nos.chdir(os.path.join(os.path.dirname(__file__), 'elsewhere'))\nprint('moved')\n")
    start = tmp_path / "start"
    start.mkdir()
    p = gyro("run", "-q", "--json", "s.json", "--trace", "t.json", "--stream", "x.jsonl", "--ledger", "k.ledger",
             str(script), cwd=start)
    assert p.returncode == 0, p.stderr
    assert sorted(x.name for x in start.iterdir()) == ["k.ledger", "s.json", "t.json", "x.jsonl"]
    assert list((tmp_path / "elsewhere").iterdir()) == []


@pytest.mark.parametrize("option", ["--json", "--stream", "--trace", "--ledger"])
def test_run_refuses_the_script_as_an_output(tmp_path, app, option):
    before = app.read_bytes()
    p = gyro("run", option, "app.py", "app.py", cwd=tmp_path)
    one_line_error(p, 2, "is the script", "refusing")
    assert app.read_bytes() == before and "hi" not in p.stdout   # nothing ran, nothing written


def test_run_refuses_the_module_file_and_two_outputs_on_one_file(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "mod.py").write_text("print('mod ran')\n")
    p = gyro("run", "--json", "pkg/mod.py", "-m", "pkg.mod", cwd=tmp_path)
    one_line_error(p, 2, "is the module")
    assert "mod ran" not in p.stdout
    p = gyro("run", "--json", "o.json", "--stream", "./o.json", "-m", "pkg.mod", cwd=tmp_path)
    one_line_error(p, 2, "same file")
    assert not (tmp_path / "o.json").exists()
