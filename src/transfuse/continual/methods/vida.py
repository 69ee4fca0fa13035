"""ViDA: homeostatic visual domain adapters for continual test-time adaptation (Liu et al., ICLR 2024;
code Yangsenqiao/vida, read for this file).

Every Linear layer gets a low-rank (rank ``r_low``) and a high-rank (``r_high``) adapter in parallel,
their up-projections starting at zero. Task 0 is the labelled source domain: everything trains with
cross-entropy. On every later domain no label is used: an EMA teacher predicts each batch, the
student minimises the soft cross-entropy to it, and the teacher follows the student (momentum
``ema``). The adapters' scales come from the teacher's uncertainty u = 0.1 * mean variance of its
logits over ``augmentations`` noisy copies of the batch: u >= ``threshold`` weights the high-rank
(domain-specific) adapter by 1 + u and the low-rank (domain-shared) one by 1 - u, else the reverse.
A fraction ``restore`` of the parameters returns to the source weights after each step (stochastic
restoration, as in the official code). Predictions are the teacher's. Gaussian input noise stands
in for the official image augmentations (colour jitter, affine, blur), which need PIL images.
"""
from __future__ import annotations

import copy
from typing import Dict, Optional

import torch
from torch import Tensor, nn

from ...errors import TransfuseError
from ...objectives._functional import log_softmax
from .._base import ContinualMethod, restrict
from ..streams import Task
from . import methods


class _AdaptedLinear(nn.Module):
    """y = W x + b + s_low * U_l D_l x + s_high * U_h D_h x."""

    def __init__(self, linear: nn.Linear, r_low: int, r_high: int) -> None:
        super().__init__()
        self.base = linear
        self.vida_down = nn.Linear(linear.in_features, r_low, bias=False)
        self.vida_up = nn.Linear(r_low, linear.out_features, bias=False)
        self.vida_down2 = nn.Linear(linear.in_features, r_high, bias=False)
        self.vida_up2 = nn.Linear(r_high, linear.out_features, bias=False)
        nn.init.normal_(self.vida_down.weight, std=1.0 / r_low**2)
        nn.init.zeros_(self.vida_up.weight)
        nn.init.normal_(self.vida_down2.weight, std=1.0 / r_high**2)
        nn.init.zeros_(self.vida_up2.weight)
        self.scale_low = 1.0
        self.scale_high = 1.0

    def forward(self, x: Tensor) -> Tensor:
        return (self.base(x) + self.scale_low * self.vida_up(self.vida_down(x))
                + self.scale_high * self.vida_up2(self.vida_down2(x)))


def _inject(module: nn.Module, r_low: int, r_high: int) -> int:
    count = 0
    for name, child in module.named_children():
        if isinstance(child, nn.Linear):
            setattr(module, name, _AdaptedLinear(child, r_low, r_high))
            count += 1
        else:
            count += _inject(child, r_low, r_high)
    return count


def _set_scales(model: nn.Module, low: float, high: float) -> None:
    for m in model.modules():
        if isinstance(m, _AdaptedLinear):
            m.scale_low, m.scale_high = low, high


@methods.register("vida")
class ViDA(ContinualMethod):
    """ViDA (Liu et al. 2024): low/high-rank adapters, EMA teacher and uncertainty-set scales, adapting without labels."""

    def __init__(self, *, r_low: int = 1, r_high: int = 128, ema: float = 0.99, ema_adapters: float = 0.99,
                 threshold: float = 0.2, augmentations: int = 4, noise: float = 0.1, restore: float = 0.01,
                 domains_only: bool = True) -> None:
        if r_low < 1 or r_high < 1 or not 0.0 <= ema < 1.0 or not 0.0 <= ema_adapters < 1.0 or not 0.0 <= restore < 1.0:
            raise TransfuseError("vida needs ranks >= 1 and ema, ema_adapters, restore in [0, 1)")
        self.r_low, self.r_high = r_low, r_high
        self.ema, self.ema_adapters = ema, ema_adapters
        self.threshold = threshold
        self.augmentations = augmentations
        self.noise = noise
        self.restore = restore
        self.domains_only = domains_only
        self.teacher: Optional[nn.Module] = None
        self.source: Dict[str, Tensor] = {}

    def setup(self, model, stream, generator):
        if self.domains_only and stream.scenario != "domain":
            raise TransfuseError(
                f"vida adapts to shifted domains without labels; this stream's scenario is {stream.scenario!r}: "
                "use scenario=domain (or domains_only=false to run it anyway)"
            )
        if _inject(model, self.r_low, self.r_high) == 0:
            raise TransfuseError("vida adds adapters to nn.Linear layers and this model has none")
        return super().setup(model, stream, generator)

    @torch.no_grad()
    def _uncertainty(self, x: Tensor) -> float:
        outs = [self.teacher(x + self.noise * torch.randn(x.shape, generator=self.generator)) for _ in range(self.augmentations)]
        return float(torch.stack(outs).float().var(dim=0).mean() * 0.1)

    def objective(self, model: nn.Module, batch: Dict[str, Tensor], task: Task) -> Tensor:
        if self.teacher is None:  # the labelled source domain
            return super().objective(model, batch, task)
        x = batch["inputs"]
        u = self._uncertainty(x)
        low, high = (1 - u, 1 + u) if u >= self.threshold else (1 + u, 1 - u)
        _set_scales(model, low, high)
        _set_scales(self.teacher, low, high)
        with torch.no_grad():
            target = self.teacher(x).float().softmax(-1)  # (B, C)
        return -(target * log_softmax(model(x))).sum(-1).mean()

    @torch.no_grad()
    def after_step(self, model: nn.Module, batch: Dict[str, Tensor], task: Task) -> None:
        if self.teacher is None:
            return
        for (name, p), q in zip(model.named_parameters(), self.teacher.parameters()):
            a = self.ema_adapters if "vida_" in name else self.ema
            q.mul_(a).add_(p.detach(), alpha=1 - a)
            if self.restore > 0:
                keep = torch.rand(p.shape, generator=self.generator) < self.restore
                p.copy_(torch.where(keep, self.source[name], p))

    def after_task(self, model: nn.Module, task: Task) -> None:
        if self.teacher is None:  # source training done: from now on, adapt without labels
            self.teacher = copy.deepcopy(model)
            for p in self.teacher.parameters():
                p.requires_grad_(False)
            self.source = {n: p.detach().clone() for n, p in model.named_parameters()}

    @torch.no_grad()
    def predict(self, model: nn.Module, inputs: Tensor, task: Optional[Task]) -> Tensor:
        net = self.teacher if self.teacher is not None else model
        return restrict(net(inputs), self.classes(task))
