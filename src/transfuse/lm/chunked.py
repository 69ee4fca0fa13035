"""Token-level divergences computed a slice of tokens at a time from hidden states and the output layer.

Neither model's full (B, T, V) logits ever exist: for each chunk of counted tokens the student's
and the teacher's logits are formed from hidden states (N, D) and output weights (V, D), the
wrapped objective is evaluated, and its gradient with respect to the chunk's hidden states and
the output weights is taken right away (``mode="fused"``, as in Liger's fused linear losses:
no second forward) or recomputed in backward (``mode="checkpoint"``, torch.utils.checkpoint per
chunk). Peak extra memory is a few (chunk, V) float32 tensors plus one (V, D) gradient.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..objectives import Objective
from ..signals import Batch, Outputs


def _chunk_loss_sum(
    objective: Objective,
    s_hidden: Tensor,
    s_weight: Tensor,
    s_bias: Optional[Tensor],
    teacher: Tuple[Optional[Tensor], ...],
    labels: Optional[Tensor],
) -> Tensor:
    """Sum over the chunk's n tokens of the objective (which returns a mean). s_hidden (n, D)."""
    logits = s_hidden @ s_weight.t()  # (n, V)
    if s_bias is not None:
        logits = logits + s_bias
    t_hidden, t_weight, t_bias, t_lp, t_idx = teacher
    if t_hidden is not None:
        with torch.no_grad():
            t_logits = t_hidden @ t_weight.t()  # (n, V)
            if t_bias is not None:
                t_logits = t_logits + t_bias
            t_logits = t_logits[:, : logits.shape[-1]]
        t_out = Outputs(logits=t_logits.unsqueeze(0))
    elif t_lp is not None:
        t_out = Outputs(topk_logprobs=t_lp.unsqueeze(0), topk_indices=t_idx.unsqueeze(0))
    else:
        t_out = Outputs()
    n = logits.shape[0]
    chunk_batch = Batch(
        inputs=torch.zeros(1, n, dtype=torch.long, device=logits.device),
        labels=None if labels is None else labels.unsqueeze(0),
        mask=torch.ones(1, n, dtype=torch.bool, device=logits.device),
    )
    return objective(Outputs(logits=logits.unsqueeze(0)), t_out, chunk_batch) * n


class _FusedChunks(torch.autograd.Function):
    """Forward computes the loss and, chunk by chunk, its gradients; backward scales them."""

    @staticmethod
    def forward(ctx, s_hidden, s_weight, s_bias, objective, teacher_chunks, label_chunks, chunk, need_grad):
        total = torch.zeros((), dtype=torch.float32, device=s_hidden.device)
        g_hidden = torch.zeros_like(s_hidden) if need_grad[0] else None
        g_weight = torch.zeros_like(s_weight, dtype=torch.float32) if need_grad[1] else None
        g_bias = torch.zeros_like(s_bias, dtype=torch.float32) if (s_bias is not None and need_grad[2]) else None
        wants = [i for i, flag in enumerate(need_grad) if flag and not (i == 2 and s_bias is None)]
        for c, start in enumerate(range(0, s_hidden.shape[0], chunk)):
            h = s_hidden[start : start + chunk].detach().requires_grad_(need_grad[0])
            w = s_weight.detach().requires_grad_(need_grad[1])
            b = None if s_bias is None else s_bias.detach().requires_grad_(need_grad[2])
            with torch.enable_grad():
                value = _chunk_loss_sum(objective, h, w, b, teacher_chunks[c], label_chunks[c])
                if wants:
                    grads = torch.autograd.grad(value, [(h, w, b)[i] for i in wants], allow_unused=True)
                    for i, g in zip(wants, grads):
                        if g is None:
                            continue
                        if i == 0:
                            g_hidden[start : start + chunk] = g
                        elif i == 1:
                            g_weight += g
                        else:
                            g_bias += g
            total += value.detach()
        ctx.save_for_backward(*(g for g in (g_hidden, g_weight, g_bias) if g is not None))
        ctx.has = (g_hidden is not None, g_weight is not None, g_bias is not None)
        ctx.dtypes = (s_hidden.dtype, s_weight.dtype, None if s_bias is None else s_bias.dtype)
        return total

    @staticmethod
    def backward(ctx, grad_out):
        saved = list(ctx.saved_tensors)
        out = []
        for has, dtype in zip(ctx.has, ctx.dtypes):
            out.append((saved.pop(0) * grad_out).to(dtype) if has else None)
        g_h, g_w, g_b = out
        return g_h, g_w, g_b, None, None, None, None, None


