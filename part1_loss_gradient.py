"""Part 1: loss and gradient surfaces of one sigmoid neuron (handout questions 1.1-1.6).

PART1_BODY_PLACEHOLDER
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

# ---------------------------------------------------------------------------------------------
# Shared helpers. Parts 2 and 3 import these from here: the submission zip holds only the four
# part scripts, so code that several parts need lives in the earliest part that needs it.
# ---------------------------------------------------------------------------------------------


class InputError(Exception):
    """Bad input from the user (a flag or a data file). The message is one line naming it."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (`prog: error: ...`) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        raise InputError(message)


def run_main(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Run a script's `main`, turning InputError into one line on stderr and exit status 2."""
    prog = Path(sys.argv[0]).name if argv is None else "main"
    try:
        return main(argv)
    except InputError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; outputs written before stay whole", file=sys.stderr)
        return 130


def positive(kind: type = float) -> Callable[[str], Any]:
    """argparse type: a number of `kind` that is > 0 (and finite)."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {kind.__name__}") from None
        if not value > 0 or value == float("inf"):
            raise argparse.ArgumentTypeError(f"{text!r} must be a finite number > 0")
        return value

    parse.__name__ = f"positive {kind.__name__}"
    return parse


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write `path` through a temporary file in the same folder, then rename it into place.

    A crash or Ctrl-C mid-write leaves the previous file whole (os.replace is atomic on POSIX).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any) -> None:
    """Write `data` as deterministic JSON (sorted keys, fixed indent), atomically."""
    text = json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n"
    _atomic_write(path, lambda tmp: tmp.write_text(text))


def save_figure(fig: Any, path: Path) -> None:
    """Save a matplotlib figure atomically, without a timestamp (same data, same bytes), and close it."""
    import matplotlib.pyplot as plt

    _atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=150, metadata={"Software": None}))
    plt.close(fig)


def library_versions() -> dict[str, str]:
    """Versions of Python and the libraries that produce the numbers, for the results files."""
    import matplotlib
    import numpy
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "matplotlib": matplotlib.__version__,
    }


def use_headless_matplotlib() -> None:
    """Select the file-only Agg backend, so scripts run on machines without a display."""
    import matplotlib

    matplotlib.use("Agg")


# ---------------------------------------------------------------------------------------------
# PART1_SECTIONS_PLACEHOLDER
# ---------------------------------------------------------------------------------------------
