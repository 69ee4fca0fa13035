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


# ---------------------------------------------------------------- generation through Hugging Face's generate

from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel  # noqa: E402
from transformers.cache_utils import Cache  # noqa: E402
from transformers.modeling_outputs import CausalLMOutputWithPast  # noqa: E402

#: The output field that carries the KV cache in this transformers version.
_OUT_CACHE = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


class FusedCache(Cache):
    """The wrapper's cache: one cache per model (each model keeps its own keys and values).

    Hugging Face's loop only asks it for its length and, for beam search and cache rollback,
    to reorder, crop or select rows; each request is passed on to every model's cache.
    """

    def __init__(self, caches: Sequence[Optional[Cache]]) -> None:
        super().__init__(layers=[])
        self.caches: List[Optional[Cache]] = list(caches)

    def _each(self, method: str, *args: Any) -> None:
        for c in self.caches:
            if c is not None:
                getattr(c, method)(*args)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        first = self.caches[0] if self.caches else None
        return first.get_seq_length() if first is not None else 0

    def reorder_cache(self, beam_idx: Tensor) -> None:
        for c in self.caches:
            if c is not None:
                c.reorder_cache(beam_idx.to(_cache_device(c, beam_idx.device)))

    def crop(self, tokens_to_remove: int) -> None:
        self._each("crop", tokens_to_remove)

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._each("batch_repeat_interleave", repeats)

    def batch_select_indices(self, indices: Tensor) -> None:
        self._each("batch_select_indices", indices)

    def reset(self) -> None:
        self._each("reset")

    @property
    def is_compileable(self) -> bool:
        return False

    @property
    def is_croppable(self) -> bool:
        return all(c is None or c.is_croppable for c in self.caches)


def _cache_device(cache: Cache, default: torch.device) -> torch.device:
    for layer in getattr(cache, "layers", []):
        keys = getattr(layer, "keys", None)
        if isinstance(keys, Tensor):
            return keys.device
    return default


class FusedConfig(PretrainedConfig):
    """The wrapper's config: the shared vocabulary size and the first model's special tokens."""

    model_type = "transfuse_fused"

    def __init__(self, vocab_size: int = 0, max_position_embeddings: Optional[int] = None, **kwargs: Any) -> None:
        self.vocab_size = vocab_size
        self.max_position_embeddings = max_position_embeddings
        super().__init__(**kwargs)


class FusedModel(PreTrainedModel, GenerationMixin):
    """K causal LMs as one model whose logits are a fusion rule's log-probs; ``.generate()`` is Hugging Face's.

    Every ``forward`` steps each model on the whole batch with its own KV cache (held together in a
    :class:`FusedCache`), passing each the attention mask and position ids (so left padding is
    handled), moves every model's float32 log-probs to the first model's device, and returns the
    rule's combination. Models may live on different devices. ``context`` is the rule's per-step
    dict: reset at each ``generate`` call, ``context["step"]`` counts the forwards, and stateful
    rules read or leave their state in it (DLF leaves its solved weights).
    """

    config_class = FusedConfig
    base_model_prefix = "fused"
    main_input_name = "input_ids"
    _supports_sdpa = True

    def __init__(
        self,
        models: Sequence[ModelLike],
        rule: RuleLike,
        *,
        weights: Optional[Sequence[float] | Tensor] = None,
        tokenizers: Optional[Sequence[Any]] = None,
    ) -> None:
        mods, toks = resolve_models(models, tokenizers)
        fusion = resolve_rule(rule)
        w = resolve_weights(weights, len(mods), fusion)
        check_rule(fusion, len(mods), w)
        crop = shared_vocab(mods, toks)
        first = mods[0].config
        lengths = [getattr(m.config, "max_position_embeddings", None) for m in mods]
        lengths = [n for n in lengths if n]
        config = FusedConfig(
            vocab_size=crop or _vocab_rows(mods[0]),
            max_position_embeddings=min(lengths) if lengths else None,
            bos_token_id=getattr(first, "bos_token_id", None),
            eos_token_id=getattr(first, "eos_token_id", None),
            pad_token_id=getattr(first, "pad_token_id", None),
        )
        super().__init__(config)
        self.models = nn.ModuleList(mods)
        self.rule, self.crop = fusion, crop
        self.fusion_weights = w  # (K,)
        self.tokenizers = toks
        if getattr(mods[0], "generation_config", None) is not None:
            self.generation_config = copy.deepcopy(mods[0].generation_config)
        self.context: Dict[str, Any] = {"step": 0}
        self._cache_keys = [_cache_key(m) for m in mods]
        self._keeps = ["logits_to_keep" in inspect.signature(m.forward).parameters for m in mods]
        self.eval()

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        # Each model makes its own cache on the first forward; forward wraps them in a FusedCache.
        return False

    def get_input_embeddings(self) -> nn.Module:
        return self.models[0].get_input_embeddings()

    def generate(self, *args: Any, **kwargs: Any):
        """Hugging Face's ``generate`` (every argument is its own), with a fresh rule context."""
        self.context = {"step": 0}
        return super().generate(*args, **kwargs)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Optional[Tensor] = None,
        position_ids: Optional[Tensor] = None,
        cache: Optional[FusedCache] = None,
        use_cache: Optional[bool] = None,
        logits_to_keep: int = 0,
        past_key_values: Optional[FusedCache] = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        cache = cache if cache is not None else past_key_values
        if cache is not None and not isinstance(cache, FusedCache):
            raise TransfuseError("a FusedModel takes the FusedCache it returned as its cache; do not pass another cache")
        past = cache.get_seq_length() if cache is not None else 0
        length = input_ids.shape[1]
        if position_ids is None:
            if attention_mask is not None:
                position_ids = position_ids_from_mask(attention_mask)[:, -length:]  # (B, T)
            else:
                position_ids = torch.arange(past, past + length, device=input_ids.device).unsqueeze(0)  # (1, T)
        subs = cache.caches if cache is not None else [None] * len(self.models)
        home = _model_device(self.models[0])
        per_model, new_caches = [], []
        for i, model in enumerate(self.models):
            dev = _model_device(model)
            kw: Dict[str, Any] = {"input_ids": input_ids.to(dev), "position_ids": position_ids.to(dev), "use_cache": use_cache}
            if attention_mask is not None:
                kw["attention_mask"] = attention_mask.to(dev)
            if subs[i] is not None:
                kw[self._cache_keys[i]] = subs[i]
            if self._keeps[i]:
                kw["logits_to_keep"] = logits_to_keep
            out = model(**kw)
            logits = out.logits
            if not self._keeps[i] and logits_to_keep:
                logits = logits[:, -logits_to_keep:]
            per_model.append(_log_probs(logits, self.crop, home))  # (B, T', V)
            new_caches.append(getattr(out, self._cache_keys[i], None) if use_cache else None)
        self.context["step"] = self.context.get("step", 0) + 1
        fused = _apply_rule(self.rule, torch.stack(per_model), self.fusion_weights, self.context)  # (B, T', V)
        if use_cache:
            if cache is None:
                cache = FusedCache(new_caches)
            else:
                cache.caches = new_caches
        return CausalLMOutputWithPast(logits=fused, **{_OUT_CACHE: cache if use_cache else None})


