"""Helpers of the tests that start real processes: a free TCP port, and a SIGKILL at a given checkpoint."""
import os
import signal
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    """A localhost TCP port nothing listens on now (for accelerate's / torch.distributed's rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kill_at_checkpoint(proc: subprocess.Popen, run_dir: Path, step: int, *, timeout: float = 120) -> None:
    """Wait until ``run_dir/checkpoints/latest`` names the checkpoint of ``step`` (or a later one), then
    SIGKILL ``proc``: no handler runs, as when a machine is lost."""
    latest = Path(run_dir) / "checkpoints" / "latest"
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if latest.exists() and latest.read_text().strip() >= f"ckpt-{step:08d}":
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
