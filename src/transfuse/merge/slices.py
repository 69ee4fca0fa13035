"""mergekit's ``slices:`` (frankenmerges, passthrough stacks, merges over layer ranges) as virtual models.

Follows mergekit 0.1.5 ``plan.py`` (``MergePlanner.plan_module``, ``plan_slice``, ``plan_layer``) and
``merge.py`` (``_model_out_config``):

- output layers are numbered in slice order; output layer ``offset + i`` of a slice reads layer
  ``layer_range[0] + i`` of each of its sources (every source of a slice spans as many layers);
- the tensors outside the layers come from the first slice's sources (before the layers: the
  embeddings) and from the last slice's (after them: final norm, lm_head);
- a layer's gradient position is ``i / (n - 1)`` within its slice of n layers (1 for a one-layer
  slice), 0 outside the layers;
- a model's parameters are looked up in its source entry, then the slice's ``parameters``, then the
  global ones; its ``filter:`` entries are matched against its own (source) tensor name;
- the base of a slice is its ``base_model`` or the global one, and must be among its sources
  (as mergekit's methods require); ``num_hidden_layers`` of the output config is the sum of the slices.

Each merged position (base, expert 1..K) becomes one ``SlicedSource``: a safetensors source whose
table maps output names to the byte ranges of the source models' files, so the engine streams it
exactly like a model folder (memory maps, fused kernels, nothing read before it is merged).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ..errors import TransfuseError
from . import mergekit as mk
from .config import MergeConfig, OutputSlice, SliceSource
from .io import SafetensorsSource, TensorInfo, open_source

_LAYER = mk._LAYER  # a tensor's layer index in its name
# tensors outside the layers that mergekit's architectures list before them (the rest come after)
_PRE = re.compile(r"(embed_tokens|wte|wpe|word_embeddings|embed_in|embeddings)")
_LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers")


class SlicedSource(SafetensorsSource):
    """A virtual model: output tensor names mapped onto the byte ranges of other safetensors files."""

    kind = "slices"

    def __init__(self, label: str, table: Dict[str, TensorInfo], config: Dict[str, Any], config_dir: Optional[Path]) -> None:
        import threading

        self.path = Path(label)
        self.label = label
        self.config_dir = config_dir
        self.table = table
        self._config = config
        self._files = list(dict.fromkeys(info.file for info in table.values()))
        self._fds: Dict[Path, int] = {}
        self._maps: Dict[Path, Any] = {}
        self._map_lock = threading.Lock()

    def config(self) -> dict:
        return dict(self._config)


@dataclass
class Origin:
    """Where one output tensor comes from, for the per-tensor parameter lookup."""

    t: float  # gradient position
    names: List[str]  # per expert: the tensor's name in its own model (per-model filters match it)
    scopes: List[List[Dict[str, Any]]]  # per expert: its parameter dicts, highest precedence first (source, slice)
    shared: Dict[str, Any]  # the slice's parameters (over the global ones)
    models: List[str]  # per expert: the model it reads this tensor from
    base: Optional[Tuple[str, str]]  # (model, tensor name) of the base, None without one


@dataclass
class SliceLayout:
    base: Optional[SlicedSource]
    experts: List[SlicedSource]
    labels: List[str]  # per expert: which models and layers it stacks
    origins: Dict[str, Origin]
    out_config: Dict[str, Any]  # config.json of the output (layer count updated)
    problems: List[str] = field(default_factory=list)
    opened: Dict[str, SafetensorsSource] = field(default_factory=dict)  # model -> its source

    def close(self) -> None:
        for s in self.opened.values():
            s.close()


def set_layer_count(config: Dict[str, Any], n: int) -> Dict[str, Any]:
    """config with its layer count (whichever key the architecture uses) set to n."""
    out = dict(config)
    keys = [k for k in _LAYER_KEYS if k in out] or ["num_hidden_layers"]
    for k in keys:
        out[k] = n
    return out


def _by_layer(names) -> Tuple[Dict[int, Dict[str, str]], List[str]]:
    """({layer: {name with the index as {}: name}}, names outside the layers)."""
    layers: Dict[int, Dict[str, str]] = {}
    outside: List[str] = []
    for name in names:
        m = _LAYER.search(name)
        if m is None:
            outside.append(name)
        else:
            layers.setdefault(int(m.group(1)), {})[name[: m.start(1)] + "{}" + name[m.end(1):]] = name
    return layers, outside


def _order(sl: OutputSlice, base: Optional[str], member: bool) -> Tuple[Optional[SliceSource], List[SliceSource]]:
    """(the slice's base source or None, its merged sources in order): a base that is merged as a
    member (slerp, passthrough) comes first, otherwise it is taken out of the merged sources."""
    found = [s for s in sl.sources if base is not None and s.model == base]
    if not found:
        return None, list(sl.sources)
    others = [s for s in sl.sources if s.model != base]
    return found[0], (found + others if member else others)


def expand(cfg: MergeConfig, method_cls, *, allow_pickle: bool) -> SliceLayout:
    """The virtual base and experts of a ``slices:`` config, every problem found before any work raised."""
    slices = cfg.slices or []
    opened: Dict[str, SafetensorsSource] = {}

    def source(model: str) -> SafetensorsSource:
        if model not in opened:
            s = open_source(model, allow_pickle=allow_pickle)
            if not isinstance(s, SafetensorsSource):
                raise TransfuseError(f"slices: {model!r} is not a safetensors model; slices read safetensors folders or files "
                                     "(convert the model, or merge LoRA adapters first)")
            opened[model] = s
        return opened[model]

    member = getattr(method_cls, "base_role", "base") == "member"
    plans: List[Tuple[Optional[SliceSource], List[SliceSource], int]] = []
    for i, sl in enumerate(slices):
        lengths = set()
        seen = set()
        for src in sl.sources:
            if src.model in seen:
                raise TransfuseError(f"slices[{i}]: {src.model!r} is listed twice in one slice; mergekit merges one "
                                     "layer range per model in a slice (split it into two slices)")
            seen.add(src.model)
            s = source(src.model)
            a, b = src.layer_range
            n = mk.num_layers(s.config(), s.infos())
            if not 0 <= a < b <= n:
                raise TransfuseError(f"slices[{i}]: layer_range [{a}, {b}] of {src.model!r} is outside its {n} layers; "
                                     f"use 0 <= start < end <= {n}")
            lengths.add(b - a)
        if len(lengths) > 1:
            raise TransfuseError(f"slices[{i}]: its sources span {sorted(lengths)} layers; every source of a slice must "
                                 "span the same number of layers (as mergekit)")
        base_src, merged = _order(sl, sl.base_model or cfg.base_model, member)
        plans.append((base_src, merged, lengths.pop()))
    named_base = [sl.base_model or cfg.base_model for sl in slices]
    has_base = all(b is not None for b in named_base) and all(p[0] is not None for p in plans)
    if method_cls.needs_base and not has_base:
        missing = next(i for i, p in enumerate(plans) if p[0] is None)
        raise TransfuseError(f"slices[{missing}]: merge method {cfg.method!r} needs a base model among the slice's sources; "
                             "set base_model (globally or on the slice) to one of its sources")
    if not has_base:  # no base in some slice: every source is merged, in the order listed
        plans = [(None, list(sl.sources), n) for sl, (_, _, n) in zip(slices, plans)]
    counts = {len(p[1]) for p in plans}
    if len(counts) > 1:
        raise TransfuseError(f"slices: the slices merge {sorted(counts)} sources each; transfuse needs the same number "
                             "of merged sources in every slice (split the config into merges of equal width)")
    K = counts.pop()
    if K == 0:
        raise TransfuseError("slices: a slice lists only its base model; add the models to merge into it")

    tables: List[Dict[str, TensorInfo]] = [{} for _ in range(K)]
    base_table: Dict[str, TensorInfo] = {}
    origins: Dict[str, Origin] = {}

    def place(out_name: str, entries: List[Tuple[SliceSource, str]], base_entry, t: float, sl: OutputSlice) -> None:
        for j, (src, name) in enumerate(entries):
            table = opened[src.model].table
            if name in table:
                tables[j][out_name] = table[name]
        if base_entry is not None and base_entry[1] in opened[base_entry[0].model].table:
            base_table[out_name] = opened[base_entry[0].model].table[base_entry[1]]
        origins[out_name] = Origin(t, [n for _, n in entries], [[s.parameters, sl.parameters] for s, _ in entries], sl.parameters,
                                   [s.model for s, _ in entries], (base_entry[0].model, base_entry[1]) if base_entry else None)

    split = {m: _by_layer(s.infos()) for m, s in opened.items()}
    ref_of = lambda p: p[0] if has_base else p[1][0]  # noqa: E731 - the source whose names the output takes

    def outside(p, sl, pre: bool) -> None:
        ref = ref_of(p)
        for name in split[ref.model][1]:
            if bool(_PRE.search(name)) == pre:
                place(name, [(s, name) for s in p[1]], (p[0], name) if has_base else None, 0.0, sl)

    outside(plans[0], slices[0], True)
    offset = 0
    for sl, p in zip(slices, plans):
        n = p[2]
        for i in range(n):
            t = i / (n - 1) if n > 1 else 1.0
            ref = ref_of(p)
            for pattern in split[ref.model][0].get(ref.layer_range[0] + i, {}):
                out_name = pattern.format(offset + i)
                entries = [(s, split[s.model][0].get(s.layer_range[0] + i, {}).get(pattern, pattern.format(s.layer_range[0] + i)))
                           for s in p[1]]
                base_entry = (p[0], pattern.format(p[0].layer_range[0] + i)) if has_base else None
                place(out_name, entries, base_entry, t, sl)
        offset += n
    outside(plans[-1], slices[-1], False)

    # the output config: the base's (else the first source's), layer count set (mergekit _model_out_config)
    donor = cfg.base_model or slices[0].sources[0].model
    donor_src = opened.get(donor) or source(donor)
    out_config = set_layer_count(donor_src.config(), offset)
    problems = []
    arch = out_config.get("architectures"), out_config.get("model_type")
    for m, s in opened.items():
        c = s.config()
        if c and out_config and (c.get("architectures"), c.get("model_type")) != arch:
            problems.append(f"architecture mismatch: {m!r} is {c.get('architectures')} ({c.get('model_type')}), "
                            f"the output is {arch[0]} ({arch[1]})")
    labels = [" + ".join(f"{sl_p[1][j].model}[{sl_p[1][j].layer_range[0]}:{sl_p[1][j].layer_range[1]}]" for sl_p in plans)
              for j in range(K)]
    config_dir = donor_src.config_dir
    experts = [SlicedSource(label, tables[j], out_config, config_dir) for j, label in enumerate(labels)]
    base = SlicedSource("base: " + " + ".join(f"{p[0].model}[{p[0].layer_range[0]}:{p[0].layer_range[1]}]" for p in plans),
                        base_table, out_config, config_dir) if has_base else None
    return SliceLayout(base, experts, labels, origins, out_config, problems, opened)
