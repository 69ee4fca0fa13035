"""A merge killed with SIGKILL leaves nothing at the output path, and running it again works."""
import os
import signal
import subprocess
import sys
import time

import torch
import yaml

from merge_helpers import read_model, write_model

SLOW = '''
import time
from transfuse.merge.methods import MergeMethod


class Slow(MergeMethod):
    """Task arithmetic that sleeps per tensor (for the kill test)."""

    def __init__(self, *, delay: float = 0.1) -> None:
        self.delay = delay

    def __call__(self, x, w, ctx):
        time.sleep(self.delay)
        return (x * w.view(-1, *([1] * (x.dim() - 1)))).sum(0)
'''


def test_sigkill_mid_merge_leaves_nothing_and_rerun_works(tmp_path):
    g = torch.Generator().manual_seed(0)
    base = {f"layers.{i}.weight": torch.randn(64, 64, generator=g) for i in range(40)}
    write_model(tmp_path / "base", base)
    write_model(tmp_path / "e0", {k: v + 1 for k, v in base.items()})
    (tmp_path / "slow_method.py").write_text(SLOW)
    out = tmp_path / "merged"
    cfg = {"method": "slow_method.Slow", "base_model": str(tmp_path / "base"), "models": [{"model": str(tmp_path / "e0")}],
           "output": str(out), "parameters": {"delay": 0.1}}
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen([sys.executable, "-m", "transfuse.cli", "merge", str(tmp_path / "m.yaml")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    tmp_dir = None
    while time.time() < deadline and proc.poll() is None:
        found = list(tmp_path.glob(".merged.transfuse-tmp-*"))
        if found and (found[0] / "model.safetensors").exists():
            tmp_dir = found[0]
            break
        time.sleep(0.05)
    assert tmp_dir is not None, proc.communicate()
    time.sleep(0.5)  # well inside the 4 s of sleeping the merge needs
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()
    # rerun (fast): works, and the dead run's temp folder is cleaned away
    cfg["parameters"] = {"delay": 0.0}
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(cfg))
    done = subprocess.run([sys.executable, "-m", "transfuse.cli", "merge", str(tmp_path / "m.yaml")], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    merged = read_model(out)
    torch.testing.assert_close(merged["layers.3.weight"], base["layers.3.weight"] + 1)
    assert not list(tmp_path.glob(".merged.transfuse-tmp-*"))
