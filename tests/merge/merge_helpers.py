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




def load_mergekit_references():
    """scripts/mergekit_references.py as a module (its input builders: build_inputs, build_vocab_inputs, ...)."""
    import importlib.util

    script = Path(__file__).resolve().parents[2] / "scripts" / "mergekit_references.py"
    spec = importlib.util.spec_from_file_location("mergekit_references", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_merge_text(root: Path, monkeypatch, text: str, *args) -> int:
    """Write ``text`` as a config in ``root`` and run `transfuse merge` on it there; returns the exit code."""
    from transfuse.cli import main as cli

    monkeypatch.chdir(root)
    (root / "config.yaml").write_text(text)
    try:
        cli(["merge", "config.yaml", *args])
    except SystemExit as e:
        return e.code or 0
    return 0
