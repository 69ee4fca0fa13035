"""Knowledge distillation via a token-level relationship graph (TRG)."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..signals import Batch, Outputs
from . import Objective, objectives
from ._features import PENULTIMATE, hidden, penultimate_width, teacher_model, tokens
from ._functional import cross_entropy, kl


def _match_tokens(s: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """Pool the longer token axis so both have min(N_s, N_t) tokens. (B, N, D) each."""
    n = min(s.shape[1], t.shape[1])
    pool = lambda x: x if x.shape[1] == n else F.adaptive_avg_pool1d(x.transpose(1, 2), n).transpose(1, 2)  # noqa: E731
    return pool(s), pool(t)


@objectives.register("trg")
class TokenRelationGraphKD(Objective):
    """Zhang et al. 2023, KD via Token-level Relationship Graph (arXiv 2306.12442): node alignment + edge (token similarity graph) alignment + token-wise contextual loss, on top of KD; followed the abstract (no code found), so the exact terms below are this library's reading.

    Tokens are the features at ``student_layer`` / ``teacher_layer`` taken by forward hooks:
    (B, D, H, W) CNN cells or (B, N, D) ViT tokens ((B, D) is one token). A linear projector owned
    by the objective (saved in checkpoints) maps student tokens to the teacher width.
    node: MSE of L2-normalised tokens; edge: MSE between the cosine-similarity graphs over all
    tokens of the batch (at most ``max_nodes``, evenly strided); context: per instance,
    KL(softmax(sim_t / tau) || softmax(sim_s / tau)) over its own tokens.
    Total: (1 - alpha) CE + alpha T^2 KL + node_weight node + edge_weight edge + context_weight context.
    """

    def __init__(self, *, alpha: float = 0.9, temperature: float = 4.0, node_weight: float = 1.0, edge_weight: float = 1.0,
                 context_weight: float = 1.0, tau: float = 0.1, student_layer: str = PENULTIMATE, teacher_layer: str = PENULTIMATE,
                 teacher_dim: int = 0, max_nodes: int = 512) -> None:
        super().__init__()
        self.alpha, self.temperature, self.tau, self.max_nodes = alpha, temperature, tau, max_nodes
        self.node_weight, self.edge_weight, self.context_weight = node_weight, edge_weight, context_weight
        self.student_features, self.teacher_features = (student_layer,), (teacher_layer,)
        self.teacher_dim = teacher_dim
        self.projector = nn.LazyLinear(teacher_dim) if teacher_dim else None

    def bind(self, student: nn.Module, teacher: Optional[nn.Module] = None) -> None:
        model = teacher_model(teacher)
        if self.projector is None and model is not None and self.teacher_features == (PENULTIMATE,):
            self.teacher_dim = penultimate_width(model)
            self.projector = nn.LazyLinear(self.teacher_dim)

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        if self.projector is None:
            raise ValueError("trg needs teacher_dim (the teacher feature width) or bind(student, teacher=model)")
        h_s = tokens(hidden(student, self.student_features[0], objective="trg")).float()  # (B, N_s, D_s)
        h_t = tokens(hidden(teacher, self.teacher_features[0], objective="trg", side="teacher")).detach().float()  # (B, N_t, D_t)
        h_s, h_t = _match_tokens(self.projector(h_s), h_t)
        z_s, z_t = F.normalize(h_s, dim=-1), F.normalize(h_t, dim=-1)
        node = ((z_s - z_t) ** 2).sum(-1).mean()
        flat_s, flat_t = z_s.flatten(0, 1), z_t.flatten(0, 1)  # (B N, D)
        if flat_s.shape[0] > self.max_nodes:
            pick = torch.linspace(0, flat_s.shape[0] - 1, self.max_nodes, device=flat_s.device).long()
            flat_s, flat_t = flat_s[pick], flat_t[pick]
        edge = ((flat_s @ flat_s.T - flat_t @ flat_t.T) ** 2).mean()
        context = h_s.new_zeros(())
        if z_s.shape[1] > 1:
            sim_s = z_s @ z_s.transpose(1, 2) / self.tau  # (B, N, N)
            sim_t = z_t @ z_t.transpose(1, 2) / self.tau
            context = kl(sim_t, sim_s).mean()
        soft = kl(teacher.logits.detach(), student.logits, self.temperature).mean() * self.temperature**2
        loss = self.alpha * soft + self.node_weight * node + self.edge_weight * edge + self.context_weight * context
        if batch.labels is not None and self.alpha < 1:
            loss = loss + (1 - self.alpha) * cross_entropy(student.logits, batch.labels)
        return loss
