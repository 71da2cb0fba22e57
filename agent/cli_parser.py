"""The argparse parser of the `gyroscope` command line (imported only once a command line needs
parsing: `gyroscope run` starts the program first, see agent/launch.py)."""
from __future__ import annotations

import argparse
import os
import sys


class Formatter(argparse.RawDescriptionHelpFormatter):
    """The help as written, at the terminal's width found without `shutil`: argparse imports it
    for that, and with the bz2, lzma and zlib it loads it is ~0.8 MiB of the watcher's RSS."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        if width is None:   # shutil.get_terminal_size's rule: $COLUMNS, the terminal, else 80
            try:
                width = int(os.environ.get("COLUMNS", "0")) or os.get_terminal_size(sys.__stdout__.fileno()).columns
            except (AttributeError, ValueError, OSError):
                width = 0
            width = (width or 80) - 2
        super().__init__(prog, indent_increment, max_help_position, width)


class Parser(argparse.ArgumentParser):
    """argparse, but a bad option is one line (argparse prints the whole usage block first), and
    its help is Formatter's."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")
