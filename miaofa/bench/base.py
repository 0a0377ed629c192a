"""What every `miaofa bench` module uses: the one error a run stops on, the repository, the consoles."""

import sys
from pathlib import Path

from rich.console import Console

out = Console(width=None if sys.stdout.isatty() else 120)  # the result table; wider in a log file
err = Console(stderr=True, width=None if sys.stderr.isatty() else 120)  # progress and warnings
REPO = Path(__file__).resolve().parents[2]


class BenchError(Exception):
    """The run cannot go on (no stack, an order refused during warm-up, …): one line for the user."""
