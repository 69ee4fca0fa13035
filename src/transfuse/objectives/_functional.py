"""Shared math of the objectives: divergences between logits, masked means.

Softmax runs in float32. ``logits`` have the class/vocabulary axis last: (B, C) or (B, T, V).
Per-position results have the leading shape (B,) or (B, T).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor


def log_softmax(logits: Tensor, temperature: float = 1.0) -> Tensor:
    return F.log_softmax(logits.float() / temperature, dim=-1)


def kl_from_logprobs(target_logp: Tensor, model_logp: Tensor) -> Tensor:
    """KL(target || model) per position, from log-probabilities. (..., V) -> (...)."""
    return (target_logp.exp() * (target_logp - model_logp)).sum(-1)


def kl(target_logits: Tensor, model_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """KL(softmax(target/T) || softmax(model/T)) per position. (..., V) -> (...)."""
    return kl_from_logprobs(log_softmax(target_logits, temperature), log_softmax(model_logits, temperature))


def generalized_jsd(student_logits: Tensor, teacher_logits: Tensor, beta: float, temperature: float = 1.0) -> Tensor:
    """beta KL(p_t || m) + (1-beta) KL(p_s || m), m = beta p_t + (1-beta) p_s (GKD, Agarwal et al. 2024).

    beta=0 and beta=1 give zero for every input, so they are refused (use forward/reverse KL).
    """
    if not 0.0 < beta < 1.0:
        raise ValueError("jsd needs 0 < beta < 1; beta 0 or 1 makes the divergence vanish (use kd or reverse_kl)")
    s = log_softmax(student_logits, temperature)  # (..., V)
    t = log_softmax(teacher_logits, temperature)
    m = torch.logsumexp(torch.stack([t + torch.log(torch.tensor(beta)), s + torch.log(torch.tensor(1 - beta))]), dim=0)
    return beta * kl_from_logprobs(t, m) + (1 - beta) * kl_from_logprobs(s, m)


def masked_mean(values: Tensor, mask: Optional[Tensor]) -> Tensor:
    """Mean of ``values`` (B,) or (B, T) over positions where ``mask`` is true (all when None)."""
    if mask is None:
        return values.mean()
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


def position_mask(batch_mask: Optional[Tensor], values: Tensor) -> Optional[Tensor]:
    """The batch's token mask when ``values`` are per token, else None (all samples count)."""
    if batch_mask is not None and batch_mask.shape == values.shape:
        return batch_mask.bool()
    return None


def cross_entropy(logits: Tensor, labels: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Mean cross-entropy over positions whose label is >= 0 (unlabelled samples use -1, tokens -100).

    Zero (with a gradient path) when no position in the batch has a label.
    """
    flat_logits = logits.float().reshape(-1, logits.shape[-1])
    flat_labels = labels.reshape(-1)
    keep = flat_labels >= 0
    if not bool(keep.any()):
        return flat_logits.sum() * 0.0
    return F.cross_entropy(flat_logits[keep], flat_labels[keep], label_smoothing=label_smoothing)


def pair_logprobs(student, teacher, temperature: float = 1.0) -> tuple[Tensor, Tensor]:
    """Student and teacher log-probabilities on a common support, from ``Outputs``.

    Dense teacher (``teacher.logits``): both log_softmax(z / T) over the vocabulary, (..., V).
    Sparse teacher (``teacher.topk_logprobs`` / ``topk_indices`` (..., K), log-probabilities
    at the cache's temperature): both distributions are coarse-grained to K + 1 buckets, the
    teacher's top-k tokens and one bucket for the rest of the vocabulary; the teacher's rest
    is 1 - sum of its top-k probabilities, the student's is its exact mass off the top-k
    tokens. Every f-divergence (KL either way, JSD, TVD) on the buckets equals the dense one
    when the rest is 0 and is a lower bound otherwise (data-processing inequality); the
    student's tail keeps its own shape and only its total mass is pulled to the teacher's.
    The teacher's side is detached: no gradient reaches it.
    """
    s_all = log_softmax(student.logits, temperature)  # (..., V)
    if teacher.logits is not None:
        return s_all, log_softmax(teacher.logits.detach()[..., : s_all.shape[-1]], temperature)
    if teacher.topk_logprobs is None or teacher.topk_indices is None:
        raise ValueError("the teacher gave neither logits nor top-k log-probabilities")
    idx = teacher.topk_indices.long()  # (..., K)
    t_top = teacher.topk_logprobs.detach().float()  # (..., K)
    s_top = s_all.gather(-1, idx)  # (..., K)
    s_rest = torch.logsumexp(s_all.scatter(-1, idx, float("-inf")), dim=-1, keepdim=True)  # (..., 1)
    t_rest_p = 1.0 - t_top.double().exp().sum(-1, keepdim=True)
    t_rest = torch.log(t_rest_p.clamp_min(1e-30)).float()  # (..., 1)
    return torch.cat([s_top, s_rest.clamp_min(-69.0)], -1), torch.cat([t_top, t_rest], -1)  # (..., K+1)
