"""Every registered continual method runs a tiny stream and fills a (T, T) accuracy matrix."""
import numpy as np
import pytest

from transfuse.continual import build_stream, methods, run


@pytest.mark.parametrize("name", methods.names())
def test_method_runs_on_a_tiny_stream(name):
    scenario = "domain" if name == "vida" else "task"
    params = {"encoder": "random"} if name == "lingocl" else None
    s = build_stream(scenario=scenario, dataset="digits", tasks=2, train_per_task=80, test_per_task=40)
    r = run(s, name, method_params=params, epochs=1, model_params={"hidden": [16]})
    assert r.R.shape == (2, 2) and np.all((r.R >= 0) & (r.R <= 1))
    assert "acc" in r.metrics and "bwt" in r.metrics


def test_exssnet_does_not_forget_with_task_ids():
    s = build_stream(scenario="task", dataset="digits", tasks=3, train_per_task=150, test_per_task=60)
    r = run(s, "exssnet", epochs=2, model_params={"hidden": [32]})
    assert r.metrics["bwt"] == pytest.approx(0.0, abs=1e-9)


def test_cuber_bases_stay_orthogonal_and_cover_the_threshold():
    import torch

    from transfuse.continual import build_method

    m = build_method("cuber", {"threshold": 0.9})
    g = torch.Generator().manual_seed(0)
    a1 = torch.randn(20, 50, generator=g)  # (in, N)
    b1 = m._new_directions(a1, [])
    a2 = a1 + 0.5 * torch.randn(20, 50, generator=g)
    b2 = m._new_directions(a2, [b1])
    assert torch.allclose(b1.T @ b2, torch.zeros(b1.shape[1], b2.shape[1]), atol=1e-5)  # never double-projected
    union = torch.cat([b1, b2], 1)
    covered = 1 - ((a2 - union @ (union.T @ a2)) ** 2).sum() / (a2**2).sum()
    assert covered >= 0.9 - 1e-6


def test_cuber_does_not_forget_with_task_ids_and_beats_finetune():
    s = build_stream(scenario="task", dataset="fashion_mnist", tasks=3, train_per_task=600, test_per_task=200)
    cuber = run(s, "cuber", epochs=2, model_params={"hidden": [64]})
    fine = run(s, "finetune", epochs=2, model_params={"hidden": [64]})
    assert cuber.metrics["bwt"] > -0.03
    assert cuber.metrics["bwt"] > fine.metrics["bwt"]
