"""ExSSNeT: exclusive supermask subnetwork training (Yadav & Bansal, ACL 2023; code prateeky2806/exessnet).

Every Linear layer becomes a bias-free masked layer. Task t learns scores; its mask keeps the top
``density`` fraction of each layer's scores (straight-through gradient, SupSup/edge-popup), and the
weights are trained too, but only where no earlier task's mask is set (exclusive), so earlier tasks'
subnetworks never change: no forgetting when the task id is given. Before task t, a KNN classifier
on each earlier mask's features (and on fresh scores) predicts a sample of task t's training data;
the best earlier mask's scores initialise task t's (KNN-based knowledge transfer). Without task ids
the mask is chosen per sample by the lowest prediction entropy (SupSup's one-shot inference).
"""
from __future__ import annotations

from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import TransfuseError
from .._base import ContinualMethod, restrict
from ..streams import Task
from . import methods


class _TopK(torch.autograd.Function):
    @staticmethod
    def forward(ctx, scores: Tensor, density: float) -> Tensor:
        k = max(1, int(density * scores.numel()))
        threshold = scores.flatten().kthvalue(scores.numel() - k + 1).values
        return (scores >= threshold).to(scores.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad, None  # straight-through


class _MaskedLinear(nn.Module):
    """y = x (W * m_t)^T with m_t the current task's mask (learned scores, or a frozen mask of a past task)."""

    def __init__(self, linear: nn.Linear, density: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(linear.weight.detach().clone())  # (out, in)
        self.scores = nn.Parameter(torch.empty_like(self.weight))
        nn.init.kaiming_uniform_(self.scores, a=5**0.5)
        self.density = density
        self.register_buffer("used", torch.zeros_like(self.weight, dtype=torch.bool))  # set by earlier tasks' masks
        self.masks: List[Tensor] = []  # frozen (out, in) bool masks, one per finished task
        self.active: Optional[int] = None  # a finished task's mask to use; None = the learning scores

    def mask(self) -> Tensor:
        if self.active is not None:
            return self.masks[self.active].to(self.weight.dtype)
        return _TopK.apply(self.scores, self.density)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.mask())


def _masked_layers(model: nn.Module) -> List[_MaskedLinear]:
    return [m for m in model.modules() if isinstance(m, _MaskedLinear)]


def _replace_linears(module: nn.Module, density: float) -> int:
    count = 0
    for name, child in module.named_children():
        if isinstance(child, nn.Linear):
            setattr(module, name, _MaskedLinear(child, density))
            count += 1
        else:
            count += _replace_linears(child, density)
    return count


@methods.register("exssnet")
class ExSSNeT(ContinualMethod):
    """ExSSNeT (Yadav & Bansal 2023): per-task supermasks over exclusively trained weights, KNN-chosen initial masks."""

    def __init__(self, *, density: float = 0.5, knn_k: int = 5, knn_samples: int = 200, train_weights: bool = True) -> None:
        if not 0.0 < density <= 1.0:
            raise TransfuseError(f"exssnet density must be in (0, 1]; got {density}")
        self.density = density
        self.knn_k = knn_k
        self.knn_samples = knn_samples
        self.train_weights = train_weights
        self.saved_scores: List[List[Tensor]] = []

    def setup(self, model, stream, generator):
        if _replace_linears(model, self.density) == 0:
            raise TransfuseError("exssnet masks nn.Linear layers and this model has none; use an MLP-style model")
        return super().setup(model, stream, generator)

    def _use(self, model: nn.Module, task_index: Optional[int]) -> None:
        for layer in _masked_layers(model):
            layer.active = task_index

    @torch.no_grad()
    def _features(self, model: nn.Module, x: Tensor) -> Tensor:
        """The input of the last masked layer (the penultimate features), (N, D)."""
        feats: Dict[str, Tensor] = {}
        last = _masked_layers(model)[-1]
        handle = last.register_forward_hook(lambda m, inp, out: feats.setdefault("f", inp[0]))
        model(x)
        handle.remove()
        return F.normalize(feats["f"].flatten(1).float(), dim=1)

    @torch.no_grad()
    def _knn_accuracy(self, model: nn.Module, x: Tensor, y: Tensor) -> float:
        f = self._features(model, x)  # (N, D)
        sim = f @ f.T  # (N, N)
        sim.fill_diagonal_(-float("inf"))  # leave-one-out
        nearest = sim.topk(min(self.knn_k, len(x) - 1), dim=1).indices  # (N, k)
        votes = F.one_hot(y[nearest], int(y.max()) + 1).sum(1)  # (N, C)
        return float((votes.argmax(1) == y).float().mean())

    def before_task(self, model: nn.Module, task: Task) -> None:
        layers = _masked_layers(model)
        for layer in layers:  # fresh scores for the new task
            nn.init.kaiming_uniform_(layer.scores, a=5**0.5)
            layer.weight.requires_grad_(self.train_weights)
        if self.saved_scores and len(task.train) > self.knn_k + 1:
            pick = torch.randperm(len(task.train), generator=self.generator)[: self.knn_samples]
            x, y = task.train.inputs[pick], task.train.labels[pick]
            self._use(model, None)
            best, best_acc = None, self._knn_accuracy(model, x, y)
            for t in range(len(self.saved_scores)):
                self._use(model, t)
                acc = self._knn_accuracy(model, x, y)
                if acc > best_acc:
                    best, best_acc = t, acc
            if best is not None:
                for layer, s in zip(layers, self.saved_scores[best]):
                    layer.scores.data.copy_(s)
        self._use(model, None)

    def after_backward(self, model: nn.Module, task: Task) -> None:
        for layer in _masked_layers(model):
            if layer.weight.grad is not None:
                layer.weight.grad[layer.used] = 0.0  # weights of earlier tasks' subnetworks stay as they were

    def after_task(self, model: nn.Module, task: Task) -> None:
        scores = []
        for layer in _masked_layers(model):
            m = layer.mask().detach().bool()
            layer.masks.append(m)
            layer.used |= m
            scores.append(layer.scores.detach().clone())
        self.saved_scores.append(scores)

    def objective(self, model, batch, task):
        self._use(model, None)
        return super().objective(model, batch, task)

    @torch.no_grad()
    def predict(self, model: nn.Module, inputs: Tensor, task: Optional[Task]) -> Tensor:
        done = len(self.saved_scores)
        if task is not None:
            self._use(model, task.task_id if task.task_id < done else None)
            out = restrict(model(inputs), self.classes(task))
        elif done == 0:
            self._use(model, None)
            out = model(inputs)
        else:  # task id hidden: per sample, the finished task's mask with the most confident prediction
            candidates = []
            for t in range(done):
                self._use(model, t)
                candidates.append(model(inputs))  # (B, C)
            stack = torch.stack(candidates)  # (done, B, C)
            p = stack.float().softmax(-1)
            entropy = -(p * p.clamp_min(1e-12).log()).sum(-1)  # (done, B)
            choice = entropy.argmin(0)  # (B,)
            out = stack[choice, torch.arange(len(inputs))]
        self._use(model, None)
        return out
