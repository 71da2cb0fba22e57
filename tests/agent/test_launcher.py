"""agent/launcher.c, the native `gyroscope` command: it starts the program before gyroscope's own
python, and gyroscope's python adopts that process (agent/launch.py adopt) or makes it leave."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from gyroscope.agent import launch

SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(launch.__file__))))   # holds gyroscope/
LAUNCHER = Path(__file__).resolve().parents[2] / "agent" / "launcher.c"

# gyroscope's entry as .ci/setup writes it, plus one line on stderr: did the launcher start the program?
ENTRY = """\
import os, sys
sys.path.append({src!r})
os.write(2, b"launched %d\\n" % ("GYROSCOPE_LAUNCHED" in os.environ))
from gyroscope.agent.cli import entry
entry(site_later=True)
"""

PROBE = "import sys, os\nprint('ran', sys.argv, os.environ.get('GYROSCOPE_LAUNCHED'), os.environ.get('PYTHONPATH'))\n"


@pytest.fixture(scope="module")
def native(tmp_path_factory) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler: .ci/setup keeps the script as the command")
    d = tmp_path_factory.mktemp("launcher")
    entry = d / "entry.py"
    entry.write_text(ENTRY.format(src=SRC))
    (d / "launcher_config.h").write_text(launch.c_header(str(entry)))
    subprocess.run([cc, "-O2", "-Wall", "-Werror", f"-I{d}", "-o", str(d / "gyroscope"), str(LAUNCHER)], check=True)
    return d / "gyroscope"


def _via_launcher(native: Path, tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, str]:
    """The run, with the entry's first stderr line ("launched 0/1") taken off its stderr."""
    p = subprocess.run([str(native), *args], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    first, _, rest = p.stderr.partition("\n")
    return subprocess.CompletedProcess(p.args, p.returncode, p.stdout, rest), first


@pytest.mark.parametrize("options", [["-q"], ["-q", "--json=o.json"], ["--quiet", "--window", "0.5", "--no-sampling"]])
def test_the_launcher_starts_the_program_that_python_would(native, tmp_path, options):
    """What the program sees (argv, a `--` kept, its own PYTHONPATH, no launcher variable) is
    python's; and the launcher, not gyroscope's python, started it."""
    (tmp_path / "probe.py").write_text(PROBE)
    args = ["probe.py", "a", "--", "-x"]
    want = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    got, said = _via_launcher(native, tmp_path, "run", *options, *args)
    assert said == "launched 1"
    assert (got.returncode, got.stdout, got.stderr) == (want.returncode, want.stdout, want.stderr)


def test_the_launcher_starts_a_module(native, tmp_path):
    (tmp_path / "probe_mod.py").write_text(PROBE)
    want = subprocess.run([sys.executable, "-m", "probe_mod", "z"], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path)
    got, said = _via_launcher(native, tmp_path, "run", "-q", "-m", "probe_mod", "z")
    assert said == "launched 1"
    assert (got.returncode, got.stdout) == (want.returncode, want.stdout)


@pytest.mark.parametrize("args", [
    ["run", "-q", "--js", "o.json", "probe.py"],      # abbreviated: gyroscope's python reads it
    ["run", "--quiet", "--window", "-1", "probe.py"],   # a value like an option: argparse's to refuse
    ["run", "-q"],                                   # nothing to run
    ["--version"], ["attach", "--help"],
])
def test_what_the_launcher_cannot_read_goes_to_gyroscope_untouched(native, tmp_path, args):
    (tmp_path / "probe.py").write_text(PROBE)
    got, said = _via_launcher(native, tmp_path, *args)
    assert said == "launched 0"
    via_python = subprocess.run([sys.executable, "-m", "gyroscope.agent.cli", *args], capture_output=True, text=True,
                                timeout=60, cwd=tmp_path)
    assert (got.returncode, got.stdout) == (via_python.returncode, via_python.stdout)


def test_a_refused_option_after_the_launch_runs_nothing(native, tmp_path):
    """Started by the launcher, then refused by gyroscope (an output over the script): the
    program leaves at its gate, silently, and is reaped."""
    (tmp_path / "probe.py").write_text(PROBE)
    got, said = _via_launcher(native, tmp_path, "run", "-q", "--json", "probe.py", "probe.py")
    assert said == "launched 1"
    assert got.returncode == 2 and "ran" not in got.stdout
    assert got.stderr.count("\n") == 1 and "refusing to overwrite" in got.stderr


@pytest.mark.parametrize("closed", ["1", "0 1 2"])
def test_a_standard_descriptor_closed_for_the_launcher_is_closed_for_the_program(native, tmp_path, closed):
    (tmp_path / "fds.py").write_text("import sys\nf = open(sys.argv[1], 'w')\n"
                                     "f.write(repr((sys.stdin is None, sys.stdout is None, f.fileno())))\n")
    redirections = " ".join(f"{fd}>&-" if fd != "0" else "0<&-" for fd in closed.split())
    seen = []
    for cmd in (f"{sys.executable} fds.py", f"{native} run -q fds.py"):
        out = tmp_path / "seen.txt"
        p = subprocess.run(["sh", "-c", f"exec {redirections}; exec {cmd} {out}"], capture_output=True, text=True,
                           timeout=60, cwd=tmp_path)
        seen.append((p.returncode, out.read_text()))
    assert seen[0] == seen[1]


def test_a_launch_gyroscope_reads_otherwise_is_made_to_leave(tmp_path, monkeypatch):
    """adopt: a process started with other arguments than gyroscope's reading never runs."""
    la = launch.Launch([str(tmp_path / "probe.py")])
    monkeypatch.setenv("GYROSCOPE_LAUNCHED", f"{la.pid},{la._gate},{la.t0_ns},1,0")
    assert launch.adopt(["other.py"], ["run", str(tmp_path / "probe.py")]) is None
    assert "GYROSCOPE_LAUNCHED" not in os.environ
    with pytest.raises(ChildProcessError):
        os.waitpid(la.pid, os.WNOHANG)   # reaped


def test_the_header_refuses_a_path_c_would_read_otherwise():
    with pytest.raises(ValueError):
        launch.c_header('/tmp/a"b/entry.py')
