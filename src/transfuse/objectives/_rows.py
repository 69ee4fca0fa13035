"""Logits as rows (N, C) for the per-batch objectives (DIST, SKD): token logits keep counted tokens."""
from __future__ import annotations

from torch import Tensor

from ..signals import Batch, Outputs


def logit_rows(student: Outputs, teacher: Outputs, batch: Batch) -> tuple[Tensor, Tensor]:
    """(student, teacher) float32 logits (N, C): (B, C) as is; (B, T, V) -> the counted tokens."""
    if teacher.logits is None:
        raise ValueError("this objective needs the teacher's full logits (a top-k cache is not enough)")
    s = student.logits.float()
    t = teacher.logits.detach().float()[..., : s.shape[-1]]
    if s.dim() == 2:
        return s, t
    if batch.mask is not None and batch.mask.shape == s.shape[:-1]:
        keep = batch.mask.bool()
        return s[keep], t[keep]  # (N, V)
    return s.reshape(-1, s.shape[-1]), t.reshape(-1, s.shape[-1])