def chunked_objective_sum(
    objective: Objective,
    *,
    student_hidden: Tensor,
    student_weight: Tensor,
    student_bias: Optional[Tensor] = None,
    teacher_hidden: Optional[Tensor] = None,
    teacher_weight: Optional[Tensor] = None,
    teacher_bias: Optional[Tensor] = None,
    topk_logprobs: Optional[Tensor] = None,
    topk_indices: Optional[Tensor] = None,
    labels: Optional[Tensor] = None,
    chunk_size: int = 1024,
    mode: str = "fused",
) -> Tensor:
    """Sum over N counted tokens of ``objective``'s per-token loss, chunk by chunk.

    student_hidden (N, D), student_weight (V, D); teacher_hidden (N, D'), teacher_weight (V', D')
    or topk_logprobs / topk_indices (N, K); labels (N,). Divide by N for the mean.
    """
    if mode not in ("fused", "checkpoint"):
        raise ValueError(f"chunked mode must be 'fused' or 'checkpoint', not {mode!r}")
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    n = student_hidden.shape[0]
    starts = range(0, n, chunk_size)

    def sl(t: Optional[Tensor], s: int) -> Optional[Tensor]:
        return None if t is None else t[s : s + chunk_size]

    teacher_chunks: List[Tuple] = [
        (sl(teacher_hidden, s), teacher_weight, teacher_bias, sl(topk_logprobs, s), sl(topk_indices, s)) for s in starts
    ]
    label_chunks = [sl(labels, s) for s in starts]
    if mode == "checkpoint":
        total = student_hidden.new_zeros((), dtype=torch.float32)
        for c, s in enumerate(starts):
            total = total + checkpoint(
                _chunk_loss_sum, objective, student_hidden[s : s + chunk_size], student_weight, student_bias,
                teacher_chunks[c], label_chunks[c], use_reentrant=False,
            )
        return total
    grad_on = torch.is_grad_enabled()
    need = (
        grad_on and student_hidden.requires_grad,
        grad_on and student_weight.requires_grad,
        grad_on and student_bias is not None and student_bias.requires_grad,
    )
    return _FusedChunks.apply(
        student_hidden, student_weight, student_bias, objective, teacher_chunks, label_chunks, chunk_size, need
    )


class ChunkedLMObjective(Objective):
    """Wraps a token objective so it runs from hidden states chunk by chunk (see module docstring).

    The student's Outputs carry ``hidden["last"]`` (B, T, D) (logits None); the teacher's carry
    ``hidden["last"]`` (B, T, D') or top-k log-probabilities (B, T, K). ``student_head`` /
    ``teacher_head`` are the output layers (nn.Linear-like: .weight (V, D), optional .bias);
    the student's is taken from ``bind`` when not given. ``vocab_size`` cuts both heads to the
    first rows (vocabularies that differ only by padding rows). When the student gives logits,
    the wrapped objective runs unchanged.
    """

    def __init__(
        self,
        objective: Objective,
        *,
        teacher_head: Optional[nn.Module] = None,
        student_head: Optional[nn.Module] = None,
        chunk_size: int = 1024,
        mode: str = "fused",
        vocab_size: Optional[int] = None,
    ) -> None:
        super().__init__()
        self.inner = objective
        self.needs_teacher = objective.needs_teacher
        self.is_divergence = getattr(objective, "is_divergence", False)
        self.supports_tokens = True
        self.chunk_size, self.mode, self.vocab_size = chunk_size, mode, vocab_size
        # Held outside the module tree: not trained here, not in this objective's state_dict.
        self._heads = {"teacher": teacher_head, "student": student_head}

    def bind(self, student: nn.Module, *args, **kwargs) -> None:
        if self._heads["student"] is None:
            head = getattr(student, "output_head", None)
            self._heads["student"] = head() if callable(head) else student.get_output_embeddings()
        self.inner.bind(student, *args, **kwargs)

    def prepare(self, batch: Batch, *, generator: torch.Generator) -> Batch:
        return self.inner.prepare(batch, generator=generator)

    def on_step_end(self, *, step: int, total_steps: int, loss: float) -> None:
        self.inner.on_step_end(step=step, total_steps=total_steps, loss=loss)

    def on_epoch_end(self, *, epoch: int, epochs: int) -> None:
        self.inner.on_epoch_end(epoch=epoch, epochs=epochs)

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        if student.logits is not None:
            return self.inner(student, teacher, batch)
        h = student.hidden["last"]  # (B, T, D)
        keep = batch.mask.bool() if batch.mask is not None else torch.ones(h.shape[:2], dtype=torch.bool, device=h.device)
        count = keep.sum()
        s_head = self._heads["student"]
        if s_head is None:
            raise ValueError("the chunked loss has no student output layer; bind the student or pass student_head")
        v = self.vocab_size
        s_w = s_head.weight if v is None else s_head.weight[:v]
        s_b = getattr(s_head, "bias", None)
        s_b = s_b if (s_b is None or v is None) else s_b[:v]
        kwargs = {}
        if teacher is not None and "last" in teacher.hidden:
            t_head = self._heads["teacher"]
            if t_head is None:
                raise ValueError("the chunked loss got teacher hidden states but no teacher output layer")
            t_w = t_head.weight if v is None else t_head.weight[:v]
            t_b = getattr(t_head, "bias", None)
            t_b = t_b if (t_b is None or v is None) else t_b[:v]
            kwargs.update(teacher_hidden=teacher.hidden["last"][keep], teacher_weight=t_w, teacher_bias=t_b)
        elif teacher is not None and teacher.topk_logprobs is not None:
            kwargs.update(topk_logprobs=teacher.topk_logprobs[keep], topk_indices=teacher.topk_indices[keep])
        elif teacher is not None and teacher.logits is not None:
            raise ValueError("the chunked loss needs teacher hidden states or a top-k cache, not full logits")
        labels = batch.labels[keep] if batch.labels is not None else None
        total = chunked_objective_sum(
            self.inner, student_hidden=h[keep], student_weight=s_w, student_bias=s_b, labels=labels,
            chunk_size=self.chunk_size, mode=self.mode, **kwargs,
        )
        return total / count.clamp_min(1).to(total.dtype)
