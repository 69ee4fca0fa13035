"""Data-free distillation: a generator synthesises the inputs; the student never sees the data."""
from __future__ import annotations

import math
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..signals import Batch, Outputs
from . import Objective, objectives
from ._adam import BufferAdam, step_parts
from ._features import teacher_model
from ._functional import kl


def _generator(noise_dim: int, hidden: int, out: int) -> nn.Module:
    return nn.Sequential(nn.Linear(noise_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, out))


@objectives.register("datafree")
class DataFreeKD(Objective):
    """Data-free KD as used by AF-STip (Knowledge Migration for smart contracts, METHODS.md A): a generator synthesises inputs the teacher labels and the student learns from; no code was found, so the generator objective follows the data-free KD literature (DAFL one-hot + information entropy, DFAD adversarial disagreement) and is this library's choice (unverified for AF-STip).

    ``prepare`` (needs ``bind(student, teacher=model)``) takes ``gen_steps`` Adam steps on the
    generator to lower oh_weight CE(t(x), argmax t(x)) - ie_weight H(mean_batch p_t(x))
    - adv_weight mean|z_t(x) - z_s(x)|, then replaces the batch by fresh synthetic inputs of the
    same shape with no labels and no sample ids: the real inputs are never shown to either model
    (only the shape and, when ``input_range`` is not given, the value bounds of the first batch are read;
    generated inputs are low + (high - low) sigmoid(G(z))).
    Loss: T^2 KL(p_t || p_s) on the synthetic batch. The generator is a submodule (saved in
    checkpoints), built at the first batch from its shape or from ``in_shape``.
    """
    #: prepare() changes the inputs, so the teacher must run live on them (no logits cache).
    changes_inputs = True

    is_divergence = True

    def __init__(self, *, temperature: float = 4.0, noise_dim: int = 64, hidden: int = 256, gen_lr: float = 1e-3, gen_steps: int = 1,
                 oh_weight: float = 1.0, ie_weight: float = 5.0, adv_weight: float = 1.0, input_range: List[float] = [], in_shape: List[int] = []) -> None:  # noqa: B006
        super().__init__()
        self.temperature, self.noise_dim, self.hidden = temperature, noise_dim, hidden
        if input_range and (len(input_range) != 2 or input_range[0] >= input_range[1]):
            raise ValueError("datafree input_range is [low, high] with low < high")
        self.gen_lr, self.gen_steps = gen_lr, gen_steps
        self.register_buffer("input_range", torch.tensor([float(v) for v in input_range] or [0.0, 0.0]))
        self.oh_weight, self.ie_weight, self.adv_weight = oh_weight, ie_weight, adv_weight
        self.in_shape = tuple(in_shape)
        self.generator: Optional[nn.Module] = _generator(noise_dim, hidden, math.prod(self.in_shape)) if self.in_shape else None
        self.adam = BufferAdam(lr=gen_lr)  # its moments are buffers: checkpoints carry them
        self._models: list = []

    def bind(self, student: nn.Module, teacher: Optional[nn.Module] = None) -> None:
        model = teacher_model(teacher)
        if model is not None or not self._models:
            self._models = [student, model]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "generator.6.weight"
        if self.generator is None and key in state_dict:
            self.generator = _generator(self.noise_dim, self.hidden, state_dict[key].shape[0])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def synthesise(self, n: int, generator: torch.Generator, device: torch.device) -> Tensor:
        z = torch.randn(n, self.noise_dim, generator=generator).to(device)
        low, high = float(self.input_range[0]), float(self.input_range[1])
        return (low + (high - low) * torch.sigmoid(self.generator(z))).view((n,) + self.in_shape)

    def prepare(self, batch: Batch, *, generator: torch.Generator) -> Batch:
        if not self._models or self._models[1] is None:
            raise ValueError("datafree needs the live teacher model: call objective.bind(student, teacher=teacher_model)")
        student, teacher = self._models
        n, device = batch.size, batch.inputs.device
        if float(self.input_range[0]) == float(self.input_range[1]):  # not given: the bounds of the first batch
            self.input_range = torch.tensor([float(batch.inputs.min()), float(batch.inputs.max())], device=device)
        if self.generator is None:
            self.in_shape = tuple(batch.inputs.shape[1:])
            self.generator = _generator(self.noise_dim, self.hidden, math.prod(self.in_shape)).to(device)
        self.generator.train()
        for _ in range(self.gen_steps):
            with torch.enable_grad():
                x = self.synthesise(n, generator, device)
                t, s = teacher(x).float(), student(x).float()
                p_mean = t.softmax(-1).mean(0)
                entropy = -(p_mean * p_mean.clamp_min(1e-12).log()).sum()
                loss = self.oh_weight * F.cross_entropy(t, t.argmax(-1)) - self.ie_weight * entropy - self.adv_weight * (t - s).abs().mean()
                step_parts(self.adam, list(self.generator.parameters()), loss)
        with torch.no_grad():
            x = self.synthesise(n, generator, device)
        return Batch(inputs=x, labels=None, index=None, mask=None, extra={})

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        return kl(teacher.logits.detach(), student.logits, self.temperature).mean() * self.temperature**2
