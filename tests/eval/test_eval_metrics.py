import math

import pytest
import torch
from torch import nn

from transfuse.eval import (
    accuracy,
    agreement,
    count_parameters,
    expected_calibration_error,
    kl_to_teacher,
    latency_ms_per_1000,
    reliability_bins,
)

# Five labelled samples and one unlabelled (-1, ignored), 3 classes, 5 bins of width 0.2.
PROBS = torch.tensor(
    [
        [0.90, 0.05, 0.05],  # conf .90, bin (.8, 1], correct
        [0.10, 0.85, 0.05],  # conf .85, bin (.8, 1], wrong (label 2)
        [0.50, 0.30, 0.20],  # conf .50, bin (.4, .6], correct
        [0.30, 0.45, 0.25],  # conf .45, bin (.4, .6], wrong (label 0)
        [0.70, 0.20, 0.10],  # conf .70, bin (.6, .8], correct
        [0.10, 0.10, 0.80],  # unlabelled
    ]
)
LABELS = torch.tensor([0, 2, 0, 0, 0, -1])


def test_ece_hand_example():
    # bin (.8,1]: 2 samples, acc .5, conf .875 -> 2/5 * .375 = .15
    # bin (.4,.6]: 2 samples, acc .5, conf .475 -> 2/5 * .025 = .01
    # bin (.6,.8]: 1 sample, acc 1, conf .7 -> 1/5 * .3 = .06
    assert expected_calibration_error(PROBS, LABELS, n_bins=5) == pytest.approx(0.22, abs=1e-6)
    bins = reliability_bins(PROBS, LABELS, n_bins=5)
    assert bins["count"] == [0, 0, 2, 1, 2]
    assert bins["accuracy"] == pytest.approx([0, 0, 0.5, 1.0, 0.5])
    assert bins["confidence"] == pytest.approx([0, 0, 0.475, 0.7, 0.875])
    assert bins["edges"] == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])


def test_ece_upper_edge_is_inclusive():
    # Confidence exactly 0.6 belongs to (0.4, 0.6], not (0.6, 0.8] (Guo et al.'s bins).
    probs = torch.tensor([[0.6, 0.4]])
    assert reliability_bins(probs, torch.tensor([0]), n_bins=5)["count"] == [0, 0, 1, 0, 0]


def test_ece_matches_a_loop_over_bins():
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(500, 7, generator=g) * 2, dim=-1)
    labels = torch.randint(0, 7, (500,), generator=g)
    conf, pred = probs.max(-1)
    ece = 0.0
    for m in range(15):
        lo, hi = m / 15, (m + 1) / 15
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            gap = (pred[inside] == labels[inside]).float().mean() - conf[inside].mean()
            ece += inside.float().mean().item() * abs(gap.item())
    assert expected_calibration_error(probs, labels) == pytest.approx(ece, abs=1e-5)


def test_accuracy_skips_unlabelled():
    assert accuracy(PROBS, LABELS) == pytest.approx(3 / 5)
    assert math.isnan(accuracy(PROBS, torch.full((6,), -1)))


def test_agreement_and_kl_hand_values():
    student = torch.tensor([[5.0, 0, 0], [0, 5.0, 0], [0, 0, 5.0], [0, 5.0, 0]])
    teacher = torch.tensor([[1.0, 0, 0], [0, 0, 1.0], [0, 0, 2.0], [0, 3.0, 0]])
    assert agreement(student, teacher) == pytest.approx(0.75)
    assert agreement(student, teacher, mask=torch.tensor([True, True, False, False])) == pytest.approx(0.5)
    # p_t = (.5, .5), p_s = (.75, .25): KL = .5 ln(.5/.75) + .5 ln(.5/.25) = .5 ln(4/3); second pair identical: 0.
    s = torch.tensor([[math.log(3.0), 0.0], [1.0, 2.0]])
    t = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    assert kl_to_teacher(s, t) == pytest.approx(0.5 * math.log(4 / 3) / 2, abs=1e-6)


def test_count_parameters_and_latency():
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    assert count_parameters(model) == 4 * 3 + 3 + 3 * 2 + 2
    model.train()
    ms = latency_ms_per_1000(model, torch.randn(50, 4), repeats=3)
    assert ms > 0 and math.isfinite(ms)
    assert model.training  # mode restored
