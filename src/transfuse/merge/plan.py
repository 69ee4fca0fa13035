"""The merge plan: every input's tensor names, shapes and dtypes, checked before any work.

``make_plan`` opens the inputs (headers only), builds the method instances (one per distinct
set of per-tensor overrides) and lists every problem in one line each: architectures, missing
or extra tensors, shapes, dtypes, vocabulary sizes (with the ``vocab_policy``) and tied
embeddings. ``--check`` prints them; a merge refuses to start while any remain.
"""
from __future__ import annotations

import fnmatch
import inspect
import json
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from .._lazy import torch
from ..errors import TransfuseError, closest
from . import mergekit as mk
from .config import MergeConfig, ModelEntry, parse_size
from .dtypes import BF16, F16, F32, F64, DType
from .io import LoraSource, Source, open_source
from .methods import MergeMethod, methods
from .slices import SliceLayout, expand as expand_slices
from .vocab import Vocabulary, build as build_vocabulary, needed as vocabulary_needed

_VOCAB_NAME = re.compile(r"(embed_tokens|lm_head|wte|word_embeddings|embed_out|output\.weight|shared\.weight)")
_DTYPES = {"float32": F32, "fp32": F32, "float16": F16, "fp16": F16, "bfloat16": BF16, "bf16": BF16, "float64": F64}


def parse_dtype(name: Optional[str], what: str) -> Optional[DType]:
    if name is None:
        return None
    if name not in _DTYPES:
        raise TransfuseError(f"{what} {name!r} is not a dtype.{closest(name, _DTYPES)} Valid: float32, bfloat16, float16.")
    return _DTYPES[name]


@dataclass
class TensorPlan:
    name: str
    shape: Tuple[int, ...]
    out_dtype: DType
    group: int  # index of the method instance that merges it; -1 = copied from the reference
    rows_in: List[int] = field(default_factory=list)  # per expert: rows it has (vocab pad/truncate)
    alias: List[Optional[str]] = field(default_factory=list)  # per expert: name to read instead (tied)
    vocab: bool = False  # rows rebuilt per token of the output vocabulary (Plan.vocabulary)


@dataclass
class Plan:
    config: MergeConfig
    base: Optional[Source]
    experts: List[Source]
    reference: Source  # base, else the first model: names, shapes, config, tokenizer
    weight_values: List[float]  # (K,) each model's weight
    per_model: List[Dict[str, Any]]  # each model's own parameters (besides weight)
    instances: List[MergeMethod]
    instance_params: List[Dict[str, Any]]
    tensors: List[TensorPlan]
    compute_dtype: DType
    problems: List[str]
    notes: List[str]
    statistics: List[Optional[Source]]
    models: List[Any]  # the model entries merged (a base also listed under models taken out, or first for slerp)
    method_name: str  # the transfuse method that runs (a mergekit config's name translated)
    group_weights: List[List[float]]  # per method instance: (K,) weights of its tensors
    group_per_model: List[List[Dict[str, Any]]]  # per method instance: each model's own parameters
    slice_layout: Optional[SliceLayout] = None  # a slices: config: the virtual models and the output config
    vocabulary: Optional[Vocabulary] = None  # tokenizer_source / tokenizer: the output vocabulary (vocab.py)

    @cached_property
    def weights(self) -> "torch.Tensor":
        """(K,) float32: the weights as the torch methods take them."""
        return torch.tensor(self.weight_values, dtype=torch.float32)

    def group_w(self, group: int) -> "torch.Tensor":
        """(K,) float32 weights of method instance ``group``'s tensors."""
        cache = self.__dict__.setdefault("_group_w", {})
        if group not in cache:
            cache[group] = torch.tensor(self.group_weights[group], dtype=torch.float32)
        return cache[group]

    def vocab_inputs(self, tp: "TensorPlan") -> Tuple[Dict[str, Tuple[Source, str]], List[str], Optional[str]]:
        """For a tensor on the rebuilt vocabulary: (model -> (its source, its name of the tensor),
        the model each expert reads it from, the base model or None). With slices the models are
        those of the slice the tensor comes from (the first slice's for the embeddings, the last's
        for lm_head), as mergekit gathers them."""
        origin = self.slice_layout.origins.get(tp.name) if self.slice_layout is not None else None
        where: Dict[str, Tuple[Source, str]] = {}
        if origin is not None:
            opened = self.slice_layout.opened
            if origin.base is not None:
                where[origin.base[0]] = (opened[origin.base[0]], origin.base[1])
            for i, (m, n) in enumerate(zip(origin.models, origin.names)):
                where.setdefault(m, (opened[m], tp.alias[i] or n))
            return where, list(origin.models), origin.base[0] if origin.base else None
        if self.base is not None:
            where[self.config.base_model] = (self.base, tp.name)
        for i, (m, src) in enumerate(zip(self.models, self.experts)):
            where.setdefault(m.model, (src, tp.alias[i] or tp.name))
        return where, [m.model for m in self.models], self.config.base_model if self.base is not None else None

    def close(self) -> None:
        for s in [self.base, *self.experts, *self.statistics]:
            if s is not None:
                s.close()
        if self.slice_layout is not None:
            self.slice_layout.close()


