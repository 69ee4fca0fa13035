"""What the LM recipe logs per step beside the loss: the forward KL from the teacher to the student.

KL(teacher || student) per counted token (the quantity TRL / DistillKit users watch), from whatever
the step already has: full logits of both, the teacher's top-k cache (then on its K + 1 buckets, a
lower bound of the dense KL: ``objectives._functional.pair_logprobs``) or, for the chunked loss,
final hidden states and output layers, a chunk of tokens at a time so no (B, T, V) tensor is formed.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import Tensor, nn

from ..objectives._functional import kl_from_logprobs, pair_logprobs
from ..signals import Batch, Outputs


def _logits(hidden: Tensor, head: nn.Module, vocab: Optional[int]) -> Tensor:
    """(n, D) hidden states -> (n, V) float32 logits through an output layer (cut to ``vocab`` rows)."""
    w = head.weight if vocab is None else head.weight[:vocab]
    b = getattr(head, "bias", None)
    out = hidden.float() @ w.float().t()
    return out if b is None else out + (b if vocab is None else b[:vocab]).float()


class TeacherKL:
    """``measure(student_out, teacher_out, batch) -> {"kl_to_teacher": mean over counted tokens}`` (no grad).

    student_head / teacher_head: the output layers, needed when the outputs carry hidden states
    (``hidden["last"]``, the chunked loss) instead of logits.
    """

    def __init__(self, *, student_head: Optional[nn.Module] = None, teacher_head: Optional[nn.Module] = None,
                 vocab_size: Optional[int] = None, chunk_size: int = 1024, temperature: float = 1.0) -> None:
        self.student_head, self.teacher_head = student_head, teacher_head
        self.vocab_size, self.chunk_size, self.temperature = vocab_size, chunk_size, temperature

    @torch.no_grad()
    def __call__(self, student: Outputs, teacher: Optional[Outputs], batch: Batch) -> Dict[str, float]:
        if teacher is None:
            return {}
        keep = batch.mask.bool() if batch.mask is not None else None
        s_all = student.logits if student.logits is not None else student.hidden.get("last")
        if s_all is None or keep is None:
            return {}
        if not bool(keep.any()):  # (the same keys on every process: the loop averages them over processes)
            return {"kl_to_teacher": 0.0}
        s_rows = s_all[keep]  # (n, V) logits or (n, D) hidden states
        t_rows = {}
        if teacher.logits is not None:
            t_rows["logits"] = teacher.logits[keep]
        elif teacher.topk_logprobs is not None:
            t_rows["topk_logprobs"], t_rows["topk_indices"] = teacher.topk_logprobs[keep], teacher.topk_indices[keep]
        elif "last" in teacher.hidden and self.teacher_head is not None:
            t_rows["hidden"] = teacher.hidden["last"][keep]
        else:
            return {}
        total = 0.0
        for s in range(0, s_rows.shape[0], self.chunk_size):
            sl = slice(s, s + self.chunk_size)
            s_logits = s_rows[sl].float() if student.logits is not None else _logits(s_rows[sl], self.student_head, self.vocab_size)
            if "hidden" in t_rows:
                t_out = Outputs(logits=_logits(t_rows["hidden"][sl], self.teacher_head, self.vocab_size))
            elif "logits" in t_rows:
                t_out = Outputs(logits=t_rows["logits"][sl].float())
            else:
                t_out = Outputs(topk_logprobs=t_rows["topk_logprobs"][sl], topk_indices=t_rows["topk_indices"][sl])
            s_lp, t_lp = pair_logprobs(Outputs(logits=s_logits), t_out, self.temperature)  # (n, V) or (n, K + 1)
            total += float(kl_from_logprobs(t_lp, s_lp).sum())
        return {"kl_to_teacher": total / int(keep.sum())}
