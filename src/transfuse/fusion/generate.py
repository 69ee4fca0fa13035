"""Fused language models: K causal LMs' next-token log-probs combined by a fusion rule, per position.

``fused_logprobs`` is the teacher-forced form (every model run once on the whole sequence, the
rule applied at every position). ``FusedModel`` wraps the K models as one Hugging Face
``PreTrainedModel`` whose ``.generate()`` is Hugging Face's own, so greedy, sampling, top-p,
beam search, stop strings, logits processors and streamers are all transformers' code; only
``forward`` is ours: it steps every model on the whole batch with its own KV cache and returns
the rule's log-probs as the logits. This follows the shape of EFT's reference
``EFTPosthocGenerationMixin`` and proxy tuning's ``DExpertsLlama`` (one forward per model per
token, combined before the logits processors), written against the installed transformers.
"""
from __future__ import annotations

import copy
import inspect
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from ..errors import TransfuseError
from .rules import FusionRule, build_rule

ModelLike = Union[nn.Module, str, Path]
RuleLike = Union[str, Mapping[str, Any], FusionRule]


# ---------------------------------------------------------------- inputs: models, tokenizers, rule, weights


def resolve_rule(rule: RuleLike) -> FusionRule:
    """A built rule from a registered name, a ``{"name": ..., **params}`` mapping, or a rule object."""
    if isinstance(rule, FusionRule) or (callable(rule) and not isinstance(rule, (str, Mapping))):
        return rule  # type: ignore[return-value]
    if isinstance(rule, str):
        return build_rule(rule, {})
    if isinstance(rule, Mapping):
        params = dict(rule)
        name = params.pop("name", None)
        if not isinstance(name, str):
            raise TransfuseError("a fusion rule mapping needs a 'name' key, e.g. {name: product} (see `transfuse list fusion-rules`)")
        params.update(params.pop("params", None) or {})
        return build_rule(name, params)
    raise TransfuseError(f"a fusion rule is a name, a {{name: ..., params}} mapping or a FusionRule, got {type(rule).__name__}")


def resolve_models(models: Sequence[ModelLike], tokenizers: Optional[Sequence[Any]] = None) -> Tuple[List[nn.Module], List[Any]]:
    """(models, tokenizers): folder paths loaded as ``AutoModelForCausalLM`` (float32, eval mode) with their tokenizers."""
    if isinstance(models, (str, Path, nn.Module)) or len(models) == 0:
        raise TransfuseError("fusion needs a list of one or more causal language models (objects or local folders)")
    loaded, toks = [], []
    for i, m in enumerate(models):
        if isinstance(m, (str, Path)):
            from ..lm.models import load_causal_lm

            if not Path(m).expanduser().exists():
                raise TransfuseError(f"model folder {str(m)!r} does not exist; give a local Hugging Face model folder")
            model, tok = load_causal_lm(str(Path(m).expanduser()))
            loaded.append(model.eval())
            toks.append(tok)
        elif isinstance(m, nn.Module):
            loaded.append(m)
            toks.append(None)
        else:
            raise TransfuseError(f"model {i} is a {type(m).__name__}; give a PreTrainedModel or a local folder path")
    if tokenizers is not None:
        tokenizers = list(tokenizers)
        if len(tokenizers) != len(loaded):
            raise TransfuseError(f"{len(tokenizers)} tokenizers were given for {len(loaded)} models; give one per model (or none)")
        toks = [t if t is not None else own for t, own in zip(tokenizers, toks)]
    return loaded, toks


def resolve_weights(weights: Optional[Sequence[float] | Tensor], k: int, rule: FusionRule) -> Tensor:
    """(K,) float32 weights, ones by default; negative only for rules that take signed weights."""
    if weights is None:
        return torch.ones(k)
    w = torch.as_tensor(weights, dtype=torch.float32).flatten()
    if w.numel() != k:
        raise TransfuseError(f"{w.numel()} weights were given for {k} models; give one weight per model")
    if not getattr(rule, "signed_weights", False) and bool((w < 0).any()):
        raise TransfuseError(f"the {_rule_name(rule)} rule takes non-negative weights, got {w.tolist()}")
    return w


def _rule_name(rule: FusionRule) -> str:
    return getattr(rule, "registry_name", type(rule).__name__)


def check_rule(rule: FusionRule, k: int, weights: Tensor) -> None:
    """Call the rule once on dummy log-probs so a wrong model count (or parameter) fails before any model runs."""
    dummy = torch.log_softmax(torch.zeros(k, 1, 4), dim=-1)  # (K, 1, 4)
    try:
        rule(dummy, weights, {})
    except TransfuseError as exc:
        order = getattr(rule, "models", "any number")
        raise TransfuseError(f"{exc} (the {_rule_name(rule)} rule takes models in this order: {order})") from None


