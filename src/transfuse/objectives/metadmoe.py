"""Meta-DMoE: domain experts, a learned aggregator and test-time adaptation of the student (Zhong et al. 2022)."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from ..errors import TransfuseError
from ..signals import Batch, Outputs
from . import Objective, objectives
from ._features import PENULTIMATE, capture, penultimate_width
from ._functional import cross_entropy


class Aggregator(nn.Module):
    """A small transformer over the experts' features: K tokens (B, K, width) -> one feature (B, D_student).

    Each expert's penultimate features get their own projection plus a learned expert embedding;
    masked experts (``drop`` True) are left out of attention and of the mean pooling.
    """

    def __init__(self, expert_widths: Sequence[int], student_width: int, num_classes: int, *, width: int, heads: int, layers: int) -> None:
        super().__init__()
        self.project = nn.ModuleList(nn.Linear(w, width) for w in expert_widths)
        self.expert_embedding = nn.Parameter(0.02 * torch.randn(len(expert_widths), width))
        layer = nn.TransformerEncoderLayer(width, heads, 2 * width, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.to_student = nn.Linear(width, student_width)
        self.head = nn.Linear(student_width, num_classes)  # the aggregator's own classifier (its supervised term)

    def forward(self, features: List[Tensor], drop: Tensor) -> Tensor:
        tokens = torch.stack([p(f) for p, f in zip(self.project, features)], 1) + self.expert_embedding  # (B, K, width)
        h = self.encoder(tokens, src_key_padding_mask=drop)  # (B, K, width)
        keep = (~drop).unsqueeze(-1).float()  # (B, K, 1)
        pooled = (h * keep).sum(1) / keep.sum(1).clamp_min(1.0)  # (B, width)
        return self.to_student(pooled)  # (B, D_student)


@objectives.register("metadmoe")
class MetaDMoE(Objective):
    """Zhong et al. 2022, Meta-DMoE: Adapting to Domain Shift by Meta-Distillation from Mixture-of-Experts,
    after the official code (n3il666/Meta-DMoE): frozen per-domain experts (``teacher.ensemble``, one
    per train domain, in the order of the ``domains`` data set's ``train`` list, live); an aggregator
    (:class:`Aggregator`) reads their penultimate features; per batch, the student's feature
    extractor takes ``inner_steps`` SGD steps (``inner_lr``) on the squared error between its
    penultimate features and the aggregated ones on the support part (no labels), and the adapted
    student's cross-entropy on the query part is the loss, backpropagated through the inner step
    (second-order MAML) into the student's initial weights and the aggregator. At test time
    (:meth:`test_time_adapt`) the student adapts the same way on each unlabelled test batch.

    What is simplified: the paper first pretrains the aggregator alone with cross-entropy and then
    meta-trains with one domain per batch; here both happen together (``aggregator_weight`` times
    the aggregator head's CE on the whole batch is added) on shuffled batches that mix domains, and
    the sample's own-domain expert is masked per sample (the code's ``mask_feat(exclude=True)``),
    reading its domain from the ``domains`` ids (``index % K``). The code adapts once per test domain
    on its first batch; here every test batch adapts from the trained weights (episodic). The
    student's loop forward on the batch is not used. One process: the inner step calls the plain
    student module, which DDP would not synchronise.
    """

    needs_teacher = False  # the experts are run here (their features, not the fused logits)
    #: the members of ``teacher.ensemble`` it reads (two or more; contract tests bind it to an ensemble of this many)
    teacher_members = (2, None)  # (fewest, most)

    def __init__(self, *, width: int = 64, heads: int = 4, layers: int = 1, inner_lr: float = 0.01, inner_steps: int = 1,
                 support_fraction: float = 0.5, exclude_own_domain: bool = True, aggregator_weight: float = 1.0) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"metadmoe width {width} must be a multiple of heads {heads}")
        if not 0.0 < support_fraction < 1.0:
            raise ValueError("metadmoe support_fraction must be in (0, 1): the batch splits into support and query")
        if inner_lr <= 0 or inner_steps < 1:
            raise ValueError("metadmoe needs inner_lr > 0 and inner_steps >= 1")
        self.width, self.heads, self.layers = width, heads, layers
        self.inner_lr, self.inner_steps, self.support_fraction = inner_lr, inner_steps, support_fraction
        self.exclude_own_domain, self.aggregator_weight = exclude_own_domain, aggregator_weight
        self.aggregator: Optional[Aggregator] = None
        self._models: list = []

    def bind(self, student: nn.Module, teacher: Optional[nn.Module] = None) -> None:
        experts = getattr(teacher, "members", None)
        if experts is None or len(experts) < 2:
            raise TransfuseError(
                "metadmoe needs its domain experts as live teachers: teacher.ensemble = [expert of train domain 0, "
                "expert of domain 1, ...] (two or more), each with cache: false"
            )
        classes = [m for m in student.modules() if isinstance(m, nn.Linear)][-1].out_features
        if self.aggregator is None:
            self.aggregator = Aggregator([penultimate_width(e) for e in experts], penultimate_width(student), classes,
                                         width=self.width, heads=self.heads, layers=self.layers)
        self._models = [student, list(experts)]

    # -- pieces ----------------------------------------------------------------------------------
    def expert_features(self, x: Tensor) -> List[Tensor]:
        """Each expert's penultimate features [(B, D_k)], without gradients."""
        out = []
        with torch.no_grad():
            for expert in self._models[1]:
                with capture(expert, [PENULTIMATE]) as store:
                    expert(x)
                out.append(store[PENULTIMATE].flatten(1).float())
        return out

    def own_domain_mask(self, batch: Batch, k: int) -> Tensor:
        """(B, K) True where an expert is the sample's own domain's (left out), from ``index % K``."""
        b = len(batch.inputs)
        if not self.exclude_own_domain or batch.index is None:
            return torch.zeros(b, k, dtype=torch.bool, device=batch.inputs.device)
        return F.one_hot(batch.index.long() % k, k).bool().to(batch.inputs.device)

    def adapt(self, params: Dict[str, Tensor], x: Tensor, target: Tensor, *, create_graph: bool) -> Dict[str, Tensor]:
        """``inner_steps`` SGD steps of the student's weights on mean((features(x) - target)^2); the head gets no gradient."""
        student = self._models[0]
        for _ in range(self.inner_steps):
            with capture(student, [PENULTIMATE]) as store:
                functional_call(student, params, (x,))
            loss = F.mse_loss(store[PENULTIMATE].flatten(1).float(), target)
            names = [n for n, p in params.items() if p.requires_grad]
            grads = torch.autograd.grad(loss, [params[n] for n in names], create_graph=create_graph, allow_unused=True)
            new = dict(params)
            for n, g in zip(names, grads):
                if g is not None:
                    new[n] = params[n] - self.inner_lr * g
            params = new
        return params

    # -- training ----------------------------------------------------------------------------------
    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        if self.aggregator is None or not self._models:
            raise ValueError("metadmoe: call objective.bind(student, teacher=EnsembleModel(experts)) first")
        if batch.labels is None:
            raise ValueError("metadmoe meta-trains on labelled samples (the query's cross-entropy)")
        model = self._models[0]
        x, y = batch.inputs, batch.labels
        feats = self.expert_features(x)  # K x (B, D_k)
        drop = self.own_domain_mask(batch, len(feats))  # (B, K)
        aggregated = self.aggregator(feats, drop)  # (B, D_s)
        n_sup = max(1, min(len(x) - 1, int(round(len(x) * self.support_fraction))))
        params = {n: p for n, p in model.named_parameters()}
        adapted = self.adapt(params, x[:n_sup], aggregated[:n_sup], create_graph=torch.is_grad_enabled())
        query_logits = functional_call(model, adapted, (x[n_sup:],))  # (B - n_sup, C)
        loss = cross_entropy(query_logits, y[n_sup:])
        if self.aggregator_weight:
            loss = loss + self.aggregator_weight * cross_entropy(self.aggregator.head(aggregated), y)
        return loss

    # -- test time ---------------------------------------------------------------------------------
    def test_time_adapt(self, student: nn.Module, data: Any, *, batch_size: int) -> Dict[str, float]:
        """Accuracy on ``data`` (an IndexedTensors) after adapting the student on each unlabelled batch
        (``tta_accuracy``), and the aggregator's own accuracy (``aggregator_accuracy``)."""
        if data is None or self.aggregator is None:
            return {}
        self._models[0] = student
        was = student.training, self.aggregator.training
        student.eval()
        self.aggregator.eval()
        correct = agg_correct = total = 0
        device = next(student.parameters()).device
        try:
            for start in range(0, len(data), batch_size):
                x = data.inputs[start : start + batch_size].to(device)
                y = data.labels[start : start + batch_size].to(device)
                feats = self.expert_features(x)
                with torch.no_grad():
                    target = self.aggregator(feats, torch.zeros(len(x), len(feats), dtype=torch.bool, device=device))  # (B, D_s)
                params = {n: p.detach().requires_grad_(True) for n, p in student.named_parameters()}
                adapted = self.adapt(params, x, target, create_graph=False)
                with torch.no_grad():
                    pred = functional_call(student, {n: p.detach() for n, p in adapted.items()}, (x,)).argmax(-1)
                    agg_pred = self.aggregator.head(target).argmax(-1)
                known = y >= 0
                correct += int((pred == y)[known].sum())
                agg_correct += int((agg_pred == y)[known].sum())
                total += int(known.sum())
        finally:
            student.train(was[0])
            self.aggregator.train(was[1])
        if total == 0:
            return {}
        return {"tta_accuracy": correct / total, "aggregator_accuracy": agg_correct / total}