def build_method(name: str, params: Dict[str, Any]) -> MergeMethod:
    cls = methods.get(name)
    sig = inspect.signature(cls.__init__)
    valid = [p for p in sig.parameters if p != "self"]
    for key in params:
        if key not in valid:
            raise TransfuseError(
                f"merge method {name!r} has no parameter {key!r}.{closest(key, valid)} Valid: {', '.join(valid) or 'none'}."
            )
    try:
        return cls(**params)
    except (TypeError, ValueError) as exc:
        raise TransfuseError(f"bad parameters for merge method {name!r}: {exc}") from None


def make_plan(cfg: MergeConfig, *, allow_pickle: bool) -> Plan:
    mergekit = cfg.dialect == "mergekit"
    parse_size(cfg.shard_size)  # a bad size is refused now, not once the output folder exists
    if cfg.config_from and not Path(cfg.config_from).exists():
        raise TransfuseError(f"config_from {cfg.config_from!r} does not exist; name the model folder whose config.json to copy")
    global_settings = dict(cfg.parameters)
    for key, value in global_settings.items():
        mk.check_setting(f"parameters.{key}", value)
    for m in cfg.models:
        for key, value in m.parameters.items():
            mk.check_setting(f"model {m.model!r}: parameters.{key}", value)
    for i, sl in enumerate(cfg.slices or []):
        for key, value in sl.parameters.items():
            mk.check_setting(f"slices[{i}]: parameters.{key}", value)
        for src in sl.sources:
            for key, value in src.parameters.items():
                mk.check_setting(f"slices[{i}] model {src.model!r}: parameters.{key}", value)
    for o in cfg.overrides:
        for key, value in o.parameters.items():
            mk.check_setting(f"override {o.pattern!r}: parameters.{key}", value)
    notes: List[str] = []
    method_name = cfg.method
    if mergekit:
        method_name, global_settings, note = mk.translate(cfg.method, global_settings)
        if note:
            notes.append(note)
    elif "lambda" in global_settings:
        global_settings["scale"] = global_settings.pop("lambda")
    cls = methods.get(method_name)
    compute_dtype = parse_dtype(cfg.dtype or "float32", "dtype")
    # mergekit writes its compute dtype unless out_dtype says otherwise
    out_dtype = parse_dtype(cfg.out_dtype or (cfg.dtype if mergekit else None), "out_dtype")
    layout = expand_slices(cfg, cls, allow_pickle=allow_pickle) if cfg.slices else None
    if layout is not None:
        base = layout.base
    else:
        base = open_source(cfg.base_model, allow_pickle=allow_pickle) if cfg.base_model else None
    if isinstance(base, LoraSource):
        raise TransfuseError("base_model is a LoRA adapter; the base must be a full model")
    models = list(cfg.models)
    if layout is not None:  # one entry per merged position; parameters come from the slices (Origin)
        models = [ModelEntry(model=label) for label in layout.labels]
    elif cfg.base_model and getattr(cls, "base_role", "base") == "member":
        # slerp, karcher, passthrough: the base is the first of the merged models (t = 0 gives it)
        listed = [m for m in models if m.model == cfg.base_model]
        models = (listed or [ModelEntry(model=cfg.base_model)]) + [m for m in models if m.model != cfg.base_model]
    elif cfg.base_model and any(m.model == cfg.base_model for m in models):
        models = [m for m in models if m.model != cfg.base_model]
        notes.append(f"base_model {cfg.base_model!r} is also listed under models: it is the base, not an expert (as mergekit)")
    if not models:
        raise TransfuseError("models lists only the base_model: add the models to merge into it")
    if cls.needs_base and base is None:
        raise TransfuseError(f"merge method {cfg.method!r} needs base_model (the common starting point of the models)")
    experts = list(layout.experts) if layout is not None else [open_source(m.model, allow_pickle=allow_pickle) for m in models]
    if base is None and any(isinstance(e, LoraSource) for e in experts):
        raise TransfuseError("LoRA adapters need base_model: the model they were trained on")
    reference = base if base is not None else experts[0]

    # per-model parameters: names checked, statistics opened
    statistics = []
    global_weight = global_settings.pop("weight", 1.0)
    per_model_keys = ("weight", *cls.per_model_params)
    for i, sl in enumerate(cfg.slices or []):
        if cls.data_driven:
            raise TransfuseError(f"method {cfg.method!r} is data-driven (per-model statistics); it does not take slices:, use models:")
        for src in sl.sources:
            for key in src.parameters:
                if key not in per_model_keys:
                    raise TransfuseError(
                        f"slices[{i}] model {src.model!r}: parameter {key!r} is not per-model for {cfg.method!r}."
                        f"{closest(key, per_model_keys)} Per-model parameters: {', '.join(per_model_keys)}.")
    for m in models:
        for key in m.parameters:
            if key not in ("weight", "statistics", *cls.per_model_params):
                allowed = ["weight", *cls.per_model_params] + (["statistics"] if cls.data_driven else [])
                raise TransfuseError(
                    f"model {m.model!r}: parameter {key!r} is not per-model for {cfg.method!r}.{closest(key, allowed)} "
                    f"Per-model parameters: {', '.join(allowed)}."
                )
        stats_path = m.parameters.get("statistics")
        if cls.data_driven:
            if stats_path is None:
                raise TransfuseError(
                    f"method {cfg.method!r} is data-driven: give each model parameters.statistics (a safetensors file "
                    "made by transfuse.merge.stats)"
                )
            statistics.append(open_source(str(stats_path), allow_pickle=False))
        elif stats_path is not None:
            raise TransfuseError(f"model {m.model!r}: 'statistics' is only used by data-driven methods (fisher, regmean)")
        else:
            statistics.append(None)

    # every parameter resolved per tensor (gradients over the layers, filter lists, overrides):
    # one method instance per distinct set of values
    ref_infos = reference.infos()
    n_layers = mk.num_layers(reference.config(), ref_infos)
    instances: List[MergeMethod] = []
    instance_params: List[Dict[str, Any]] = []
    group_weights: List[List[float]] = []
    group_per_model: List[List[Dict[str, Any]]] = []
    group_of: Dict[str, int] = {}
    seen: Dict[str, int] = {}

    def resolve(name: str) -> int:
        origin = layout.origins.get(name) if layout is not None else None
        t = origin.t if origin is not None else mk.layer_fraction(name, n_layers)
        params = {k: v for k, v in ((k, mk.evaluate(v, name, t)) for k, v in global_settings.items()) if v is not None}
        if origin is not None:  # the slice's parameters over the global ones
            params.update({mk.rename_key(k): v for k, v in ((k, mk.evaluate(v, name, t)) for k, v in origin.shared.items())
                           if v is not None and k != "weight"})
        for o in cfg.overrides:
            if fnmatch.fnmatchcase(name, o.pattern):
                params.update({k: v for k, v in ((k, mk.evaluate(v, name, t)) for k, v in o.parameters.items()) if v is not None})
        weights, per_model = [], []
        for j, m in enumerate(models):
            if origin is not None:  # source entry, then the slice; filters match the source's own tensor name
                p = mk.evaluate_scopes(origin.scopes[j], per_model_keys, origin.names[j], t)
            else:
                p = {k: mk.evaluate(v, name, t) for k, v in m.parameters.items() if k != "statistics"}
            wv = p.pop("weight", None)
            wv = mk.evaluate(global_weight, name, t) if wv is None else wv
            try:
                if isinstance(wv, (bool, str)):
                    raise TypeError
                weights.append(float(1.0 if wv is None else wv))
            except (TypeError, ValueError):
                raise TransfuseError(f"model {m.model!r}: weight must be a number, got {wv!r}") from None
            for k, v in p.items():
                if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                    raise TransfuseError(f"model {m.model!r}: {k} must be a number (or a gradient list of numbers), got {v!r}")
            per_model.append({k: v for k, v in p.items() if v is not None})
        key = json.dumps([params, weights, per_model], sort_keys=True, default=str)
        if key not in seen:
            seen[key] = len(instances)
            instances.append(build_method(method_name, params))
            for m, pm in zip(models, per_model):  # a model's own values pass the method's range checks too
                own = {k: v for k, v in pm.items() if k in inspect.signature(type(instances[-1]).__init__).parameters}
                if own:
                    try:
                        build_method(method_name, {**params, **own})
                    except TransfuseError as exc:
                        raise TransfuseError(f"model {m.model!r}: {exc}") from None
            instance_params.append(params)
            group_weights.append(weights)
            group_per_model.append(per_model)
        return seen[key]

    for name, (shape, dtype) in ref_infos.items():
        if dtype.is_floating_point:
            group_of[name] = resolve(name)
    if not instances:
        resolve("")
    if len(experts) < getattr(cls, "models_min", 1):
        extra = " besides base_model" if cls.needs_base else ""
        raise TransfuseError(f"merge method {cfg.method!r} takes at least {cls.models_min} models{extra}, got {len(experts)}")
    for name, gi in group_of.items():  # weights the method cannot use (a division by their zero sum)
        why = instances[gi].weight_problem(group_weights[gi])
        if why:
            raise TransfuseError(f"{name}: {why}")
    if getattr(instances[0], "models_required", None) and len(experts) != instances[0].models_required:
        extra = " besides base_model" if cls.needs_base else ""
        raise TransfuseError(f"merge method {cfg.method!r} takes exactly {instances[0].models_required} models{extra}, got {len(experts)}")

    problems: List[str] = list(layout.problems) if layout is not None else []
    vocabulary = None
    if vocabulary_needed(cfg):
        if any(isinstance(e, LoraSource) for e in experts):
            raise TransfuseError("tokenizer_source / tokenizer: with LoRA adapters is not supported; merge the adapters first")
        if layout is not None:  # every model the slices read
            names = cfg.referenced_models()
            configs = {n: s.config() for n, s in layout.opened.items()}
        else:
            names = list(dict.fromkeys(([cfg.base_model] if cfg.base_model else []) + [m.model for m in models]))
            configs = {n: s.config() for n, s in zip([m.model for m in models] + ([cfg.base_model] if cfg.base_model else []),
                                                      experts + ([base] if base is not None else []))}
        before = len(problems)
        _check_tokenizer_source(cfg, None, problems)
        if len(problems) == before:
            vocabulary = build_vocabulary(cfg, names, cfg.base_model, configs, problems)
    for m, st in zip(models, statistics):  # a statistic of the wrong shape would fail (or be skipped) mid-merge
        if st is None:
            continue
        for name, (sshape, _) in st.infos().items():
            want = cls.statistic_shape(ref_infos[name][0]) if name in ref_infos else None
            if want is not None and tuple(sshape) != tuple(want):
                problems.append(f"statistics shape: {m.model!r}'s statistics give {name} the shape {list(sshape)}; "
                                f"{cfg.method} needs {list(want)} (recompute them on this model)")
    ref_cfg = reference.config()
    ref_arch = ref_cfg.get("architectures"), ref_cfg.get("model_type")
    for m, e in zip(models, experts):
        if isinstance(e, LoraSource):
            continue
        ecfg = e.config()
        if ref_cfg and ecfg and (ecfg.get("architectures"), ecfg.get("model_type")) != ref_arch:
            problems.append(
                f"architecture mismatch: {m.model!r} is {ecfg.get('architectures')} ({ecfg.get('model_type')}), "
                f"the reference is {ref_arch[0]} ({ref_arch[1]})"
            )

    ref_ties = bool(ref_cfg.get("tie_word_embeddings", False))
    expert_infos = [e.infos() for e in experts]
    tensors: List[TensorPlan] = []
    for name, (shape, dtype) in ref_infos.items():
        if not dtype.is_floating_point:
            tensors.append(TensorPlan(name, shape, dtype, -1))
            continue
        tp = TensorPlan(name, shape, out_dtype or dtype, group_of[name])
        if vocabulary is not None and len(shape) >= 1 and _VOCAB_NAME.search(name):
            tp.vocab, tp.shape = True, (vocabulary.rows, *shape[1:])
        for m, e, infos in zip(models, experts, expert_infos):
            tp.alias.append(None)
            tp.rows_in.append(shape[0] if shape else 0)
            if isinstance(e, LoraSource):
                if name in infos and infos[name][0] != shape:
                    problems.append(f"shape mismatch: LoRA {m.model!r} changes {name} as {list(infos[name][0])}, the base has {list(shape)}")
                continue
            src_name = name
            if name not in infos:
                ecfg = e.config()
                tied = ecfg.get("tie_word_embeddings", ref_ties)
                emb = _tied_partner(name, infos)
                if tied and emb is not None:
                    tp.alias[-1] = src_name = emb
                    notes.append(f"{m.model!r} ties {name} to {emb}; its embeddings are used for {name}")
                else:
                    problems.append(f"missing tensor: {m.model!r} has no {name} (the reference has it)")
                    continue
            eshape, edtype = infos[src_name]
            if tp.vocab and eshape[1:] != shape[1:]:
                problems.append(f"shape mismatch: {name} is {list(eshape)} in {m.model!r} but {list(shape)} in the reference")
            elif eshape != shape and not tp.vocab:
                is_vocab = (
                    len(eshape) == len(shape) and len(shape) >= 1 and eshape[1:] == shape[1:] and _VOCAB_NAME.search(name)
                )
                if not is_vocab:
                    problems.append(f"shape mismatch: {name} is {list(eshape)} in {m.model!r} but {list(shape)} in the reference")
                elif cfg.vocab_policy == "error":
                    problems.append(
                        f"vocabulary size mismatch: {name} has {eshape[0]} rows in {m.model!r} but {shape[0]} in the reference; "
                        "set vocab_policy: pad (missing rows come from the reference) or truncate (extra rows dropped)"
                    )
                elif cfg.vocab_policy == "pad" and eshape[0] > shape[0]:
                    problems.append(f"vocabulary: {m.model!r} has more rows in {name} ({eshape[0]} > {shape[0]}); vocab_policy pad only fills missing rows, use truncate")
                elif cfg.vocab_policy == "truncate" and eshape[0] < shape[0]:
                    problems.append(f"vocabulary: {m.model!r} has fewer rows in {name} ({eshape[0]} < {shape[0]}); vocab_policy truncate only drops rows, use pad")
                else:
                    tp.rows_in[-1] = min(eshape[0], shape[0])
            if not edtype.is_floating_point:
                problems.append(f"dtype mismatch: {name} is {edtype} in {m.model!r}, expected a float")
            elif edtype != dtype:
                notes.append(f"dtype: {name} is {edtype} in {m.model!r} and {dtype} in the reference (both are read as {compute_dtype})")
        tensors.append(tp)
    if vocabulary is not None and layout is not None:  # token sources each slice's models can give
        for tp in tensors:
            o = layout.origins.get(tp.name) if tp.vocab else None
            if o is not None:
                b = o.base[0] if o.base else None
                vocabulary.defaults_for(tuple(dict.fromkeys(([b] if b else []) + o.models)), b, problems)
    # tensors an expert has that the reference lacks
    for m, e, infos in zip(models, experts, expert_infos):
        extra = [n for n in infos if n not in ref_infos]
        if extra:
            more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
            what = "LoRA target" if isinstance(e, LoraSource) else "tensor"
            problems.append(f"extra {what}: {m.model!r} has {extra[0]}{more}, which the reference lacks")
    if ref_ties is False and "lm_head.weight" not in ref_infos and any("lm_head.weight" in i for i in expert_infos):
        problems.append("tied embeddings: the reference has no lm_head.weight but a model has one; untie the reference or use it as base")
    # vocabulary recorded in the configs
    ref_vocab = ref_cfg.get("vocab_size")
    for m, e in zip(models, experts):
        v = e.config().get("vocab_size") if not isinstance(e, LoraSource) else None
        if ref_vocab and v and v != ref_vocab and cfg.vocab_policy == "error" and vocabulary is None and not any("vocabulary" in p for p in problems):
            problems.append(f"vocabulary size mismatch: {m.model!r} config says {v}, the reference {ref_vocab}; set vocab_policy: pad or truncate")
    if vocabulary is None:
        _check_tokenizer_source(cfg, ref_vocab, problems)
    if cfg.allow_crimes:  # mergekit-yaml --allow-crimes: other architectures merge when their tensors agree
        notes += [p + " (allowed by --allow-crimes)" for p in problems if p.startswith("architecture mismatch")]
        problems = [p for p in problems if not p.startswith("architecture mismatch")]
    # de-duplicate: one line per kind of problem per model
    problems = _summarise(problems)
    notes = _summarise(notes)
    return Plan(cfg, base, experts, reference, group_weights[0], group_per_model[0], instances,
                instance_params, tensors, compute_dtype, problems, notes, statistics,
                models, method_name, group_weights, group_per_model, layout, vocabulary)


