"""User-facing errors: one sentence that says what is wrong and how to fix it.

The CLI prints ``error: <message>`` and exits with code 2 for any :class:`TransfuseError`;
anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import difflib
from typing import Iterable


class TransfuseError(Exception):
    """A problem with the user's input, files or environment (not a bug in transfuse)."""


def closest(name: str, choices: Iterable[str], n: int = 3) -> str:
    """' Did you mean: a, b?' for the closest valid names, or '' when none is close."""
    matches = difflib.get_close_matches(name, list(choices), n=n, cutoff=0.5)
    return f" Did you mean: {', '.join(matches)}?" if matches else ""
