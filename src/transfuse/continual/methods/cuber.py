"""CUBER: continual learning with backward knowledge transfer (Lin et al., NeurIPS 2022), no official code.

Gradient projection memory (GPM, Saha et al. 2021) keeps, for every Linear layer and every finished
task j, a basis M_j (in, k_j) of the inputs the layer saw on task j (SVD of the activations, the
directions holding ``threshold`` of their energy). Training task t projects each layer's weight
gradient g (out, in) off span(M_j) -- unless the layer is "strongly positively correlated" with task
j: the part of g inside span(M_j) points the same way as task j's own gradient there (stored at the
end of task j), so a step on task t also lowers task j's loss; then CUBER keeps that part, which is
where its backward transfer comes from. Biases learn on task 0 only (GPM uses bias-free layers).
Followed: the per-layer, per-task correlation test and projection; simplified: the stored old-task
gradient stands in for the paper's first-order trust-region estimate.
"""
from __future__ import annotations

from typing import Dict, List

import torch
from torch import Tensor, nn

from ...errors import TransfuseError
from .._base import ContinualMethod, batches
from ..streams import Task
from . import methods


@methods.register("cuber")
class CUBER(ContinualMethod):
    """CUBER (Lin et al. 2022): gradient projection that keeps updates inside old tasks' subspaces when they help those tasks."""

    def __init__(self, *, threshold: float = 0.97, samples: int = 300, correlation: float = 0.0) -> None:
        if not 0.0 < threshold < 1.0:
            raise TransfuseError(f"cuber threshold must be in (0, 1); got {threshold}")
        self.threshold = threshold
        self.samples = samples
        self.correlation = correlation
        self.bases: List[Dict[str, Tensor]] = []  # per finished task: layer name -> (in, k)
        self.old_grads: List[Dict[str, Tensor]] = []  # per finished task: layer name -> (out, in)
        self.kept: List[int] = []  # how often an old subspace was kept (diagnostic)

    def _linears(self, model: nn.Module) -> Dict[str, nn.Linear]:
        found = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
        if not found:
            raise TransfuseError("cuber projects the gradients of nn.Linear layers and this model has none")
        return found

    def after_backward(self, model: nn.Module, task: Task) -> None:
        if not self.bases:
            return
        for name, layer in self._linears(model).items():
            g = layer.weight.grad
            if g is None:
                continue
            if layer.bias is not None and layer.bias.grad is not None:
                layer.bias.grad.zero_()
            removed = torch.zeros_like(g)
            for basis, old in zip(self.bases, self.old_grads):
                M = basis[name]  # (in, k)
                inside = g @ M @ M.T  # (out, in): the part of g in the old task's input space
                old_inside = old[name] @ M @ M.T
                if float((inside * old_inside).sum()) > self.correlation:
                    self.kept[-1] += 1
                    continue  # positively correlated: this step also descends on the old task
                removed += inside
            layer.weight.grad.sub_(removed)

    def before_task(self, model: nn.Module, task: Task) -> None:
        self.kept.append(0)

    def after_task(self, model: nn.Module, task: Task) -> None:
        layers = self._linears(model)
        pick = torch.randperm(len(task.train), generator=self.generator)[: self.samples]
        x = task.train.inputs[pick]
        acts: Dict[str, Tensor] = {}
        hooks = [m.register_forward_hook(lambda mod, inp, out, n=n: acts.__setitem__(n, inp[0].detach().flatten(1)))
                 for n, m in layers.items()]
        with torch.no_grad():
            model(x)
        for h in hooks:
            h.remove()
        basis = {}
        for name, a in acts.items():  # a: (N, in)
            u, s, _ = torch.linalg.svd(a.T.float(), full_matrices=False)  # u: (in, r)
            energy = (s**2).cumsum(0) / (s**2).sum().clamp_min(1e-12)
            k = int((energy < self.threshold).sum()) + 1
            basis[name] = u[:, :k]
        grads = {n: torch.zeros_like(m.weight) for n, m in layers.items()}
        model.zero_grad()
        for i, batch in enumerate(batches(task.train, 64, self.generator)):
            if i >= 10:
                break
            ContinualMethod.objective(self, model, batch, task).backward()
        for n, m in layers.items():
            if m.weight.grad is not None:
                grads[n] = m.weight.grad.detach().clone()
        model.zero_grad()
        self.bases.append(basis)
        self.old_grads.append(grads)
