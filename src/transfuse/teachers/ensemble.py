"""Several teachers as one: a fusion rule over the members' outputs (multi-teacher distillation).

DESIGN: "multi-teacher distillation = a fusion rule over teachers, then an objective". Members
are teacher sources (live ``FrozenTeacher`` / ``LMTeacher`` or a cache of one teacher's logits),
so each keeps its own cache and a changed rule or weight reuses them. The fused signal is
log-probs, which every objective may read as logits (softmax(log p) = p).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

from torch import Tensor, nn

from ..errors import TransfuseError
from ..signals import Batch, Outputs, as_outputs


def _fused(outs: Sequence[Tensor], rule, weights: Tensor) -> Tensor:
    from ..fusion.apply import fuse_logits

    shapes = {tuple(o.shape) for o in outs}
    if len(shapes) != 1:
        raise TransfuseError(
            f"the ensemble's teachers give outputs of different shapes {sorted(shapes)}; "
            "give every member the same classes (or vocabulary)"
        )
    return fuse_logits(outs, rule, weights)  # (B, C) or (B, T, V)


class EnsembleTeacher:
    """A teacher source applying a fusion rule (``fusion.rules``) to its member sources' logits.

    members: teacher sources called with the batch; rule: a built ``FusionRule``; weights: (K,).
    Returns Outputs(logits=fused log-probs) of the members' shape ((B, C) or (B, T, V)).
    """

    def __init__(self, members: Sequence[Any], rule, weights: Optional[Sequence[float]] = None) -> None:
        from ..fusion.apply import check_weights, resolve_rule

        if not members:
            raise TransfuseError("an ensemble teacher needs at least one member; list them under teacher.ensemble")
        self.members = list(members)
        self.rule = resolve_rule(rule)
        self.weights = check_weights(weights, len(self.members), self.rule)
        if all(hasattr(m, "model") for m in self.members):  # all live: the loop treats it as a live teacher
            self.model = EnsembleModel([m.model for m in self.members], self.rule, self.weights)

    def to(self, device) -> "EnsembleTeacher":
        for m in self.members:
            if hasattr(m, "to"):
                m.to(device)
        return self

    def __call__(self, batch: Batch, features: Sequence[str] = ()) -> Outputs:
        if features:
            raise TransfuseError(
                f"an ensemble teacher has no single set of features {list(features)}; use an objective on logits (kd, dkd, ...)"
            )
        outs = [m(batch).logits for m in self.members]
        if any(o is None for o in outs):
            raise TransfuseError("an ensemble member gave no dense logits (a top-k cache?); use live members or logits caches")
        return Outputs(logits=_fused(outs, self.rule, self.weights))


class EnsembleModel(nn.Module):
    """K frozen models behind one forward: each member's logits, fused by the rule into log-probs.

    forward(*args, **kwargs) passes the same inputs to every member (images (B, ...), or
    input_ids / attention_mask for causal LMs) and returns Outputs(logits=fused log-probs).
    """

    def __init__(self, members: Sequence[nn.Module], rule, weights: Optional[Sequence[float]] = None) -> None:
        from ..fusion.apply import check_weights, resolve_rule

        super().__init__()
        self.members = nn.ModuleList(members)
        self.rule = resolve_rule(rule)
        self.register_buffer("weights", check_weights(weights, len(self.members), self.rule), persistent=False)

    def forward(self, *args: Any, **kwargs: Any) -> Outputs:
        outs = [as_outputs(m(*args, **kwargs)).logits for m in self.members]
        return Outputs(logits=_fused(outs, self.rule, self.weights))


__all__ = ["EnsembleTeacher", "EnsembleModel"]
