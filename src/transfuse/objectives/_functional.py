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
    flat_logits = logits.float() if logits.dim() == 2 else logits.float().reshape(-1, logits.shape[-1])  # (N, C)
    flat_labels = labels if labels.dim() == 1 else labels.reshape(-1)  # (N,)
    if flat_labels.numel() and int(flat_labels.min()) >= 0:  # every position labelled (one reduction, not three ops)
        return F.cross_entropy(flat_logits, flat_labels, label_smoothing=label_smoothing)  # no selection: same numbers
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
        t = teacher.logits.detach()  # (..., V'), V' >= V: a teacher with more classes is cut to the student's
        return s_all, log_softmax(t if t.shape[-1] == s_all.shape[-1] else t[..., : s_all.shape[-1]], temperature)
    if teacher.topk_logprobs is None or teacher.topk_indices is None:
        raise ValueError("the teacher gave neither logits nor top-k log-probabilities")
    idx = teacher.topk_indices.long()  # (..., K)
    t_top = teacher.topk_logprobs.detach().float()  # (..., K)
    s_top = s_all.gather(-1, idx)  # (..., K)
    s_rest = torch.logsumexp(s_all.scatter(-1, idx, float("-inf")), dim=-1, keepdim=True)  # (..., 1)
    t_rest_p = 1.0 - t_top.double().exp().sum(-1, keepdim=True)
    t_rest = torch.log(t_rest_p.clamp_min(1e-30)).float()  # (..., 1)
    return torch.cat([s_top, s_rest.clamp_min(-69.0)], -1), torch.cat([t_top, t_rest], -1)  # (..., K+1)


# -- peer conventions: TRL's reductions and sparse supports (issue 12) ------------------------------

#: ``reduction`` values of the token objectives. "token_mean" is transfuse's (the mean over the
#: counted positions); the others are TRL's ``generalized_jsd_loss`` reductions, for per-position
#: values already summed over the vocabulary: "batchmean" = sum / counted tokens (sum / B without a
#: mask), "sum", "mean" = sum / (counted positions x support width) (TRL's element mean),
#: "num_items_in_batch" = sum / ``batch.extra["num_items_in_batch"]`` (TRL's gradient-accumulation
#: normaliser). TRL's "none" (no reduction) is ``reduce_positions(..., "none")`` for direct use: an
#: objective must return a scalar.
REDUCTIONS = ("token_mean", "batchmean", "sum", "mean", "num_items_in_batch")

#: ``support`` values of the token objectives: where the divergence is computed.
#: "auto": the full vocabulary for a dense teacher, the teacher's top-k + one rest bucket for a
#: cached top-k teacher (``pair_logprobs``); "teacher_topk" / "student_topk" / "union": the top
#: ``top_k`` tokens of the teacher, of the student, or of both (TRL's GKD/IW-OPD and SDFT supports),
#: with a tail bucket holding the rest of each distribution's mass (``tail=True``) or renormalised on
#: the support (``tail=False``, TRL's ``add_tail=False``).
SUPPORTS = ("auto", "teacher_topk", "student_topk", "union")

_FAR = -1.0e4  # log-prob of an unused support slot: exp() is exactly 0 in float32, and finite