def _prompt_texts(tokenizer: Any, prompts: Sequence[str], chat_template: bool) -> List[str]:
    if not chat_template:
        return list(prompts)
    if not getattr(tokenizer, "chat_template", None):
        raise TransfuseError(
            f"the tokenizer {getattr(tokenizer, 'name_or_path', '') or type(tokenizer).__name__} has no chat template; set chat_template: false"
        )
    return [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True) for p in prompts]


def encode_prompts(tokenizer: Any, prompts: Sequence[str], *, chat_template: bool = False) -> Dict[str, Tensor]:
    """Left-padded ``input_ids`` and ``attention_mask`` (B, T) for a batch of prompts."""
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    try:
        enc = tokenizer(_prompt_texts(tokenizer, prompts, chat_template), return_tensors="pt", padding=True,
                        add_special_tokens=not chat_template)
    finally:
        tokenizer.padding_side = side
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def fused_generate(
    models: Union[Sequence[ModelLike], FusedModel],
    rule: Optional[RuleLike],
    prompts: Sequence[str],
    *,
    tokenizer: Any = None,
    weights: Optional[Sequence[float] | Tensor] = None,
    tokenizers: Optional[Sequence[Any]] = None,
    chat_template: bool = False,
    batch_size: int = 8,
    seed: Optional[int] = None,
    **generate_kwargs: Any,
) -> List[str]:
    """Generate from the fused model for each prompt; returns the completions (prompt removed, special tokens skipped).

    ``generate_kwargs`` go to Hugging Face's ``generate`` unchanged (``max_new_tokens``, ``do_sample``,
    ``temperature``, ``top_p``, ``stop_strings``, ``logits_processor``...). ``seed`` makes sampling
    reproducible without touching the caller's global random state.
    """
    if isinstance(prompts, str):
        raise TransfuseError("prompts must be a list of strings, got one string; wrap it in a list")
    if batch_size < 1:
        raise TransfuseError(f"batch_size must be at least 1, got {batch_size}")
    fused = models if isinstance(models, FusedModel) else FusedModel(models, rule, weights=weights, tokenizers=tokenizers)
    tok = tokenizer or next((t for t in fused.tokenizers if t is not None), None)
    if tok is None:
        raise TransfuseError("fused_generate needs a tokenizer: pass tokenizer=... (or give the models as local folders)")
    if "stop_strings" in generate_kwargs:
        generate_kwargs.setdefault("tokenizer", tok)
    generate_kwargs.setdefault("pad_token_id", tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
    home = _model_device(fused.models[0])
    texts: List[str] = []
    with torch.random.fork_rng(devices=[home] if home.type == "cuda" else []):
        if seed is not None:
            torch.manual_seed(seed)
        for start in range(0, len(prompts), batch_size):
            enc = encode_prompts(tok, prompts[start : start + batch_size], chat_template=chat_template)
            out = fused.generate(**{k: v.to(home) for k, v in enc.items()}, **generate_kwargs)
            new = out[:, enc["input_ids"].shape[1] :]
            texts += tok.batch_decode(new, skip_special_tokens=True)
    return texts
