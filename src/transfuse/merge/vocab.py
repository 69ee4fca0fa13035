"""mergekit's ``tokenizer_source`` / ``tokenizer:``: an output vocabulary and embedding rows rebuilt per token.

Follows mergekit 0.1.5 ``tokenizer/build.py`` (``build_tokenizer``, ``build_union_tokenizer``) and
``tokenizer/embed.py`` (``PermutedVocabulary``):

- the output tokenizer is the base's (``base``; the base is ``base_model``, else the first model),
  a model's, or the union: the base's tokenizer, then every other model's tokens it lacks (plain
  tokens first, then added tokens, the first settings of each kept), added in that order; then the
  ``tokenizer.tokens`` keys it still lacks;
- each model's vocabulary tensors (embeddings, lm_head: rows indexed by token) are rebuilt with one
  row per output token: its own row where it has the token; otherwise a default shared by all
  models: the one model's row when a single model has the token, the base's when the base has it,
  else the mean over the models that have it, zero when none has; ``tokens:`` entries choose a
  model's row, another token's row or zero instead (``force`` applies them to every model);
- ``pad_to_multiple_of`` pads with rows equal to the mean of the real rows; ``vocab_size`` of the
  output config is the (padded) vocabulary size.

Rows are gathered per row block as the engine streams (the model's rows of that block, the
defaults read once per tensor), so nothing larger than a block is read at once. The tokenizers are
read and written with transformers (``AutoTokenizer``), as mergekit does.
"""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .._lazy import torch
from .config import MergeConfig, TokenEmbedding, TokenSource

def _load_tokenizer(path: str):
    if not Path(path).is_dir():
        return None
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, use_fast=True, local_files_only=True)
    except Exception:  # noqa: BLE001 - any failure means: no usable tokenizer there
        return None


def _vocab_size(cfg: Dict[str, Any], tok) -> int:
    return int(cfg.get("vocab_size") or len(tok.get_vocab()))


def _union_tokenizer(base_tok, tokenizers: Dict[str, Any], sizes: Dict[str, int]):
    """mergekit ``build_union_tokenizer``: the base's tokenizer plus every other model's tokens."""
    plain: Dict[str, int] = {}
    added: Dict[str, Any] = {}
    for model, tok in tokenizers.items():
        decoder = tok.added_tokens_decoder  # {id: AddedToken}
        added_names = {info.content for info in decoder.values()}
        for t, idx in tok.get_vocab().items():
            if idx < sizes[model] and t not in added_names and t not in plain:
                plain[t] = len(plain)
        for idx, info in decoder.items():
            if idx < sizes[model] and info.content not in added:
                added[info.content] = info
    with tempfile.TemporaryDirectory() as tmp:  # a copy: the base's tokenizer stays as loaded
        base_tok.save_pretrained(tmp)
        from transformers import AutoTokenizer

        out = AutoTokenizer.from_pretrained(tmp, use_fast=True)
    base_vocab = base_tok.get_vocab()
    for t in plain:
        if t not in added and t not in base_vocab:
            out.add_tokens(t)
    for info in added.values():
        out.add_tokens(info)
    return out