def _vocab_rows(model: nn.Module) -> int:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and getattr(head, "weight", None) is not None:
        return int(head.weight.shape[0])
    return int(model.config.vocab_size)


def _tok_name(tok: Any, i: int) -> str:
    return f"{getattr(tok, 'name_or_path', '') or type(tok).__name__!s} (model {i})"


def shared_vocab(models: Sequence[nn.Module], tokenizers: Sequence[Any]) -> Optional[int]:
    """How many logit columns every model shares: ``None`` (all, the sizes agree) or the tokenizer size to crop to.

    Identical vocabularies are required. Models whose output layers differ only by padding rows
    (an embedding matrix rounded up past the tokenizer, 49152 vs 49280) are cropped to the shared
    tokenizer's size; any other difference is one error naming both tokenizers.
    """
    known = [(i, t) for i, t in enumerate(tokenizers) if t is not None]
    if known:
        i0, t0 = known[0]
        vocab0 = t0.get_vocab()
        for i, t in known[1:]:
            if t.get_vocab() != vocab0:
                raise TransfuseError(
                    f"the tokenizers of {_tok_name(t0, i0)} and {_tok_name(t, i)} have different vocabularies; "
                    "token-level fusion needs models that share one tokenizer"
                )
    rows = [_vocab_rows(m) for m in models]
    if len(set(rows)) == 1:
        return None
    if not known:
        raise TransfuseError(
            f"the models' output layers have different sizes {rows}; pass their tokenizers so padding rows can be told from a vocabulary mismatch"
        )
    size = len(known[0][1])
    if size > min(rows):
        i_small = rows.index(min(rows))
        raise TransfuseError(
            f"the tokenizer {_tok_name(known[0][1], known[0][0])} has {size} tokens but model {i_small} has only "
            f"{min(rows)} output rows; these models do not share one vocabulary"
        )
    return size


def _cache_key(model: nn.Module) -> str:
    """The keyword this transformers version uses for the KV cache ("cache" in 5.x, "past_key_values" before)."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _model_device(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def position_ids_from_mask(attention_mask: Tensor) -> Tensor:
    """(B, T) positions counting only attended tokens, so left padding does not shift them (pads get 0)."""
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.masked_fill(attention_mask == 0, 0)


def _log_probs(logits: Tensor, crop: Optional[int], device: torch.device) -> Tensor:
    """A model's logits (B, T, V') -> float32 log-probs (B, T, V) on ``device``, padding rows cropped."""
    if crop is not None:
        logits = logits[..., :crop]
    return torch.log_softmax(logits.to(device=device, dtype=torch.float32), dim=-1)


def _apply_rule(rule: FusionRule, stacked: Tensor, weights: Tensor, context: Optional[Dict[str, Any]]) -> Tensor:
    """(K, B, T, V) log-probs -> the rule's (B, T, V), positions flattened into the rule's batch."""
    k, b, t, v = stacked.shape
    fused = rule(stacked.reshape(k, b * t, v), weights.to(stacked.device), context)  # (B*T, V)
    return fused.reshape(b, t, v)


# ---------------------------------------------------------------- teacher-forced


@torch.no_grad()
def fused_logprobs(
    models: Sequence[ModelLike],
    rule: RuleLike,
    input_ids: Tensor,
    attention_mask: Optional[Tensor] = None,
    *,
    weights: Optional[Sequence[float] | Tensor] = None,
    context: Optional[Dict[str, Any]] = None,
    tokenizers: Optional[Sequence[Any]] = None,
) -> Tensor:
    """Teacher-forced fused log-probs (B, T, V) float32: every model runs once on the whole sequence.

    Position t holds the fused distribution of token t+1 given tokens 0..t, like a causal LM's
    logits. Left padding is handled through the attention mask (positions count attended tokens
    only). The result lives on the first model's device.
    """
    mods, toks = resolve_models(models, tokenizers)
    fusion = resolve_rule(rule)
    w = resolve_weights(weights, len(mods), fusion)
    check_rule(fusion, len(mods), w)
    crop = shared_vocab(mods, toks)
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    positions = position_ids_from_mask(attention_mask)  # (B, T)
    home = _model_device(mods[0])
    per_model = []
    for m in mods:
        dev = _model_device(m)
        out = m(input_ids=input_ids.to(dev), attention_mask=attention_mask.to(dev), position_ids=positions.to(dev), use_cache=False)
        per_model.append(_log_probs(out.logits, crop, home))  # (B, T, V)
    return _apply_rule(fusion, torch.stack(per_model), w, context)  # (K, B, T, V) -> (B, T, V)
