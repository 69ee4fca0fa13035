"""Statistics for the data-driven merges, gathered with hooks over a small data set.

- :func:`fisher_diagonal` (Fisher merging): mean over samples of the squared per-sample gradient
  of log p(y|x) with y drawn from the model's own prediction (the true Fisher, as Matena & Raffel),
  per parameter; per-sample gradients by ``torch.func`` (vmap over a batch).
- :func:`regmean_grams` (RegMean): for every ``nn.Linear``, G = sum over inputs of x x^T, collected
  by forward pre-hooks; memory is one (in, in) matrix per layer whatever the data size.
Both return {parameter name: tensor} that :func:`save_statistics` writes as safetensors, the
file a model's ``parameters.statistics`` names.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, Iterable, Optional

import torch
from torch import Tensor, nn


def fisher_diagonal(model: nn.Module, batches: Iterable[Tensor], *, generator: Optional[torch.Generator] = None,
                    logits_fn: Optional[Callable[[nn.Module, Tensor], Tensor]] = None,
                    max_samples: int = 1024) -> Dict[str, Tensor]:
    """Diagonal Fisher of every trainable parameter: E_x E_{y~p(.|x)} (d log p(y|x) / d theta)^2."""
    from torch.func import functional_call, grad, vmap

    gen = generator or torch.Generator().manual_seed(0)
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    buffers = {n: b.detach() for n, b in model.named_buffers()}
    call = logits_fn or (lambda m, x: m(x))

    class _Wrap(nn.Module):  # lets functional_call see the user's logits function
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, x):
            return call(self.inner, x)

    wrap = _Wrap()

    def logp(p, b, x, y):
        out = functional_call(wrap, ({f"inner.{k}": v for k, v in p.items()}, {f"inner.{k}": v for k, v in b.items()}), (x.unsqueeze(0),))
        return torch.log_softmax(out.float(), -1)[0].gather(0, y.view(1)).squeeze(0)

    per_sample = vmap(grad(logp), in_dims=(None, None, 0, 0))
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    seen = 0
    was_training = model.training
    model.eval()
    for x in batches:
        x = x[: max_samples - seen]
        if len(x) == 0:
            break
        with torch.no_grad():
            probs = torch.softmax(call(model, x).float(), -1)  # (B, C)
        y = torch.multinomial(probs, 1, generator=gen).squeeze(1)  # (B,)
        g = per_sample(params, buffers, x, y)
        for n in total:
            total[n] += (g[n] ** 2).sum(0)
        seen += len(x)
        if seen >= max_samples:
            break
    model.train(was_training)
    return {n: t / max(seen, 1) for n, t in total.items()}


def regmean_grams(model: nn.Module, batches: Iterable[Tensor], *, forward: Optional[Callable[[nn.Module, Tensor], object]] = None) -> Dict[str, Tensor]:
    """{'<linear>.weight': sum_x x x^T (in, in)} for every nn.Linear, over all inputs (tokens)."""
    grams: Dict[str, Tensor] = {}
    hooks = []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear):
            key = f"{name}.weight" if name else "weight"

            def hook(m, inputs, key=key):
                x = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).double()  # (N, in)
                g = x.T @ x
                grams[key] = grams[key] + g if key in grams else g

            hooks.append(mod.register_forward_pre_hook(hook))
    run = forward or (lambda m, x: m(x))
    try:
        with torch.no_grad():
            for x in batches:
                run(model, x)
    finally:
        for h in hooks:
            h.remove()
    return {k: v.float() for k, v in grams.items()}


def save_statistics(stats: Dict[str, Tensor], path: str | Path) -> Path:
    """Write statistics as safetensors (atomically: temp file + rename)."""
    from .._atomic import save_safetensors

    return save_safetensors(stats, path)
