"""mergekit's config vocabulary read with mergekit's meaning (mergekit 0.1.5 ``config.py``, ``plan.py``).

- A parameter is a scalar, a gradient (a list of numbers interpolated over the layers: layer i of
  n reads position i / (n - 1) of the list; tensors outside the layers read position 0), or a
  list of ``{filter: SUBSTRING, value: ...}`` entries (the first whose filter is in the tensor
  name, or is missing or ``*``, gives the value; none: the parameter is unset there).
- A model's parameter falls back to the global ``parameters`` (mergekit's lookup order).
- ``merge_method`` names mergekit's methods; where transfuse's method of that name follows the
  paper instead, a mergekit config gets the transfuse method and options that reproduce mergekit
  (``translate``); the model card records which.
"""
from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Tuple

from ..errors import TransfuseError

_LAYER = re.compile(r"\.(?:layers|h|blocks|layer)\.(\d+)\.")

# keys of a mergekit config with no meaning here, and why
REFUSED_KEYS = {
    "modules": "modules: (per-module merges of multimodal models) is not supported; use models:",
}


def check_setting(where: str, value: Any) -> None:
    """Refuse what mergekit's schema would not read, with one line naming the key."""
    if isinstance(value, (bool, int, float, str)) or value is None:
        return
    if isinstance(value, list) and value:
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            return
        if all(isinstance(v, (bool, int, float, str)) for v in value):
            if len({isinstance(v, (int, float)) and not isinstance(v, bool) for v in value}) > 1:
                raise TransfuseError(f"{where}: a gradient list must hold only numbers; got {value!r}")
            return
        for v in value:
            if not isinstance(v, dict) or "value" not in v or set(v) - {"value", "filter"}:
                raise TransfuseError(
                    f"{where}: a list must be numbers (a gradient over the layers) or entries "
                    f"{{filter: NAME_PART, value: ...}}; got {v!r}")
            check_setting(f"{where} (filter {v.get('filter')!r})", v["value"])
        return
    raise TransfuseError(f"{where}: expected a number, a list of numbers (gradient) or filter entries; got {value!r}")


def evaluate_scopes(scopes: List[Dict[str, Any]], keys, tensor_name: str, t: float) -> Dict[str, Any]:
    """mergekit ``resolve_parameter`` over scopes (highest precedence first): per key, the first
    scope whose setting is set for this tensor; only ``keys`` from the scopes after the first."""
    out: Dict[str, Any] = {}
    for i, scope in enumerate(scopes):
        for k, v in scope.items():
            if k in out or (i > 0 and k not in keys):
                continue
            value = evaluate(v, tensor_name, t)
            if value is not None:
                out[k] = value
    return out


def rename_key(key: str) -> str:
    """mergekit's parameter name -> transfuse's (``lambda`` is ``scale``)."""
    return _GTA_KEYS.get(key, key)


def is_plain(value: Any) -> bool:
    """A value that is the same for every tensor."""
    return not isinstance(value, list)


def evaluate(setting: Any, tensor_name: str, t: float) -> Any:
    """mergekit ``evaluate_setting``: the value of ``setting`` for one tensor at layer fraction t (None: unset)."""
    if not isinstance(setting, list):
        return setting
    if all(isinstance(e, (int, float)) and not isinstance(e, bool) for e in setting):
        scaled = t * (len(setting) - 1)
        i0 = int(scaled)
        i1 = min(len(setting) - 1, i0 + 1)
        frac = scaled - i0
        return (1 - frac) * setting[i0] + frac * setting[i1]
    if all(isinstance(e, (bool, int, float, str)) for e in setting):
        return setting[int(t * (len(setting) - 1))]
    for cond in setting:
        f = cond.get("filter")
        if f is None or f == "*" or (tensor_name and f in tensor_name):
            return evaluate(cond["value"], tensor_name, t)
    return None


def layer_fraction(name: str, num_layers: int) -> float:
    """mergekit's t: i / (n - 1) for layer i of n (1 for a one-layer model), 0 outside the layers."""
    m = _LAYER.search(name)
    if m is None or num_layers <= 0:
        return 0.0
    return int(m.group(1)) / (num_layers - 1) if num_layers > 1 else 1.0


def num_layers(config: Dict[str, Any], names) -> int:
    n = config.get("num_hidden_layers") or config.get("n_layer") or config.get("num_layers")
    if n:
        return int(n)
    found = [int(m.group(1)) for nm in names for m in [_LAYER.search(nm)] if m]
    return max(found) + 1 if found else 0


# mergekit method -> (transfuse method, fixed options, mergekit parameter -> transfuse parameter)
_GTA_KEYS = {"lambda": "scale"}
_TRANSLATE: Dict[str, Tuple[str, Dict[str, Any]]] = {
    "ties": ("ties", {"topk": "per_tensor", "sign_from": "weighted"}),
    "task_arithmetic": ("task_arithmetic", {}),
    "breadcrumbs": ("breadcrumbs_ties", {"sign": "none"}),
    "della": ("della_linear", {"sign": "ties", "normalize": True}),
}
# mergekit's defaults where they differ from transfuse's method of the same name
_DEFAULTS = {"ties": {"density": 1.0, "normalize": True}, "task_arithmetic": {"normalize": False}}


_BOOLS = ("normalize", "int8_mask", "rescale", "filter_wise", "nuslerp_row_wise", "nuslerp_flatten")


