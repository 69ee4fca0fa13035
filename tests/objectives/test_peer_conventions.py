"""transfuse's objectives against reference outputs TRL 1.16.0 and torchdistill 1.1.5 produced
(benchmarks/peer_conventions.py regenerates tests/objectives/data/peer_*.json in the peers' venvs)."""
import json
from pathlib import Path

import pytest
import torch

from transfuse.objectives import build_objective
from transfuse.signals import Batch, Outputs

DATA = Path(__file__).parent / "data"


def _inputs():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(3, 5, 11, generator=g) * 2, torch.randn(3, 5, 11, generator=g) * 2
    labels = torch.randint(0, 11, (3, 5), generator=g)
    labels[:, 3:] = -100
    return s, t, labels


TRL = json.loads((DATA / "peer_trl.json").read_text())


@pytest.mark.parametrize("key", sorted(k for k in TRL if k.startswith("topk|")))
def test_trl_top_k_supports(key):
    _, beta, tail = key.split("|")
    s, t, labels = _inputs()
    support = {"0.0": "teacher_topk", "1.0": "student_topk"}.get(beta, "union")  # TRL picks the support by beta
    obj = build_objective("jsd", {"beta": float(beta), "temperature": 2.0, "kl_at_endpoints": True, "reduction": "batchmean",
                                  "support": support, "top_k": 3, "tail": tail == "True"})
    got = float(obj(Outputs(logits=s), Outputs(logits=t), Batch(inputs=labels.clamp_min(0), labels=labels)))
    assert got == pytest.approx(TRL[key], rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("key", sorted(k for k in TRL if not k.startswith("topk|")))
def test_trl_generalized_jsd_loss(key):
    beta, temp, red = key.split("|")
    s, t, labels = _inputs()
    batch = Batch(inputs=labels.clamp_min(0), labels=labels, extra={"num_items_in_batch": 7})  # no mask: -100 labels are it
    obj = build_objective("jsd", {"beta": float(beta), "temperature": float(temp), "kl_at_endpoints": True, "reduction": red})
    got = float(obj(Outputs(logits=s), Outputs(logits=t), batch))
    assert got == pytest.approx(TRL[key], rel=1e-5, abs=1e-6)


TD = json.loads((DATA / "peer_torchdistill.json").read_text())
CALLS = {
    "kd": ("kd", {"temperature": 4.0, "ce_weight": 0.3, "kl_weight": 0.6, "label_smoothing": 0.1}),
    "kd_noce": ("kd", {"temperature": 4.0, "ce_weight": 0.0, "kl_weight": 1.0, "t_squared": False}),
    "dist": ("dist", {"beta": 1.0, "gamma": 2.0, "tau": 2.0}),
    "logit_std": ("logit_std", {"temperature": 2.0, "ce_weight": 0.5, "kl_weight": 9.0}),
    "skd_instance_paper": ("skd_instance", {"temperature": 4.0, "mode": "paper"}),
    "skd_instance_code": ("skd_instance", {"temperature": 4.0, "mode": "code"}),
    "skd_direction_paper": ("skd_direction", {"tikhonov": 0.1, "mode": "paper"}),
    "skd_direction_code": ("skd_direction", {"tikhonov": 0.1, "mode": "code"}),
}


@pytest.mark.parametrize("key", sorted(CALLS))
def test_torchdistill_losses(key):
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(8, 6, generator=g), torch.randn(8, 6, generator=g)
    y = torch.randint(0, 6, (8,), generator=g)
    name, params = CALLS[key]
    got = float(build_objective(name, params)(Outputs(logits=s), Outputs(logits=t), Batch(inputs=s, labels=y)))
    assert got == pytest.approx(TD[key], rel=1e-5, abs=1e-6)


def test_minus_100_labels_are_the_mask():
    s, t, labels = _inputs()
    obj = build_objective("forward_kl")
    implicit = obj(Outputs(logits=s), Outputs(logits=t), Batch(inputs=labels.clamp_min(0), labels=labels))
    explicit = obj(Outputs(logits=s), Outputs(logits=t), Batch(inputs=labels, labels=labels, mask=labels != -100))
    everything = obj(Outputs(logits=s), Outputs(logits=t), Batch(inputs=labels, mask=torch.ones(3, 5, dtype=torch.bool)))
    assert torch.allclose(implicit, explicit) and not torch.allclose(implicit, everything)
