"""HARD: a learned spatial-transformer augmentor that seeks teacher-student disagreement."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..signals import Batch, Outputs
from . import Objective, objectives
from ._adam import BufferAdam, step_parts
from ._features import teacher_model
from ._functional import cross_entropy, kl


class _Augmentor(nn.Module):
    """Spatial transformer: image + noise -> affine theta near the identity -> resampled image."""

    def __init__(self, noise_dim: int, hidden: int, max_shift: float) -> None:
        super().__init__()
        self.noise_dim, self.max_shift = noise_dim, max_shift
        self.net = nn.Sequential(nn.LazyLinear(hidden), nn.Tanh(), nn.Linear(hidden, 6))
        nn.init.normal_(self.net[2].weight, std=1e-2)
        nn.init.zeros_(self.net[2].bias)

    def forward(self, x: Tensor, noise: Tensor) -> Tensor:
        delta = torch.tanh(self.net(torch.cat([x.flatten(1), noise], 1))) * self.max_shift  # (B, 6)
        theta = torch.eye(2, 3, device=x.device).unsqueeze(0) + delta.view(-1, 2, 3)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


@objectives.register("hard")
class HardAugmentationKD(Objective):
    """Hauser et al. 2023, HARD: Hard Augmentations for Robust Distillation: an augmentor learns to maximise teacher-student disagreement while the teacher stays right, and the student learns KD on clean + augmented images; no code was released, so the augmentor and its loss are this library's reading (unverified).

    ``prepare`` (needs ``bind(student, teacher=model)``) takes ``aug_steps`` Adam steps on the
    augmentor (a spatial transformer: affine theta = identity + max_shift tanh(MLP(x, noise)))
    to maximise T^2 KL(p_t(x') || p_s(x')) - teacher_weight CE(teacher(x'), y), then returns the
    clean batch followed by its augmented copy (2B rows) for both models. Loss: kd's
    alpha T^2 KL + (1 - alpha) CE on all rows. The augmentor is a submodule (saved in
    checkpoints) with its own Adam whose moments are buffers (so resumed runs match); the loop's
    optimizer never gets its gradients.
    """
    #: prepare() changes the inputs, so the teacher must run live on them (no logits cache).
    changes_inputs = True

    def __init__(self, *, alpha: float = 0.9, temperature: float = 4.0, max_shift: float = 0.3, teacher_weight: float = 1.0,
                 aug_lr: float = 1e-3, aug_steps: int = 1, noise_dim: int = 8, hidden: int = 32) -> None:
        super().__init__()
        self.alpha, self.temperature, self.teacher_weight = alpha, temperature, teacher_weight
        self.aug_lr, self.aug_steps, self.noise_dim = aug_lr, aug_steps, noise_dim
        self.augmentor = _Augmentor(noise_dim, hidden, max_shift)
        self.adam = BufferAdam(lr=aug_lr)  # its moments are buffers: checkpoints carry them
        self._models: list = []

    def bind(self, student: nn.Module, teacher: Optional[nn.Module] = None) -> None:
        model = teacher_model(teacher)
        if model is not None or not self._models:
            self._models = [student, model]

    def augment(self, x: Tensor, generator: torch.Generator) -> Tensor:
        noise = torch.randn(x.shape[0], self.noise_dim, generator=generator).to(x.device)
        return self.augmentor(x, noise)

    def prepare(self, batch: Batch, *, generator: torch.Generator) -> Batch:
        if not self._models or self._models[1] is None:
            raise ValueError("hard needs the live teacher model: call objective.bind(student, teacher=teacher_model)")
        student, teacher = self._models
        x = batch.inputs
        if x.dim() != 4:
            raise ValueError(f"hard augments images (B, C, H, W); got inputs of shape {tuple(x.shape)}")
        for _ in range(self.aug_steps):
            with torch.enable_grad():
                x_aug = self.augment(x, generator)
                s, t = student(x_aug), teacher(x_aug)
                gain = kl(t, s, self.temperature).mean() * self.temperature**2
                if batch.labels is not None:
                    gain = gain - self.teacher_weight * cross_entropy(t, batch.labels)
                step_parts(self.adam, list(self.augmentor.parameters()), -gain)
        with torch.no_grad():
            x_aug = self.augment(x, generator)
        double = lambda v: None if v is None else torch.cat([v, v], 0)  # noqa: E731
        return Batch(inputs=torch.cat([x, x_aug], 0), labels=double(batch.labels), index=double(batch.index), mask=None, extra=dict(batch.extra))

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        soft = kl(teacher.logits.detach(), student.logits, self.temperature).mean() * self.temperature**2
        if batch.labels is None or self.alpha == 1.0:
            return soft
        return self.alpha * soft + (1 - self.alpha) * cross_entropy(student.logits, batch.labels)