@dataclass
class Vocabulary:
    """The output vocabulary and, per input model, where each of its output rows comes from."""

    tokenizer: Any  # transformers tokenizer written to the output
    n_tokens: int  # tokens in the output vocabulary
    rows: int  # output rows (n_tokens padded to pad_to_multiple_of)
    perms: Dict[str, np.ndarray]  # model -> (n_tokens,) its row of each output token, -1 when it lacks it
    tokens: Dict[str, TokenEmbedding]  # the tokenizer: block's per-token sources
    original: Dict[str, Dict[str, int]]  # model -> its own vocabulary (token -> row)
    sizes: Dict[str, int]  # model -> its embedding rows (vocab_size)
    forced: np.ndarray  # (n_tokens,) bool: the default is used even where a model has the token
    _cache: Dict[Any, Any] = field(default_factory=dict)

    def defaults_for(self, models: Tuple[str, ...], base: Optional[str], problems: Optional[List[str]] = None) -> Dict[int, Tuple]:
        """mergekit ``assign_embedding_sources`` for one tensor merged over ``models``: output row ->
        ("rows", [(model, row), ...]) the mean of those rows, or ("zero",); rows every model has are absent."""
        key = ("defaults", models, base)
        if key in self._cache and problems is None:
            return self._cache[key]
        out: Dict[int, Tuple] = {}
        sink: List[str] = [] if problems is None else problems
        for t, i in self.tokenizer.get_vocab().items():
            has = [m for m in models if self.perms[m][i] >= 0]
            cfg_t = self.tokens.get(t)
            if cfg_t is not None:
                if not cfg_t.force and len(has) == len(models):
                    continue
                spec = _token_source(t, i, cfg_t, list(models), self.perms, self.original, sink, self.sizes)
                if spec is not None:
                    out[i] = spec
            elif len(has) == len(models):
                continue
            elif len(has) == 1:
                out[i] = ("rows", [(has[0], int(self.perms[has[0]][i]))])
            elif not has:
                out[i] = ("zero",)
            elif base in has:
                out[i] = ("rows", [(base, int(self.perms[base][i]))])
            else:
                out[i] = ("rows", [(m, int(self.perms[m][i])) for m in has])
        self._cache[key] = out
        return out

    def lacking(self) -> int:
        """How many output tokens at least one model lacks."""
        return int((np.stack(list(self.perms.values())) < 0).any(0).sum())

    def default_row(self, row: int, name: str, read_row, defaults: Dict[int, Tuple]) -> Optional["torch.Tensor"]:
        """The shared default of output row ``row`` of tensor ``name`` (float32), None when it has none."""
        key = (name, row, id(defaults))
        if key not in self._cache:
            spec = defaults.get(row)
            if spec is None:
                self._cache[key] = None
            elif spec[0] == "zero":
                self._cache[key] = 0.0
            else:
                self._cache[key] = sum(read_row(m, r) for m, r in spec[1]) / len(spec[1])
        return self._cache[key]

    def read(self, model: str, name: str, r0: int, r1: int, read_rows, read_row, shape_rest,
             models: Tuple[str, ...], base: Optional[str]) -> "torch.Tensor":
        """Rows [r0, r1) of ``model``'s rebuilt tensor (float32), the tensor being merged over ``models``:
        ``read_rows(lo, hi)`` reads its own rows, ``read_row(model, row)`` one row of any of them (defaults)."""
        defaults = self.defaults_for(models, base)
        out = torch.zeros((r1 - r0, *shape_rest), dtype=torch.float32)
        hi_tok = min(r1, self.n_tokens)
        if r0 < hi_tok:
            p = self.perms[model][r0:hi_tok]
            own = (p >= 0) & ~self.forced[r0:hi_tok]
            idx = np.nonzero(own)[0]
            for run in _runs(p[idx]):  # the source rows in runs of nearby rows: one read each
                src_rows = p[idx[run]]
                lo, hi = int(src_rows.min()), int(src_rows.max()) + 1
                out[torch.from_numpy(idx[run])] = read_rows(lo, hi).float()[torch.from_numpy(src_rows - lo)]
            for i in np.nonzero(~own)[0]:
                d = self.default_row(r0 + int(i), name, read_row, defaults)
                if d is not None:
                    out[int(i)] = d
        if r1 > self.n_tokens:  # padding rows: the mean of the real rows (mergekit, after Hewitt's note)
            key = (name, -1, model, models)
            if key not in self._cache:
                self._cache[key] = self.read(model, name, 0, self.n_tokens, read_rows, read_row, shape_rest, models, base).mean(0)
            out[max(r0, self.n_tokens) - r0:] = self._cache[key]
        return out


def _runs(rows: np.ndarray, gap: int = 64) -> List[np.ndarray]:
    """Positions into ``rows`` grouped so that each group's rows lie in a span with no hole over
    ``gap`` rows: a reordered vocabulary costs reads about its own size, not a whole span per block."""
    if rows.size == 0:
        return []
    order = np.argsort(rows, kind="stable")
    cuts = np.nonzero(np.diff(rows[order]) > gap)[0] + 1
    return np.split(order, cuts)


def needed(cfg: MergeConfig) -> bool:
    """Whether the config asks for rebuilt vocabularies (mergekit: whenever a tokenizer source is set)."""
    return cfg.tokenizer is not None or cfg.tokenizer_source is not None


