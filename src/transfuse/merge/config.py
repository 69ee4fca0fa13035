"""The merge config: mergekit's vocabulary (``merge_method``, ``parameters``) or the short one.

```yaml
method: ties                # or merge_method:
base_model: path/to/base
models:
  - model: path/to/expert_a
    parameters: {weight: 1.0, density: 0.3}
  - model: path/to/lora_adapter      # a PEFT LoRA adapter on the same base
parameters: {density: 0.2, scale: 1.0}
overrides:                  # per-tensor parameters by glob on tensor names (last match wins)
  - pattern: "*.embed_tokens.*"
    parameters: {density: 1.0}
dtype: float32              # compute dtype
out_dtype: bfloat16         # default: each tensor's base dtype
output: merged/
shard_size: 2GB
```
"""
from __future__ import annotations

import re
from typing import Any, Dict, List, Literal, Optional, Tuple, Union

from pydantic import AliasChoices, Field, PrivateAttr, model_validator

from ..config import Strict


class ModelEntry(Strict):
    model: str
    parameters: Dict[str, Any] = Field(default_factory=dict, validation_alias=AliasChoices("parameters", "params"))


class SliceSource(Strict):
    """One input of an output slice (mergekit ``InputSliceDefinition``): layers [a, b) of a model."""

    model: str
    layer_range: Tuple[int, int]
    parameters: Dict[str, Any] = Field(default_factory=dict, validation_alias=AliasChoices("parameters", "params"))


class OutputSlice(Strict):
    """One output slice (mergekit ``OutputSliceDefinition``): its sources' layers merged, stacked after the previous slice."""

    sources: List[SliceSource] = Field(min_length=1)
    base_model: Optional[str] = None
    residual_weight: Optional[float] = None  # in mergekit 0.1.5's schema but read nowhere: accepted, unused (as there)
    parameters: Dict[str, Any] = Field(default_factory=dict, validation_alias=AliasChoices("parameters", "params"))


class TokenSource(Strict):
    """mergekit ``ZeroEmbedding`` ({kind: zero}) or ``ModelTokenEmbedding`` ({kind: model_token, model, token | token_id})."""

    kind: Literal["zero", "model_token"]
    model: Optional[str] = None
    token: Optional[str] = None
    token_id: Optional[int] = None

    @model_validator(mode="after")
    def _one_token(self):
        from ..errors import TransfuseError

        if self.kind == "model_token" and (self.model is None or (self.token is None) == (self.token_id is None)):
            raise TransfuseError("tokenizer.tokens: a {kind: model_token} source needs model and exactly one of token, token_id")
        return self


class TokenEmbedding(Strict):
    """mergekit ``TokenEmbeddingConfig``: where one token's embedding row comes from."""

    source: Union[TokenSource, str, None] = None  # a model, or a TokenSource
    force: bool = False  # use the source even for models that have the token


class TokenizerBlock(Strict):
    """mergekit ``tokenizer:`` (``TokenizerConfig``): the output vocabulary and per-token embedding sources."""

    source: str = "union"  # union, base, or a model
    tokens: Dict[str, TokenEmbedding] = Field(default_factory=dict)
    pad_to_multiple_of: Optional[int] = Field(default=None, ge=1)


class Override(Strict):
    pattern: str
    parameters: Dict[str, Any] = Field(default_factory=dict, validation_alias=AliasChoices("parameters", "params"))


class MergeConfig(Strict):
    method: str = Field(validation_alias=AliasChoices("method", "merge_method"))
    # "mergekit" when the config says merge_method: (mergekit's YAML): its methods' semantics and
    # defaults (transfuse.merge.mergekit); "transfuse" with method: (the papers' forms)
    dialect: Literal["transfuse", "mergekit"] = "transfuse"
    models: List[ModelEntry] = Field(default_factory=list)
    slices: Optional[List[OutputSlice]] = None  # mergekit frankenmerges: layer ranges stacked (transfuse.merge.slices)
    base_model: Optional[str] = None
    parameters: Dict[str, Any] = Field(default_factory=dict, validation_alias=AliasChoices("parameters", "params"))
    overrides: List[Override] = Field(default_factory=list)
    dtype: Optional[str] = None  # compute dtype (default float32); mergekit dialect: also the output dtype
    out_dtype: Optional[str] = None
    tokenizer_source: Optional[str] = None  # mergekit: base, union or a model (embedding rows rebuilt: transfuse.merge.vocab)
    tokenizer: Optional[TokenizerBlock] = None  # mergekit's tokenizer: block (instead of tokenizer_source)
    chat_template: Optional[str] = None  # mergekit: a Jinja template written into tokenizer_config.json
    copy_tokenizer: bool = True  # mergekit-yaml --copy-tokenizer / --no-copy-tokenizer
    model_card: bool = True  # README.md with the provenance (mergekit-yaml --no-write-model-card: none)
    allow_crimes: bool = False  # mergekit-yaml --allow-crimes: an architecture mismatch is a note, not a problem
    output: Optional[str] = None
    shard_size: Union[int, str] = "2GB"
    seed: int = 0
    vocab_policy: Literal["error", "pad", "truncate"] = "error"
    config_from: Optional[str] = None  # model whose config/tokenizer are copied (default: base, else first model)
    threads: int = Field(default=2, ge=1, le=64)
    prefetch: int = Field(default=4, ge=1, le=64)
    hash_inputs: Literal["sha256", "none"] = "sha256"
    overwrite: bool = False

    _source_text: Optional[str] = PrivateAttr(default=None)  # the YAML as the user wrote it, when read from a file

    def referenced_models(self) -> List[str]:
        """Every model the config names, once each: the base first, then in the order listed."""
        names = ([self.base_model] if self.base_model else []) + [m.model for m in self.models]
        for sl in self.slices or []:
            names += ([sl.base_model] if sl.base_model else []) + [s.model for s in sl.sources]
        return list(dict.fromkeys(names))

    @model_validator(mode="before")
    @classmethod
    def _dialect(cls, data: Any) -> Any:
        if isinstance(data, dict) and "dialect" not in data:
            data = dict(data)
            data["dialect"] = "mergekit" if "merge_method" in data else "transfuse"
        if isinstance(data, dict):
            from .mergekit import REFUSED_KEYS
            from ..errors import TransfuseError

            for key, why in REFUSED_KEYS.items():
                if data.get(key) is not None:
                    raise TransfuseError(f"{key}: {why}")
            if data.get("tokenizer_source") is not None and data.get("tokenizer") is not None:
                raise TransfuseError("the config has both tokenizer_source and tokenizer:; give one of them (as mergekit)")
            ct = data.get("chat_template")
            if isinstance(ct, str):
                from .chat_templates import check as check_chat_template

                check_chat_template(ct)
            if data.get("models") and data.get("slices"):
                raise TransfuseError("the merge config has both models: and slices:; give exactly one of them (as mergekit)")
            if not data.get("models") and not data.get("slices"):
                raise TransfuseError("the merge config needs models: a list of {model: PATH, parameters: {...}} "
                                     "(or slices: a list of {sources: [{model: PATH, layer_range: [a, b]}]})")
        return data


_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def parse_size(value: Union[int, str]) -> int:
    """'2GB' -> 2_000_000_000; an int is bytes."""
    if isinstance(value, int):
        return value
    m = re.fullmatch(r"\s*([0-9.]+)\s*([a-zA-Z]*)\s*", str(value))
    if not m or m.group(2).lower() not in _UNITS:
        from ..errors import TransfuseError

        raise TransfuseError(f"shard_size {value!r} is not a size; write e.g. 2GB, 500MB or a number of bytes")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])
