"""Reverse KL: the student's distribution against the teacher's (mode seeking)."""
from __future__ import annotations

from torch import Tensor

from ..signals import Batch, Outputs
from . import Objective, objectives
from ._functional import kl_from_logprobs, set_token_options, token_pair, token_reduce


@objectives.register("reverse_kl")
class ReverseKL(Objective):
    """T^2 KL(p_s^T || p_t^T), mode-seeking (survey of LLM KD, Xu et al. 2024; MiniLLM).

    Peer conventions as ``forward_kl`` (reduction, t_squared, support/top_k/tail); TRL's GKD with
    beta=1 is this with ``t_squared=False`` (and ``support="student_topk"`` for its top-k form).
    """

    supports_tokens = True

    def __init__(self, *, temperature: float = 1.0, reduction: str = "token_mean", t_squared: bool = True,
                 support: str = "auto", top_k: int = 0, tail: bool = True) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError("reverse_kl temperature must be > 0")
        self.temperature = temperature
        set_token_options(self, "reverse_kl", reduction=reduction, t_squared=t_squared, support=support, top_k=top_k, tail=tail)

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        s, t = token_pair(self, student, teacher)  # (B, [T,] S)
        return token_reduce(self, kl_from_logprobs(s, t), batch, s.shape[-1])  # per position (B,) or (B, T)
