"""CUBER: continual learning with backward knowledge transfer (Lin et al., NeurIPS 2022), no official code.

Gradient projection memory (GPM, Saha et al. 2021) keeps, for every hidden Linear layer and every
finished task j, a basis M_j (in, k_j) of the inputs the layer saw on task j (SVD of the activations,
the directions holding ``threshold`` of their energy). Training task t projects each layer's weight
gradient g (out, in) off span(M_j), except where layer l of task t is *strongly positively
correlated* with task j; then CUBER keeps the part of g inside span(M_j), which is where its
backward transfer comes from. The correlation is decided once per (layer, old task) at the start of
task t from task t's first gradient g_t, as the paper does: the projection of g_t on span(M_j)
holds at least ``strong`` of its norm (a strong projection) and points the same way as task j's
own descent direction there (positive correlation).
Followed: the per-layer, per-task two-condition test, fixed for the whole task, and the projection.
Optimiser: SGD with momentum (``sgd_lr``), as GPM and CUBER train; an adaptive optimiser would undo the projection.
Simplified: task j's descent direction is its accumulated update W_end - W_start over task j
(the paper uses a first-order estimate of task j's gradient inside a trust region); the output
layer is projected only when the tasks share their classes (GPM and CUBER use one head per task); biases learn on
task 0 only (GPM's layers have no bias).
"""
from __future__ import annotations

from typing import Dict, List, Optional

import torch
from torch import Tensor, nn

from ...errors import TransfuseError
from .._base import ContinualMethod, batches
from ..streams import Task
from . import methods


@methods.register("cuber")
class CUBER(ContinualMethod):
    """CUBER (Lin et al. 2022): gradient projection that keeps updates inside old tasks' subspaces when they help those tasks."""

    def __init__(self, *, threshold: float = 0.97, samples: int = 300, strong: float = 0.5, sgd_lr: float = 0.05,
                 momentum: float = 0.9, project_head: Optional[bool] = None) -> None:
        if not 0.0 < threshold < 1.0:
            raise TransfuseError(f"cuber threshold must be in (0, 1); got {threshold}")
        if not 0.0 <= strong <= 1.0:
            raise TransfuseError(f"cuber strong (the projection-norm ratio of a strong projection) must be in [0, 1]; got {strong}")
        self.threshold = threshold
        self.samples = samples
        self.strong = strong
        self.sgd_lr, self.momentum = sgd_lr, momentum
        self.project_head = project_head
        self.bases: List[Dict[str, Tensor]] = []  # per finished task: layer name -> (in, k)
        self.descents: List[Dict[str, Tensor]] = []  # per finished task: layer name -> (out, in)
        self.keep: Dict[str, List[bool]] = {}  # this task: layer name -> per old task, keep its subspace
        self.kept: List[int] = []  # per task: how many (layer, old task) subspaces were kept (diagnostic)

    def optimizer(self, params: List[nn.Parameter], lr: float) -> torch.optim.Optimizer:
        # SGD as GPM and CUBER use: Adam's per-coordinate scaling would turn a projected gradient
        # back into old tasks' subspaces (the run's lr is Adam's; sgd_lr is this method's own)
        return torch.optim.SGD(params, lr=self.sgd_lr, momentum=self.momentum)

    def _hidden_linears(self, model: nn.Module) -> Dict[str, nn.Linear]:
        found = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
        if len(found) < 2:
            raise TransfuseError("cuber projects the gradients of hidden nn.Linear layers; this model needs at least two Linear layers")
        if self._head_projected():
            return found
        last = list(found)[-1]  # the output head: per-task rows, not projected
        return {n: m for n, m in found.items() if n != last}

    def _head_projected(self) -> bool:
        """Project the output head too when the tasks share their classes (domain-incremental), where a
        free head would forget; with disjoint classes its rows are the per-task heads GPM leaves free."""
        if self.project_head is not None:
            return self.project_head
        classes = [set(t.classes.tolist()) for t in self.stream.tasks]
        return all(c == classes[0] for c in classes)

    def _first_gradients(self, model: nn.Module, task: Task) -> Dict[str, Tensor]:
        model.zero_grad()
        for i, batch in enumerate(batches(task.train, 64, self.generator)):
            if i >= 4:
                break
            ContinualMethod.objective(self, model, batch, task).backward()
        grads = {n: m.weight.grad.detach().clone() for n, m in self._hidden_linears(model).items() if m.weight.grad is not None}
        model.zero_grad()
        return grads

    def before_task(self, model: nn.Module, task: Task) -> None:
        layers = self._hidden_linears(model)
        self.start = {n: m.weight.detach().clone() for n, m in layers.items()}
        self.keep = {}
        self.kept.append(0)
        if not self.bases:
            return
        g_t = self._first_gradients(model, task)
        for name in layers:
            g = g_t.get(name)
            flags = []
            for basis, descent in zip(self.bases, self.descents):
                M = basis[name]  # (in, k)
                if g is None:
                    flags.append(False)
                    continue
                inside = g @ M @ M.T  # (out, in): the part of g_t in task j's input space
                strong = float(inside.norm()) >= self.strong * float(g.norm().clamp_min(1e-12))
                # descending on t also descends on j: -g_t and task j's descent direction agree inside span(M_j)
                positive = float((-inside * (descent[name] @ M @ M.T)).sum()) > 0.0
                flags.append(strong and positive)
            self.keep[name] = flags
            self.kept[-1] += sum(flags)

    def after_backward(self, model: nn.Module, task: Task) -> None:
        if not self.bases:
            return
        for name, layer in self._hidden_linears(model).items():
            g = layer.weight.grad
            if g is None:
                continue
            if layer.bias is not None and layer.bias.grad is not None:
                layer.bias.grad.zero_()
            removed = torch.zeros_like(g)
            for basis, keep in zip(self.bases, self.keep[name]):
                if not keep:
                    M = basis[name]  # (in, k)
                    removed += g @ M @ M.T
            layer.weight.grad.sub_(removed)

    def _new_directions(self, act: Tensor, earlier: List[Tensor]) -> Tensor:
        """GPM's basis update: directions of ``act`` (in, N) that the earlier, mutually orthogonal bases
        do not hold, added until ``threshold`` of the activations' energy is covered; (in, k), k >= 0.
        Task bases stay orthogonal to each other, so projecting off several of them never overshoots."""
        total = max(float((act**2).sum()), 1e-12)
        union = torch.cat(earlier, 1) if earlier else act.new_zeros(act.shape[0], 0)  # (in, K)
        residual = act - union @ (union.T @ act)  # (in, N)
        covered = 1.0 - float((residual**2).sum()) / total
        if covered >= self.threshold:
            return act.new_zeros(act.shape[0], 0)
        u, s, _ = torch.linalg.svd(residual, full_matrices=False)  # u: (in, r)
        gained = covered + (s**2).cumsum(0) / total
        k = min(int((gained < self.threshold).sum()) + 1, len(s))
        return u[:, :k]

    def after_task(self, model: nn.Module, task: Task) -> None:
        layers = self._hidden_linears(model)
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
            basis[name] = self._new_directions(a.T.float(), [b[name] for b in self.bases])  # (in, k_j)
        self.bases.append(basis)
        self.descents.append({n: (m.weight.detach() - self.start[n]) for n, m in layers.items()})
