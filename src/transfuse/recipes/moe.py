"""``transfuse moe CONFIG OUT``: a Mixtral mixture of experts from dense experts, read from a mergekit-moe YAML.

mergekit-moe's keys (base_model, experts with source_model / positive_prompts / negative_prompts /
noise_scale / residual_scale, gate_mode hidden / hidden_avg / cheap_embed / random / uniform_random,
dtype, experts_per_token); --seed for the random gates and noise; --allow-all-same is mergekit's
--i-understand-this-is-not-useful-without-training."""
from __future__ import annotations

from pathlib import Path


def main(config: Path, out: Path, *, seed: int = 0, allow_all_same: bool = False, overwrite: bool = False) -> int:
    from ..merge.moe import build_moe

    folder = build_moe(config, out, seed=seed, allow_all_same=allow_all_same, overwrite=overwrite)
    print(f"Mixtral checkpoint written to {folder}")
    return 0
