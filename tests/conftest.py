import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CI_SMALL = os.environ.get("TRANSFUSE_CI_SMALL") == "1"


@pytest.fixture
def run_cli():
    """Run `python -m transfuse.cli ARGS` in a subprocess; returns CompletedProcess."""
    import subprocess

    def _run(*args, cwd=None, timeout=600, env=None):
        full_env = {**os.environ, **(env or {})}
        return subprocess.run(
            [sys.executable, "-m", "transfuse.cli", *map(str, args)],
            capture_output=True, text=True, cwd=cwd, timeout=timeout, env=full_env,
        )

    return _run
