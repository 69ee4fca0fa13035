"""Helpers shared by the merge tests: write and read tiny Hugging Face-style model folders."""
import json
from pathlib import Path

from safetensors.torch import save_file


def write_model(folder: Path, tensors: dict, *, config: dict | None = None, shards: int = 1) -> Path:
    """A Hugging Face-style folder: model.safetensors (or shards + index) and config.json."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = list(tensors)
    if shards == 1:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / "model.safetensors"))
    else:
        weight_map = {}
        for i in range(shards):
            part = names[i::shards]
            fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
            save_file({k: tensors[k].contiguous() for k in part}, str(folder / fname))
            weight_map.update({k: fname for k in part})
        (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    cfg = {"architectures": ["TinyNet"], "model_type": "tiny", "vocab_size": 10}
    cfg.update(config or {})
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


def read_model(folder: Path) -> dict:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(Path(folder).glob("model*.safetensors")):
        out.update(load_file(str(f)))
    return out


