"""Forward KL over tokens: the teacher's distribution against the student's (mean seeking)."""
from __future__ import annotations

from torch import Tensor

from ..signals import Batch, Outputs
from . import Objective, objectives
from ._functional import kl_from_logprobs, set_token_options, token_pair, token_reduce


@objectives.register("forward_kl")
class ForwardKL(Objective):
    """T^2 KL(p_t^T || p_s^T) per token, masked mean (survey of LLM KD, Xu et al. 2024; DistiLLM/TAID `fkl`).

    Accepts a dense teacher (logits) or a sparse top-k teacher (see ``pair_logprobs``).
    Peer conventions (``_functional.REDUCTIONS`` / ``SUPPORTS``): ``reduction`` (TRL's batchmean,
    sum, mean, num_items_in_batch; default the token mean), ``t_squared`` (the T^2 factor),
    ``support`` / ``top_k`` / ``tail`` (TRL's sparse supports). TRL's GKD with beta=0 is this with
    ``t_squared=False``.
    """

    is_divergence = True
    supports_tokens = True

    def __init__(self, *, temperature: float = 1.0, reduction: str = "token_mean", t_squared: bool = True,
                 support: str = "auto", top_k: int = 0, tail: bool = True) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError("forward_kl temperature must be > 0")
        self.temperature = temperature
        set_token_options(self, "forward_kl", reduction=reduction, t_squared=t_squared, support=support, top_k=top_k, tail=tail)

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        s, t = token_pair(self, student, teacher)  # (B, [T,] S)
        return token_reduce(self, kl_from_logprobs(t, s), batch, s.shape[-1])  # per position (B,) or (B, T)