def _check_tokenizer_source(cfg: MergeConfig, ref_vocab: Optional[int], problems: List[str]) -> None:
    """mergekit's tokenizer_source: base (the default here) or a listed model with the base's vocabulary."""
    src = cfg.tokenizer.source if cfg.tokenizer is not None else cfg.tokenizer_source
    if src is None or src in ("base", "union"):
        return
    names = cfg.referenced_models()
    if src not in names:
        problems.append(f"tokenizer_source {src!r} is neither base, union nor one of the models; name one of {names}")
        return
    path = Path(src)
    v = read_json(path / "config.json").get("vocab_size") if (path / "config.json").exists() else None
    if ref_vocab and v and v != ref_vocab:
        problems.append(f"tokenizer_source {src!r} has {v} tokens and the merged embeddings {ref_vocab}, and its tokenizer "
                        "cannot be loaded to rebuild the rows per token; add its tokenizer files")


def _tied_partner(name: str, infos: Dict[str, Any]) -> Optional[str]:
    if not name.endswith("lm_head.weight"):
        return None
    for cand in ("model.embed_tokens.weight", "transformer.wte.weight", "embed_tokens.weight", "model.decoder.embed_tokens.weight"):
        if cand in infos:
            return cand
    return None


def _summarise(lines: List[str], keep: int = 3) -> List[str]:
    """Keep the first few lines of each kind per model, then one '... and N more' line."""
    out: List[str] = []
    seen: Dict[Tuple[str, str], int] = {}
    for line in dict.fromkeys(lines):
        parts = line.split("'")
        kind = (line.split(":")[0], parts[1] if len(parts) > 2 else "")
        seen[kind] = seen.get(kind, 0) + 1
        if seen[kind] <= keep:
            out.append(line)
    for (kind, model), n in seen.items():
        if n > keep:
            out.append(f"{kind}: ... and {n - keep} more like the above" + (f" for {model!r}" if model else ""))
    return out


def describe_plan(plan: Plan) -> Dict[str, Any]:
    n_merge = sum(1 for t in plan.tensors if t.group >= 0)
    return {"tensors": len(plan.tensors), "merged": n_merge, "models": len(plan.experts), "method": plan.config.method}


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
