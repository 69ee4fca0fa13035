"""TGeo-KD: a learned per-sample fusion ratio between KD and CE from trilateral geometry."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from ..signals import Batch, Outputs
from . import Objective, objectives
from ._adam import BufferAdam, step_parts
from ._functional import kl


@objectives.register("tgeo")
class TrilateralGeometryKD(Objective):
    """Hu et al. 2024, Less or More From Teacher: Exploiting Trilateral Geometry for KD (TGeo-KD): L = a_i T^2 KL + (1 - a_i) CE with a_i = MLP(relations of S, T, G and the teacher's class-mean prediction), the MLP trained bilevel on held-out data; followed the paper's abstract and html (no code found; the feature set and the one-step look-ahead are this library's reading).

    Features per sample (each of width C): p_s, p_t, g (one-hot), tbar_g (running mean of the
    teacher's probabilities over samples of class g, a buffer), p_s - p_t, p_t - g, p_s - g,
    p_t - tbar_g. a_i = sigmoid(MLP) is used detached in the student's loss. Every ``meta_every``
    calls in training, a look-ahead step w' = w - inner_lr grad_w L(w, a) is taken through
    ``torch.func.functional_call`` on the bound student, and the MLP moves (its own Adam with moments
    in buffers, lr ``meta_lr``) to lower CE(f(x_val; w')) on the held-out batch from ``set_held_out`` (the current
    batch when none was given). Unlabelled samples get a_i = 1 (KL only).
    """

    def __init__(self, *, temperature: float = 4.0, hidden: int = 64, meta_lr: float = 1e-3, inner_lr: float = 0.1, meta_every: int = 1) -> None:
        super().__init__()
        self.temperature, self.inner_lr, self.meta_every = temperature, inner_lr, meta_every
        self.mlp = nn.Sequential(nn.LazyLinear(hidden), nn.ReLU(), nn.Linear(hidden, 1))
        nn.init.zeros_(self.mlp[2].weight)
        nn.init.constant_(self.mlp[2].bias, 2.2)  # a ~ 0.9 at the start, like kd's alpha
        self.meta_lr = meta_lr
        self.adam = BufferAdam(lr=meta_lr)  # its moments are buffers: checkpoints carry them
        self._student: list = []
        self._held_out: Optional[tuple] = None
        self.register_buffer("class_mean", torch.zeros(0, 0))  # (C, C) teacher probabilities per class
        self.register_buffer("class_count", torch.zeros(0))
        self.register_buffer("calls", torch.tensor(0, dtype=torch.long))
        self.register_buffer("last_ratio", torch.tensor(0.0))

    def bind(self, student: nn.Module, teacher: Optional[nn.Module] = None) -> None:
        self._student = [student]  # a plain list: not a submodule, not in this state_dict

    def set_held_out(self, inputs: Tensor, labels: Tensor) -> None:
        """The held-out batch the fusion-ratio network is trained on (bilevel outer loss)."""
        self._held_out = (inputs, labels)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("class_mean", "class_count"):
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _features(self, p_s: Tensor, p_t: Tensor, labels: Tensor) -> Tensor:
        g = F.one_hot(labels.clamp_min(0), p_s.shape[-1]).float()
        tbar = self.class_mean[labels.clamp_min(0)]
        return torch.cat([p_s, p_t, g, tbar, p_s - p_t, p_t - g, p_s - g, p_t - tbar], -1)  # (B, 8C)

    def ratio(self, s_logits: Tensor, t_logits: Tensor, labels: Tensor) -> Tensor:
        """a_i in (0, 1) per sample. (B,)"""
        feats = self._features(s_logits.float().softmax(-1), t_logits.float().softmax(-1), labels)
        return torch.sigmoid(self.mlp(feats)).squeeze(-1)

    def _losses(self, s_logits: Tensor, t_logits: Tensor, labels: Tensor, a: Tensor) -> Tensor:
        soft = kl(t_logits, s_logits, self.temperature) * self.temperature**2  # (B,)
        hard = F.cross_entropy(s_logits.float(), labels.clamp_min(0), reduction="none")
        labelled = labels >= 0
        return torch.where(labelled, a * soft + (1 - a) * hard, soft).mean()

    def _update_class_mean(self, t_logits: Tensor, labels: Tensor) -> None:
        c = t_logits.shape[-1]
        if self.class_mean.shape != (c, c):
            self.class_mean, self.class_count = torch.zeros(c, c, device=t_logits.device), torch.zeros(c, device=t_logits.device)
        keep = labels >= 0
        if bool(keep.any()):
            probs, y = t_logits[keep].float().softmax(-1), labels[keep]
            self.class_count.index_add_(0, y, torch.ones_like(y, dtype=torch.float))
            sums = torch.zeros_like(self.class_mean).index_add_(0, y, probs)
            counts = torch.bincount(y, minlength=c).float().unsqueeze(-1)
            # running mean over all samples seen: m += (sum - count m) / total
            self.class_mean += (sums - counts * self.class_mean) / self.class_count.clamp_min(1).unsqueeze(-1)

    def _meta_step(self, batch: Batch, t_logits: Tensor, labels: Tensor) -> None:
        student = self._student[0]
        params = {k: v for k, v in student.named_parameters() if v.requires_grad}
        s_logits = functional_call(student, params, (batch.inputs,))
        a = self.ratio(s_logits.detach(), t_logits, labels)
        inner = self._losses(s_logits, t_logits, labels, a)
        grads = torch.autograd.grad(inner, list(params.values()), create_graph=True, allow_unused=True)
        fast = {k: v if g is None else v - self.inner_lr * g for (k, v), g in zip(params.items(), grads)}
        x_val, y_val = self._held_out if self._held_out is not None else (batch.inputs, labels)
        outer = F.cross_entropy(functional_call(student, fast, (x_val,)).float(), y_val.clamp_min(0))
        step_parts(self.adam, list(self.mlp.parameters()), outer)  # grads to the MLP only, never .grad

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        t_logits = teacher.logits.detach()
        labels = batch.labels if batch.labels is not None else torch.full(t_logits.shape[:1], -1, device=t_logits.device)
        self._update_class_mean(t_logits, labels)
        if self.training and self._student and int(self.calls) % self.meta_every == 0 and bool((labels >= 0).any()):
            with torch.enable_grad():
                self._meta_step(batch, t_logits, labels)
        self.calls += 1
        with torch.no_grad():
            a = self.ratio(student.logits.detach(), t_logits, labels)
        self.last_ratio.fill_(float(a.mean()))
        return self._losses(student.logits, t_logits, labels, a)
