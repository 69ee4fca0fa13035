"""Emulated fine-tuning (up-scaling): a large base plus the fine-tuning deltas of small models."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Union

import torch
from torch import Tensor

from ...errors import TransfuseError
from . import FusionRule, rules
from ._math import log_linear


@rules.register("eft")
class EmulatedFineTuning(FusionRule):
    """Mitchell et al. 2024 (EFT): log p = log p_base + sum_i beta_i (log p_tuned_i - log p_ref_i).

    Models in the order (large base, tuned_1, ref_1, tuned_2, ref_2, ...); ``beta`` is one number
    for every delta or one per delta, and may be negative (emulated dis-alignment, as
    ZHZisZZ/emulated-disalignment's ``EFTPosthocGenerationMixin`` allows). The model weights are not used.
    """

    identity_for_one = True
    uses_weights = False
    signed_weights = True
    models = "1 + 2m: large base, then (tuned, reference) pairs"

    def __init__(self, *, beta: Union[float, List[float]] = 1.0) -> None:
        self.beta = beta

    def coefficients(self, k: int) -> Tensor:
        if k % 2 != 1:
            raise TransfuseError(
                f"the eft rule takes a base and (tuned, reference) pairs, so an odd number of models; got {k}"
            )
        pairs = (k - 1) // 2
        betas = [float(b) for b in self.beta] if isinstance(self.beta, (list, tuple)) else [float(self.beta)] * pairs
        if len(betas) != pairs:
            raise TransfuseError(f"eft beta has {len(betas)} values for {pairs} (tuned, reference) pairs; give one per pair")
        out = [1.0]
        for b in betas:
            out += [b, -b]
        return torch.tensor(out)

    def __call__(self, logprobs: Tensor, weights: Tensor, context: Optional[Dict[str, Any]] = None) -> Tensor:
        return log_linear(logprobs, self.coefficients(logprobs.shape[0]))  # (1 + 2m, B, V) -> (B, V)
