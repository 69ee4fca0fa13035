"""The classifier logits cache: computed once, keyed by sample id, fingerprinted."""
import pytest
import torch
from torch import nn

from transfuse.cache import CachedTeacher, LogitsCache, build_or_load_logits_cache, model_fingerprint
from transfuse.errors import TransfuseError
from transfuse.signals import Batch


class CountingTeacher(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(4, 3)
        self.calls = 0

    def forward(self, x):
        self.calls += len(x)
        return self.lin(x)


def _data(n=20):
    x = torch.randn(n, 4, generator=torch.Generator().manual_seed(1))
    index = torch.arange(100, 100 + n)  # ids need not start at 0
    return x, index


def test_built_once_then_reused(tmp_path):
    teacher = CountingTeacher()
    x, index = _data()
    a = build_or_load_logits_cache(teacher, x, index, data_fingerprint="d1", cache_dir=tmp_path)
    assert teacher.calls == 20
    b = build_or_load_logits_cache(teacher, x, index, data_fingerprint="d1", cache_dir=tmp_path)
    assert teacher.calls == 20, "the second run must read the cache, not run the teacher"
    assert torch.equal(a.logits, b.logits)
    # lookup by sample id, in any order
    ids = torch.tensor([119, 100, 105])
    expected = teacher.lin(x[ids - 100]).detach()
    assert torch.allclose(b.lookup(ids), expected, atol=1e-6)
    out = CachedTeacher(b)(Batch(inputs=x[:3], index=ids))
    assert torch.allclose(out.logits, expected, atol=1e-6)


def test_changed_teacher_or_data_never_reuses_stale_targets(tmp_path):
    teacher = CountingTeacher()
    x, index = _data()
    build_or_load_logits_cache(teacher, x, index, data_fingerprint="d1", cache_dir=tmp_path)
    with torch.no_grad():
        teacher.lin.weight.add_(1.0)
    c = build_or_load_logits_cache(teacher, x, index, data_fingerprint="d1", cache_dir=tmp_path)
    assert teacher.calls == 40, "new weights must recompute"
    assert torch.allclose(c.lookup(index), teacher.lin(x).detach(), atol=1e-6)
    build_or_load_logits_cache(teacher, x, index, data_fingerprint="d2", cache_dir=tmp_path)
    assert teacher.calls == 60, "new data must recompute"
    assert len(list(tmp_path.glob("teacher-*.safetensors"))) == 3


def test_explicit_path_with_other_fingerprint_is_an_error(tmp_path):
    teacher = CountingTeacher()
    x, index = _data()
    path = tmp_path / "mine.safetensors"
    build_or_load_logits_cache(teacher, x, index, data_fingerprint="d1", cache_dir=tmp_path, cache_path=path)
    with pytest.raises(TransfuseError, match="made for another teacher, data or transform"):
        build_or_load_logits_cache(teacher, x, index, data_fingerprint="OTHER", cache_dir=tmp_path, cache_path=path)


def test_corrupt_file_and_missing_ids(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"garbage")
    with pytest.raises(TransfuseError, match="unreadable"):
        LogitsCache.load(bad)
    cache = LogitsCache(torch.tensor([0, 1, 2]), torch.zeros(3, 2), "fp")
    with pytest.raises(TransfuseError, match="no entry for some samples"):
        cache.lookup(torch.tensor([1, 7]))
    with pytest.raises(TransfuseError, match="needs sample ids"):
        CachedTeacher(cache)(Batch(inputs=torch.zeros(2, 2)))


def test_fingerprint_sees_every_weight():
    m = CountingTeacher()
    f1 = model_fingerprint(m)
    with torch.no_grad():
        m.lin.bias[2] += 1e-6
    assert model_fingerprint(m) != f1
