"""Math the fusion rules share: weights as probabilities, and the log-linear (signed) mix."""
from __future__ import annotations

import torch
from torch import Tensor


def broadcast_weights(weights: Tensor, like: Tensor) -> Tensor:
    """(K,) weights shaped to multiply (K, B, V) log-probs, in float32."""
    return weights.to(device=like.device, dtype=torch.float32).view(-1, *([1] * (like.dim() - 1)))


def probability_weights(weights: Tensor) -> Tensor:
    """Non-negative weights scaled to sum 1."""
    return weights.to(torch.float32) / weights.to(torch.float32).sum()


def log_linear(logprobs: Tensor, coefficients: Tensor) -> Tensor:
    """log_softmax(sum_k c_k log p_k): product of experts, proxy tuning and EFT are all this form.

    logprobs (K, B, V), coefficients (K,) (signed) -> (B, V). Subtracting two models' log-probs
    equals subtracting their logits up to a per-row constant, which the softmax removes.
    """
    mixed = (logprobs.float() * broadcast_weights(coefficients, logprobs)).sum(0)  # (B, V)
    return torch.log_softmax(mixed, dim=-1)