def build(cfg: MergeConfig, models: List[str], base_model: Optional[str], model_configs: Dict[str, Dict[str, Any]],
          problems: List[str]) -> Optional[Vocabulary]:
    """The output vocabulary for ``models`` (every merged model, the base among them when there is one).
    Problems (no tokenizer, unknown token sources) are appended. None when nothing is to be rebuilt:
    every model has the output vocabulary, row for row, or (``tokenizer_source`` base or a model, all
    vocabulary sizes equal) the tokenizers cannot be loaded: the files are then copied as they are."""
    source = cfg.tokenizer.source if cfg.tokenizer is not None else cfg.tokenizer_source
    tokens: Dict[str, TokenEmbedding] = dict(cfg.tokenizer.tokens) if cfg.tokenizer is not None else {}
    pad = cfg.tokenizer.pad_to_multiple_of if cfg.tokenizer is not None else None
    base = base_model or models[0]
    sizes_cfg = {int(c["vocab_size"]) for c in model_configs.values() if c.get("vocab_size")}
    strict = source == "union" or cfg.tokenizer is not None or len(sizes_cfg) > 1
    base_tok = _load_tokenizer(base)
    if base_tok is None:
        if not strict:
            return None
        problems.append(f"tokenizer: {base!r} (the base) has no tokenizer transformers can load; the output vocabulary "
                        "is built from it (add its tokenizer files, or drop tokenizer_source)")
        return None
    sizes = {base: _vocab_size(model_configs.get(base, {}), base_tok)}
    if any(idx >= sizes[base] for idx in base_tok.get_vocab().values()):
        problems.append(f"tokenizer: {base!r}'s tokenizer has tokens past its vocab_size {sizes[base]}; stripping them "
                        "(mergekit's BPE-only rewrite) is not supported: fix its config's vocab_size")
        return None
    tokenizers = {base: base_tok}
    for m in models:
        if m != base:
            tok = _load_tokenizer(m)
            if tok is not None:  # mergekit: a model without a loadable tokenizer is read as having the base's
                tokenizers[m] = tok
                sizes[m] = _vocab_size(model_configs.get(m, {}), tok)
    if source == "union":
        out = _union_tokenizer(base_tok, tokenizers, sizes)
    elif source == "base":
        out = base_tok
    else:
        out = _load_tokenizer(source)
        if out is None:
            problems.append(f"tokenizer_source {source!r} has no tokenizer transformers can load")
            return None
    existing = set(out.get_vocab())
    for t in tokens:
        if t not in existing:
            out.add_tokens(t)
            existing.add(t)
    vocab = out.get_vocab()  # token -> output row
    n = len(vocab)
    rows = n if not pad or n % pad == 0 else (n // pad + 1) * pad
    perms: Dict[str, np.ndarray] = {}
    for m in models:
        mv = (tokenizers.get(m) or base_tok).get_vocab()
        size = sizes.get(m, sizes[base])
        p = np.full(n, -1, dtype=np.int64)
        for t, i in vocab.items():
            j = mv.get(t)
            if j is not None and j < size:
                p[i] = j
        perms[m] = p
    original = {m: (tokenizers.get(m) or base_tok).get_vocab() for m in models}
    all_sizes = {m: sizes.get(m, sizes[base]) for m in models}
    forced = np.zeros(n, dtype=bool)
    for t, cfg_t in tokens.items():
        forced[vocab[t]] = cfg_t.force
    result = Vocabulary(out, n, rows, perms, tokens, original, all_sizes, forced)
    defaults = result.defaults_for(tuple(models), base_model, problems)
    identity = np.arange(n)
    if not defaults and not forced.any() and rows == n and all(
            all_sizes[m] == n and np.array_equal(perms[m], identity) for m in models):
        return None  # every model already has the output vocabulary row for row
    return result


def _token_source(token: str, row: int, cfg_t: TokenEmbedding, models: List[str], perms, original, problems,
                  sizes: Dict[str, int]) -> Optional[Tuple]:
    """mergekit ``compute_default_embedding``: one ``tokens:`` entry's row."""
    src = cfg_t.source
    if isinstance(src, TokenSource) and src.kind == "zero":
        return ("zero",)
    model = src.model if isinstance(src, TokenSource) else src
    if model is None:
        problems.append(f"tokenizer.tokens[{token!r}]: give a source (a model, {{kind: zero}} or {{kind: model_token, ...}})")
        return None
    if model not in models:
        problems.append(f"tokenizer.tokens[{token!r}]: source model {model!r} is not one of the merged models {models}")
        return None
    if isinstance(src, TokenSource):
        tid = src.token_id
        if tid is None:
            tid = original[model].get(src.token)
            if tid is None:
                problems.append(f"tokenizer.tokens[{token!r}]: token {src.token!r} is not in {model!r}'s vocabulary")
                return None
        if not 0 <= tid < sizes[model]:
            problems.append(f"tokenizer.tokens[{token!r}]: token_id {tid} is outside {model!r}'s {sizes[model]} rows")
            return None
        return ("rows", [(model, int(tid))])
    if perms[model][row] < 0:
        problems.append(f"tokenizer.tokens[{token!r}]: {model!r} does not have the token; name a model that has it, "
                        "or use {kind: model_token, model: ..., token: ...}")
        return None
    return ("rows", [(model, int(perms[model][row]))])


def write_tokenizer(vocab: Vocabulary, folder: Path) -> None:
    """The output tokenizer's files into ``folder`` (transformers ``save_pretrained``, as mergekit)."""
    with tempfile.TemporaryDirectory() as tmp:
        vocab.tokenizer.save_pretrained(tmp)
        for f in Path(tmp).iterdir():
            shutil.copyfile(f, folder / f.name)
