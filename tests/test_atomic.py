"""Files written whole or not at all (transfuse._atomic): a failed write keeps the old file and leaves no temp."""
import pytest
import torch
from safetensors.torch import load_file

from transfuse import _atomic


def test_failed_write_keeps_the_old_file_and_leaves_nothing(tmp_path):
    target = _atomic.write_text(tmp_path / "sub" / "a.txt", "old")
    with pytest.raises(RuntimeError):
        with _atomic.replacing(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old" and sorted(p.name for p in target.parent.iterdir()) == ["a.txt"]


def test_json_and_safetensors_round_trip_with_readable_modes(tmp_path):
    _atomic.write_json(tmp_path / "c.json", {"b": 1, "a": 2}, sort_keys=True)
    assert (tmp_path / "c.json").read_text() == '{\n  "a": 2,\n  "b": 1\n}\n'
    path = _atomic.save_safetensors({"w": torch.arange(6.0).reshape(2, 3).t()}, tmp_path / "m.safetensors")  # non-contiguous
    assert torch.equal(load_file(path)["w"], torch.arange(6.0).reshape(2, 3).t())
    assert path.stat().st_mode & 0o044  # group/others may read it (mkstemp's 0600 would not)
