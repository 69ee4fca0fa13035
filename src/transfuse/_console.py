"""The rich console used by the CLI: wide enough for tables when output goes to a file or pipe."""
from __future__ import annotations

import sys

from rich.console import Console


def console() -> Console:
    # rich assumes 80 columns when stdout is not a terminal, which cuts tables off.
    return Console() if sys.stdout.isatty() else Console(width=160)
