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
