"""HF text: a Hugging Face sequence classifier with its tokenizer, loaded from a ``save_pretrained``
folder, or built from some of a teacher's layers (DistilBERT-style init, Sanh et al. 2019:
the student keeps the teacher's embeddings and every other encoder layer).

The model is the transformers model itself (``save_pretrained`` works); its tokenizer rides along
as ``model.transfuse_tokenizer`` so text data sets tokenise with the model's own vocabulary. A
forward called without ``attention_mask`` gets the mask of the non-pad tokens, so code that
passes only token ids (the teacher cache, evaluation) attends to the same tokens as training.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional, Tuple

from torch import nn

from ..errors import TransfuseError
from . import models

TOKENIZER_ATTR = "transfuse_tokenizer"


def _pad_mask_hook(module: nn.Module, args: tuple, kwargs: dict):
    """Forward pre-hook: attention_mask = (input_ids != pad) when the caller gave none."""
    ids = args[0] if args else kwargs.get("input_ids")
    if kwargs.get("attention_mask") is not None or ids is None or ids.dtype.is_floating_point:
        return None
    pad = module.config.pad_token_id
    if pad is None:
        return None
    return args, {**kwargs, "attention_mask": (ids != pad).long()}


def _check_ids(module: nn.Module, args: tuple, kwargs: dict):
    ids = args[0] if args else kwargs.get("input_ids")
    if ids is not None and ids.is_floating_point():
        raise TransfuseError(
            f"the text model {type(module).__name__} takes token ids, but got float inputs of shape {tuple(ids.shape)}; "
            "use a text data set (text_table, text_folder, wordnet, fortunes, hf_datasets)"
        )
    return None


def layer_list(model: nn.Module) -> Tuple[str, nn.ModuleList]:
    """(module path, list) of the encoder's transformer layers: the ModuleList as long as config.num_hidden_layers."""
    n = getattr(model.config, "num_hidden_layers", None)
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == n:
            return name, module
    raise TransfuseError(f"cannot find the {n} encoder layers of {type(model).__name__} to build a student from")


def every_other(total: int, keep: int) -> List[int]:
    """Layer ids a ``keep``-layer student takes from a ``total``-layer teacher: 0, s, 2s, ... with s = total // keep."""
    step = max(total // keep, 1)
    return [i * step for i in range(keep)]


def keep_layers(model: nn.Module, layers: List[int]) -> nn.Module:
    """Drop all encoder layers but ``layers`` (teacher order), in place; config follows."""
    path, full = layer_list(model)
    bad = [i for i in layers if not 0 <= i < len(full)]
    if bad or not layers or len(set(layers)) != len(layers):
        raise TransfuseError(f"layers must be distinct ids in 0..{len(full) - 1}; got {layers}")
    kept = [full[i] for i in layers]
    for new, layer in enumerate(kept):
        for sub in layer.modules():  # caches index layers by position
            if hasattr(sub, "layer_idx"):
                sub.layer_idx = new
    parent, _, attr = path.rpartition(".")
    setattr(model.get_submodule(parent), attr, nn.ModuleList(kept))
    model.config.num_hidden_layers = len(kept)
    return model


@models.register("hf_text")
def hf_text(
    *,
    in_shape: Tuple[int, ...],
    num_classes: int,
    path: str = "",
    from_teacher: str = "",
    num_layers: Optional[int] = None,
    layers: Optional[List[int]] = None,
    ignore_mismatched_sizes: bool = False,
    attn_implementation: str = "sdpa",
) -> nn.Module:
    """A Hugging Face AutoModelForSequenceClassification + AutoTokenizer from a local folder.

    path: a save_pretrained folder (a classifier, or a bare encoder such as all-MiniLM-L6-v2, which
    gets a fresh head). from_teacher + num_layers or layers: a student made of the teacher folder's
    embeddings and these encoder layers (num_layers: every other one, DistilBERT-style).
    attn_implementation: "eager" lets objectives read attention probabilities (feature path
    "<layer>.attention.self:1"); "sdpa" is faster.
    """
    if bool(path) == bool(from_teacher):
        raise TransfuseError("hf_text needs exactly one of path=<save_pretrained folder> or from_teacher=<folder>")
    if (num_layers is not None or layers is not None) and not from_teacher:
        raise TransfuseError("num_layers / layers pick a teacher's layers: use them with from_teacher=<folder>")
    if from_teacher and (num_layers is None) == (layers is None):
        raise TransfuseError("from_teacher needs num_layers=<k> (every other layer) or layers=[ids], not both")
    if attn_implementation not in ("eager", "sdpa"):
        raise TransfuseError(f"attn_implementation must be eager or sdpa; got {attn_implementation!r}")
    where = path or from_teacher
    folder = Path(where).expanduser()
    if not (folder / "config.json").is_file():
        raise TransfuseError(f"{str(folder)!r} is not a folder written by save_pretrained (no config.json)")

    import transformers

    try:
        config = transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True)
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:  # transformers raises many kinds for a broken folder
        raise TransfuseError(f"could not load the config and tokenizer from {folder}: {str(exc).splitlines()[0]}") from None
    is_classifier = any(a.endswith("ForSequenceClassification") for a in (config.architectures or []))
    if is_classifier and config.num_labels != num_classes and not ignore_mismatched_sizes and not from_teacher:
        raise TransfuseError(
            f"the model in {folder} has {config.num_labels} labels but the data has {num_classes} classes; "
            "pass ignore_mismatched_sizes=true to replace its classifier head with a fresh one"
        )
    limit = getattr(config, "max_position_embeddings", None)
    if limit is not None and len(in_shape) == 1 and in_shape[0] > limit:
        raise TransfuseError(f"the model in {folder} reads at most {limit} tokens; set data.params.max_length<={limit}")
    kwargs: dict = {"local_files_only": True, "attn_implementation": attn_implementation}
    if config.num_labels != num_classes or not is_classifier:
        kwargs.update(num_labels=num_classes, ignore_mismatched_sizes=True)
    try:
        with _quiet():
            model = transformers.AutoModelForSequenceClassification.from_pretrained(str(folder), **kwargs)
    except Exception as exc:
        raise TransfuseError(f"could not load a sequence classifier from {folder}: {str(exc).splitlines()[0]}") from None
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if from_teacher:
        total = len(layer_list(model)[1])
        keep_layers(model, layers if layers is not None else every_other(total, int(num_layers)))
    setattr(model, TOKENIZER_ATTR, tokenizer)
    model.register_forward_pre_hook(_check_ids, with_kwargs=True)
    model.register_forward_pre_hook(_pad_mask_hook, with_kwargs=True)
    return model


def tokenizer_of(model: Any) -> Any:
    """The tokenizer a text model carries (None for other models)."""
    return getattr(model, TOKENIZER_ATTR, None)


class _quiet:
    """Silence transformers' "newly initialized weights" notice (the fresh head is intended)."""

    def __enter__(self):
        import transformers

        self.level = transformers.logging.get_verbosity()
        self.bars = transformers.logging.is_progress_bar_enabled()
        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()

    def __exit__(self, *exc):
        import transformers

        transformers.logging.set_verbosity(self.level)
        if self.bars:
            transformers.logging.enable_progress_bar()
