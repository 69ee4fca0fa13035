"""``transfuse extract-lora FINETUNED BASE OUT --rank R``: a PEFT LoRA adapter by truncated SVD of each delta.

mergekit-extract-lora's flags, where they make sense here: --rank (mergekit's --max-rank),
--distribute-scale/--no-distribute-scale, --embed-lora, --save-module, --include-regex,
--exclude-regex, --sv-epsilon, --skip-undecomposable; --overwrite replaces a finished folder."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence


def main(finetuned: Path, base: Path, out: Path, *, rank: int, distribute_scale: bool = True, embed_lora: bool = False,
         save_modules: Sequence[str] = (), include: Sequence[str] = (), exclude: Sequence[str] = (),
         sv_epsilon: float = 0.0, skip_undecomposable: bool = False, overwrite: bool = False) -> int:
    from ..merge.extract_lora import extract_lora

    folder = extract_lora(finetuned, base, out, rank=rank, distribute_scale=distribute_scale, embed_lora=embed_lora,
                          save_modules=save_modules, include=include, exclude=exclude, sv_epsilon=sv_epsilon,
                          skip_undecomposable=skip_undecomposable, overwrite=overwrite)
    print(f"LoRA adapter written to {folder} (adapter_config.json, adapter_model.safetensors)")
    return 0
