"""Generalized Jensen-Shannon divergence."""
from __future__ import annotations

from torch import Tensor

from ..signals import Batch, Outputs
from . import Objective, objectives
from ._functional import generalized_jsd, kl_from_logprobs, set_token_options, token_pair, token_reduce


@objectives.register("jsd")
class GeneralizedJSD(Objective):
    """beta KL(p_t||m) + (1-beta) KL(p_s||m), m = beta p_t + (1-beta) p_s (GKD, Agarwal et al. 2024).

    As in TRL's GKD the logits are divided by the temperature with no T^2 factor (``t_squared``
    adds it). ``kl_at_endpoints=True`` accepts beta 0 and 1 with TRL's ``generalized_jsd_loss``
    meaning: beta=0 is KL(p_t||p_s), beta=1 is KL(p_s||p_t) (the plain formula vanishes there, so
    by default they are refused). ``reduction`` / ``support`` / ``top_k`` / ``tail``: TRL's
    reductions and sparse supports (``_functional.REDUCTIONS`` / ``SUPPORTS``; TRL's top-k JSD uses
    ``support="union"``).
    """

    supports_tokens = True

    def __init__(self, *, beta: float = 0.5, temperature: float = 1.0, kl_at_endpoints: bool = False,
                 reduction: str = "token_mean", t_squared: bool = False, support: str = "auto", top_k: int = 0,
                 tail: bool = True) -> None:
        super().__init__()
        lo_ok = kl_at_endpoints and beta in (0.0, 1.0)
        if not (0.0 < beta < 1.0 or lo_ok):
            raise ValueError("jsd beta must be strictly between 0 and 1 (or 0 / 1 with kl_at_endpoints=true: TRL's forward / reverse KL)")
        self.beta = beta
        self.temperature = temperature
        set_token_options(self, "jsd", reduction=reduction, t_squared=t_squared, support=support, top_k=top_k, tail=tail)

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        s, t = token_pair(self, student, teacher)  # (B, [T,] S) log-probs: their own log_softmax
        if self.beta == 0.0:
            per_position = kl_from_logprobs(t, s)  # (B,) or (B, T)
        elif self.beta == 1.0:
            per_position = kl_from_logprobs(s, t)
        else:
            per_position = generalized_jsd(s, t, self.beta)
        return token_reduce(self, per_position, batch, s.shape[-1])
