import subprocess
import sys

from gyroscope.agent import __version__
from gyroscope.agent.cli import main


def test_version(capsys):
    try:
        main(["--version"])
    except SystemExit as e:
        assert e.code == 0
    assert __version__ in capsys.readouterr().out


def test_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "gyroscope.agent.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for name in ("run", "attach", "eval", "report", "replay"):
        assert name in out.stdout


def test_no_command_is_usage_error(capsys):
    assert main([]) == 2