def translate(method: str, params: Dict[str, Any]) -> Tuple[str, Dict[str, Any], Optional[str]]:
    """(transfuse method, its parameters, a note for the model card or None) for a mergekit method."""
    params = {_GTA_KEYS.get(k, k): v for k, v in params.items()}
    for key in _BOOLS:
        if key in params and not isinstance(params[key], (bool, list)):
            raise TransfuseError(f"parameters.{key} must be true or false (mergekit reads it as a boolean), got {params[key]!r}")
    if method not in _TRANSLATE:
        return method, params, None
    name, fixed = _TRANSLATE[method]
    out = {**_DEFAULTS.get(method, {}), **fixed, **params}
    if method == "ties":
        if out.pop("rescale", False):
            raise TransfuseError("ties with rescale: true (L1 rescale after the top-k) is not supported; use dare_ties or drop rescale")
        out.pop("int8_mask", None)
        out["normalize"] = "weights" if out.get("normalize", True) else "none"
    if method == "task_arithmetic":
        out.pop("int8_mask", None)
        out.pop("rescale", None)
    note = f"mergekit semantics: merge_method {method} ran as transfuse {name} with {sorted(fixed.items()) or 'its defaults'}"
    return name, out, note


# mergekit-yaml flags: accepted (with what they mean here) or refused
_CPU = "accepted, ignored: transfuse merges on CPU, streaming at disk speed (the merged values are the same)"
FLAGS = {
    "--copy-tokenizer": "accepted: the tokenizer files of the base (or tokenizer_source) are copied (the default)",
    "--no-copy-tokenizer": "accepted: no tokenizer files are written",
    "--allow-crimes": "accepted: models of other architectures merge (tensor names and shapes must still agree)",
    "--lazy-unpickle": "accepted: inputs are memory-mapped safetensors (pickle needs --allow-pickle)",
    "--lazy-loader": "accepted: inputs are always read lazily",
    "--low-cpu-memory": "accepted: the merge streams tensor by tensor anyway",
    "--no-low-cpu-memory": "accepted",
    "--safe-serialization": "accepted: the output is always safetensors",
    "--write-model-card": "accepted: a model card (README.md) is written (the default)",
    "--no-write-model-card": "accepted: no README.md is written (transfuse_merge.json, the provenance record, still is)",
    "--clone-tensors": "accepted: inputs are never modified", "--no-clone-tensors": "accepted",
    "--trust-remote-code": "accepted: no remote code is run (configs and tensors are read as data)",
    "--no-allow-crimes": "accepted", "--no-trust-remote-code": "accepted", "--no-quiet": "accepted",
    "--no-lazy-unpickle": "accepted", "--no-cuda": "accepted: the merge runs on CPU",
    "--async-write": "accepted: shards are written by a writer thread anyway", "--no-async-write": "accepted",
    "--no-read-to-gpu": "accepted", "--no-multi-gpu": "accepted", "--no-gpu-rich": "accepted",
    "--cuda": _CPU, "--read-to-gpu": _CPU, "--multi-gpu": _CPU, "--gpu-rich": _CPU,
    "--unsafe-truncate-embeddings": "accepted: vocab_policy truncate (trailing embedding rows past the reference's "
                                    "vocabulary are dropped; --check says when a model has fewer rows than the reference)",
    "--no-unsafe-truncate-embeddings": "accepted",
    "--quiet": "accepted", "-q": "accepted", "--verbose": "accepted", "-v": "accepted", "-vv": "accepted",
    "--no-safe-serialization": "refused: the output is always safetensors (pickled weights can run code when loaded)",
}
# value flags -> the config key they set (None: accepted, no meaning here)
VALUE_FLAGS = {"--out-shard-size": "shard_size", "--random-seed": "seed", "--lora-merge-cache": None,
               "--transformers-cache": None, "--num-threads": "threads", "-j": "threads",
               "--write-threads": None, "--lora-merge-dtype": None, "--device": None}
# flags that set a config key: flag -> (key, value)
_SETS = {"--no-write-model-card": ("model_card", "false"), "--write-model-card": ("model_card", "true"),
         "--allow-crimes": ("allow_crimes", "true"), "--no-allow-crimes": ("allow_crimes", "false"),
         "--unsafe-truncate-embeddings": ("vocab_policy", "truncate")}


def read_flags(words: List[str]) -> Tuple[List[str], Dict[str, Any], bool, List[str]]:
    """Split mergekit-yaml flags off the command words: (other words, overrides, copy_tokenizer,
    notes to print: flags accepted but ignored)."""
    notes: List[str] = []
    rest: List[str] = []
    overrides: Dict[str, Any] = {}
    copy_tokenizer = True
    i = 0
    while i < len(words):
        w = words[i]
        key, _, inline = w.partition("=") if w.startswith("--") else (w, "", "")
        if key in VALUE_FLAGS:
            value = inline or (words[i + 1] if i + 1 < len(words) else None)
            if value is None:
                raise TransfuseError(f"{key} needs a value (e.g. {key} 5B)")
            i += 1 if inline else 2
            target = VALUE_FLAGS[key]
            if target:
                overrides[target] = value
            elif key == "--device" and value not in ("cpu", "auto"):
                notes.append(f"--device {value}: {_CPU}")
            continue
        if key in FLAGS:
            if FLAGS[key].startswith("refused"):
                raise TransfuseError(f"mergekit flag {key} is {FLAGS[key]}")
            if FLAGS[key] == _CPU:
                notes.append(f"{key}: {_CPU}")
            if key in _SETS:
                overrides[_SETS[key][0]] = _SETS[key][1]
            copy_tokenizer = False if key == "--no-copy-tokenizer" else (True if key == "--copy-tokenizer" else copy_tokenizer)
            i += 1
            continue
        if w.startswith("--"):
            raise TransfuseError(f"unknown flag {w}; transfuse merge takes --check and --allow-pickle and mergekit-yaml's flags "
                                 f"({', '.join(sorted(FLAGS))}, {', '.join(sorted(VALUE_FLAGS))})")
        rest.append(w)
        i += 1
    return rest, overrides, copy_tokenizer, notes
