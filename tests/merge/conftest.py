import pytest
import torch

from merge_helpers import write_model


@pytest.fixture
def family(tmp_path):
    """base + 3 experts with small random tensors (float32), names like a tiny LM."""
    g = torch.Generator().manual_seed(0)
    base = {
        "model.embed_tokens.weight": torch.randn(10, 8, generator=g),
        "model.layers.0.mlp.weight": torch.randn(12, 8, generator=g),
        "model.layers.0.mlp.bias": torch.randn(12, generator=g),
        "model.norm.weight": torch.randn(8, generator=g),
        "lm_head.weight": torch.randn(10, 8, generator=g),
    }
    paths = {"base": write_model(tmp_path / "base", base)}
    experts = []
    for i in range(3):
        t = {k: v + 0.5 * torch.randn(v.shape, generator=g) for k, v in base.items()}
        experts.append(t)
        paths[f"e{i}"] = write_model(tmp_path / f"e{i}", t)
    return {"base": base, "experts": experts, "paths": paths, "root": tmp_path}


@pytest.fixture(autouse=True)
def _private_hash_cache(tmp_path, monkeypatch):
    """File digests are remembered in a file: keep the tests' out of the user's ~/.cache."""
    monkeypatch.setenv("TRANSFUSE_HASH_CACHE", str(tmp_path / "hash-cache" / "sha256.json"))
