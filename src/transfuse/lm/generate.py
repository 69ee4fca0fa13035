"""Generation for sequence-level KD and on-policy distillation (GKD, Agarwal et al. 2024; TRL's
GKDTrainer semantics: with probability lambda a batch's responses are sampled from the student,
then scored by the teacher; sequence-level KD trains on the teacher's own responses, generated
once and cached). Sampling uses a passed torch.Generator, so runs repeat exactly."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import List, Optional, Sequence

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from ..objectives import Objective
from ..signals import Batch, Outputs
from .data import TokenDataset


def _hf(model: nn.Module) -> nn.Module:
    """The Hugging Face model inside a CausalLM adapter / DDP wrapper."""
    model = getattr(model, "module", model)
    return getattr(model, "model", model) if not hasattr(model, "generate") else model


def _cache_of(out):
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


@torch.no_grad()
def sample_continuations(
    model: nn.Module,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    generator: Optional[torch.Generator] = None,
    temperature: float = 1.0,
    greedy: bool = False,
    eos_token_id: Optional[int] = None,
    pad_token_id: int = 0,
) -> List[List[int]]:
    """Continue each prompt (left-padded into one batch, KV cache) by up to ``max_new_tokens``;
    each continuation stops after its first ``eos_token_id`` (kept)."""
    lm = _hf(model)
    was_training = lm.training
    lm.eval()
    device = next(lm.parameters()).device
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long, device=device)
    attn = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(list(p), device=device)
        attn[i, width - len(p):] = 1
    pos = (attn.cumsum(-1) - 1).clamp_min(0)  # (B, P)
    import inspect

    cache_kw = "cache" if "cache" in inspect.signature(lm.forward).parameters else "past_key_values"
    out = lm(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=True)
    past, logits = _cache_of(out), out.logits[:, -1]  # (B, V)
    last_pos = pos[:, -1:]
    done = torch.zeros(len(prompts), dtype=torch.bool, device=device)
    result: List[List[int]] = [[] for _ in prompts]
    for _ in range(max_new_tokens):
        if greedy:
            nxt = logits.argmax(-1)
        else:
            probs = torch.softmax(logits.float() / temperature, dim=-1)  # (B, V)
            nxt = torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(-1).to(device)
        for i in range(len(prompts)):
            if not done[i]:
                result[i].append(int(nxt[i]))
        if eos_token_id is not None:
            done |= nxt == eos_token_id
        if bool(done.all()):
            break
        attn = torch.cat([attn, torch.ones_like(attn[:, :1])], -1)
        last_pos = last_pos + 1
        out = lm(input_ids=nxt.unsqueeze(-1), attention_mask=attn, position_ids=last_pos, use_cache=True, **{cache_kw: past})
        past, logits = _cache_of(out), out.logits[:, -1]
    if was_training:
        lm.train()
    return result


def prompts_of(batch: Batch, *, prompt_tokens: int = 16) -> List[List[int]]:
    """Each row's prompt: the tokens before its first counted target (or its first ``prompt_tokens``
    tokens when every token counts, as in plain text)."""
    prompts = []
    for ids, mask, attn in zip(batch.inputs, batch.mask, batch.extra.get("attention_mask", torch.ones_like(batch.inputs))):
        real = int(attn.sum())
        counted = mask.bool().nonzero().squeeze(-1)
        first = int(counted[0]) + 1 if len(counted) else real
        if first <= 1:
            first = min(prompt_tokens, max(1, real - 1))
        prompts.append(ids[:first].tolist())
    return prompts


def join_rows(prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], *, seq_len: int, pad_token_id: int) -> TokenDataset:
    """Rows of prompt + response (right-padded to ``seq_len``), counting only the response tokens."""
    n = len(prompts)
    inputs = torch.full((n, seq_len), pad_token_id, dtype=torch.long)
    labels = torch.full((n, seq_len), -100, dtype=torch.long)
    mask = torch.zeros(n, seq_len, dtype=torch.bool)
    attn = torch.zeros(n, seq_len, dtype=torch.long)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        ids = (list(p) + list(r))[:seq_len]
        L = len(ids)
        inputs[i, :L] = torch.tensor(ids)
        attn[i, :L] = 1
        for t in range(len(p) - 1, L - 1):  # logit at t predicts token t + 1, a response token
            mask[i, t] = True
            labels[i, t] = ids[t + 1]
    return TokenDataset(inputs, labels, mask, attn)


class OnPolicyMixing(Objective):
    """On-policy distillation (GKD): with probability ``lmbda`` per batch, the responses are replaced
    by the student's own samples (temperature ``temperature``, up to ``max_new_tokens``) before the
    teacher and student forwards; the wrapped objective (GKD uses ``jsd``) then scores them.
    Needs a live teacher: a cache cannot score text generated during training."""

    def __init__(
        self,
        objective: Objective,
        *,
        lmbda: float = 0.5,
        max_new_tokens: int = 32,
        temperature: float = 1.0,
        prompt_tokens: int = 16,
        eos_token_id: Optional[int] = None,
        pad_token_id: int = 0,
    ) -> None:
        super().__init__()
        if not 0.0 <= lmbda <= 1.0:
            raise ValueError("on-policy lmbda must be in [0, 1]")
        self.inner = objective
        self.lmbda, self.max_new_tokens, self.temperature = lmbda, max_new_tokens, temperature
        self.prompt_tokens, self.eos_token_id, self.pad_token_id = prompt_tokens, eos_token_id, pad_token_id
        self.needs_teacher = objective.needs_teacher
        self.supports_tokens = True
        self._student: List[nn.Module] = []  # held outside the module tree (not in state_dict)
        self.generated_batches = 0

    def bind(self, student: nn.Module, *args, **kwargs) -> None:
        self._student[:] = [student]
        self.inner.bind(student, *args, **kwargs)

    def prepare(self, batch: Batch, *, generator: torch.Generator) -> Batch:
        batch = self.inner.prepare(batch, generator=generator)
        if not self._student or float(torch.rand((), generator=generator)) >= self.lmbda:
            return batch
        prompts = prompts_of(batch, prompt_tokens=self.prompt_tokens)
        responses = sample_continuations(
            self._student[0], prompts, max_new_tokens=self.max_new_tokens, generator=generator,
            temperature=self.temperature, eos_token_id=self.eos_token_id, pad_token_id=self.pad_token_id,
        )
        rows = join_rows(prompts, responses, seq_len=batch.inputs.shape[1], pad_token_id=self.pad_token_id)
        self.generated_batches += 1
        device = batch.inputs.device
        return Batch(
            inputs=rows.inputs.to(device), labels=rows.labels.to(device), index=batch.index, mask=rows.mask.to(device),
            extra={**batch.extra, "attention_mask": rows.attention_mask.to(device), "on_policy": True},
        )

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        return self.inner(student, teacher, batch)

    def on_step_end(self, *, step: int, total_steps: int, loss: float) -> None:
        self.inner.on_step_end(step=step, total_steps=total_steps, loss=loss)

    def on_epoch_end(self, *, epoch: int, epochs: int) -> None:
        self.inner.on_epoch_end(epoch=epoch, epochs=epochs)


def sequence_kd_dataset(
    teacher: nn.Module,
    data: TokenDataset,
    *,
    cache_dir: str | Path,
    teacher_fingerprint: str,
    max_new_tokens: int = 64,
    greedy: bool = True,
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: int = 8,
    prompt_tokens: int = 16,
    eos_token_id: Optional[int] = None,
    pad_token_id: int = 0,
) -> TokenDataset:
    """Sequence-level KD (Kim & Rush 2016): the teacher's responses to the data's prompts become the
    targets. Generated once and cached in ``cache_dir`` under a fingerprint of (teacher, prompts,
    decoding settings); a later call with the same fingerprint reads the file instead."""
    prompts_all = prompts_of(Batch(inputs=data.inputs, mask=data.mask, extra={"attention_mask": data.attention_mask}),
                             prompt_tokens=prompt_tokens)
    h = hashlib.sha256(teacher_fingerprint.encode())
    h.update(json.dumps([prompts_all, max_new_tokens, greedy, temperature, seed, eos_token_id]).encode())
    path = Path(cache_dir) / f"seqkd-{h.hexdigest()[:16]}.safetensors"
    if path.exists():
        with safe_open(str(path), framework="pt") as f:
            tokens, offsets = f.get_tensor("tokens"), f.get_tensor("offsets")
        responses = [tokens[int(offsets[i]) : int(offsets[i + 1])].tolist() for i in range(len(prompts_all))]
    else:
        g = torch.Generator().manual_seed(seed)
        responses = []
        for s in range(0, len(prompts_all), batch_size):
            responses += sample_continuations(
                teacher, prompts_all[s : s + batch_size], max_new_tokens=max_new_tokens, generator=g,
                greedy=greedy, temperature=temperature, eos_token_id=eos_token_id, pad_token_id=pad_token_id,
            )
        lengths = torch.tensor([len(r) for r in responses], dtype=torch.long)
        offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
        tokens = torch.tensor([t for r in responses for t in r], dtype=torch.long)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".safetensors")
        os.close(fd)
        save_file({"tokens": tokens, "offsets": offsets}, tmp)
        os.replace(tmp, path)
    seq_len = data.inputs.shape[1]
    rows = join_rows(prompts_all, responses, seq_len=seq_len, pad_token_id=pad_token_id)
    rows.index = data.index.clone()
    return rows
