"""kill -9 in the middle of a run, then resume: the same final weights as an uninterrupted run."""
import subprocess
import sys
from pathlib import Path

from process_helpers import kill_at_checkpoint
from safetensors.torch import load_file

SCRIPT = Path(__file__).parent / "_train_script.py"


def _cmd(out, run_dir, resume, sleep):
    # batch 32, accumulation 2, a checkpoint every 3 steps (mid-epoch), 3 epochs of 4 steps
    return [sys.executable, str(SCRIPT), str(out), "32", "2", str(run_dir), "3", "1" if resume else "0", str(sleep)]


def test_killed_run_resumes_to_the_same_weights(tmp_path):
    reference = subprocess.run(_cmd(tmp_path / "ref.st", tmp_path / "ref", False, 0), capture_output=True, text=True)
    assert reference.returncode == 0, reference.stderr

    run_dir = tmp_path / "run"
    proc = subprocess.Popen(_cmd(tmp_path / "killed.st", run_dir, False, 0.3), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    kill_at_checkpoint(proc, run_dir, 6)  # the second checkpoint (step 6: mid-epoch of epoch 2)
    assert not (tmp_path / "killed.st").exists(), "the run finished before it was killed; the test proves nothing"

    resumed = subprocess.run(_cmd(tmp_path / "resumed.st", run_dir, True, 0), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    a, b = load_file(tmp_path / "ref.st"), load_file(tmp_path / "resumed.st")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6
    # no temporary checkpoint folder is left behind
    assert not list((run_dir / "checkpoints").glob(".tmp-*"))