def check_token_options(name: str, *, reduction: str, support: str = "auto", top_k: int = 0) -> None:
    """Refuse unknown reduction / support values when the objective is built."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"{name} reduction must be one of {', '.join(REDUCTIONS)}; got {reduction!r}")
    if support not in SUPPORTS:
        raise ValueError(f"{name} support must be one of {', '.join(SUPPORTS)}; got {support!r}")
    if support != "auto" and top_k < 1:
        raise ValueError(f"{name} support={support!r} needs top_k >= 1 (the number of tokens kept); got {top_k}")


def reduce_positions(values: Tensor, mask: Optional[Tensor], reduction: str, *, width: int = 1,
                     num_items: Optional[float] = None) -> Tensor:
    """Reduce per-position values (B,) or (B, T) over the positions ``mask`` counts (see REDUCTIONS).

    ``width``: the support size the values were summed over (TRL's "mean" averages elements).
    "none" returns the counted positions' values, (N,).
    """
    if mask is not None:
        values = values[mask]  # (N,)
    if reduction == "token_mean":
        return values.mean() if values.numel() else values.sum()
    if reduction == "batchmean":
        denom = max(int(values.numel()), 1) if mask is not None else max(int(values.shape[0]), 1)
        return values.sum() / denom
    if reduction == "sum":
        return values.sum()
    if reduction == "mean":
        return values.sum() / max(int(values.numel()) * width, 1)
    if reduction == "num_items_in_batch":
        if num_items is None:
            raise ValueError('reduction "num_items_in_batch" needs batch.extra["num_items_in_batch"] (the counted tokens of the whole accumulated batch)')
        return values.sum() / float(num_items)
    if reduction == "none":
        return values
    raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)} or 'none'; got {reduction!r}")


def reduce_tokens(values: Tensor, batch, reduction: str, *, width: int = 1) -> Tensor:
    """``reduce_positions`` with the batch's token mask and ``num_items_in_batch``."""
    num = batch.extra.get("num_items_in_batch") if reduction == "num_items_in_batch" else None
    return reduce_positions(values, position_mask(batch.mask, values), reduction, width=width,
                            num_items=None if num is None else float(num))


def _with_tail(logp: Tensor) -> Tensor:
    """Append the bucket 1 - sum(exp(logp)) to log-probs over a partial support (TRL add_tail)."""
    total = torch.logsumexp(logp, dim=-1, keepdim=True).clamp(max=-1e-7)  # (..., 1)
    return torch.cat([logp, torch.log(-torch.expm1(total))], -1)


def support_logprobs(student, teacher, temperature: float = 1.0, *, support: str = "auto", top_k: int = 0,
                     tail: bool = True) -> tuple[Tensor, Tensor]:
    """Student and teacher log-probabilities on the support ``support`` names (see SUPPORTS).

    "auto" is ``pair_logprobs``. The others select ``top_k`` token ids per position from the
    tempered logits (the student's needs its logits, the teacher's its logits or its cached
    top-k), gather both log-probabilities there, and add a tail bucket or renormalise. For
    "union", ids the student adds that the teacher already chose are unused slots. (..., S).
    """
    if support == "auto":
        return pair_logprobs(student, teacher, temperature)
    s_all = log_softmax(student.logits, temperature)  # (..., V)
    if teacher.logits is not None:
        t_all = log_softmax(teacher.logits.detach()[..., : s_all.shape[-1]], temperature)  # (..., V)
        t_idx = t_all.topk(min(top_k, t_all.shape[-1]), dim=-1).indices if support != "student_topk" else None
    elif support == "teacher_topk" and teacher.topk_indices is not None:
        t_all, t_idx = None, teacher.topk_indices.long()[..., :top_k]
    else:
        raise ValueError(f"support={support!r} needs the teacher's full logits (a top-k cache gives only support='teacher_topk' or 'auto')")
    s_idx = s_all.detach().topk(min(top_k, s_all.shape[-1]), dim=-1).indices if support != "teacher_topk" else None
    if support == "union":
        idx = torch.cat([t_idx, s_idx], -1)  # (..., 2k)
        dup = (s_idx.unsqueeze(-1) == t_idx.unsqueeze(-2)).any(-1)  # (..., k) student ids the teacher has
        used = torch.cat([torch.ones_like(t_idx, dtype=torch.bool), ~dup], -1)  # (..., 2k)
    else:
        idx = t_idx if support == "teacher_topk" else s_idx  # (..., k)
        used = None
    s = s_all.gather(-1, idx)
    if t_all is not None:
        t = t_all.gather(-1, idx)
    else:  # cached top-k log-probs at the cache's temperature, in the cache's order
        t = teacher.topk_logprobs.detach().float()[..., :top_k]
    if used is not None:
        s, t = s.masked_fill(~used, _FAR), t.masked_fill(~used, _FAR)
    if tail:
        return _with_tail(s), _with_tail(t)
    return s - torch.logsumexp(s, -1, keepdim=True), t - torch.logsumexp(t, -1, keepdim=True)


def set_token_options(obj, name: str, *, reduction: str, t_squared: bool, support: str, top_k: int, tail: bool) -> None:
    """Check and keep the peer-convention options the token objectives share (REDUCTIONS, SUPPORTS)."""
    check_token_options(name, reduction=reduction, support=support, top_k=top_k)
    obj.reduction, obj.t_squared, obj.support, obj.top_k, obj.tail = reduction, t_squared, support, top_k, tail


def token_pair(obj, student, teacher) -> tuple[Tensor, Tensor]:
    """(student, teacher) log-probs (..., S) on ``obj``'s support at ``obj.temperature``."""
    return support_logprobs(student, teacher, obj.temperature, support=obj.support, top_k=obj.top_k, tail=obj.tail)


def token_reduce(obj, per_position: Tensor, batch, width: int) -> Tensor:
    """``obj``'s reduction of per-position values, times T^2 when ``obj.t_squared``."""
    loss = reduce_tokens(per_position, batch, obj.reduction, width=width)
    return loss * obj.temperature**2 if obj.t_squared else loss
