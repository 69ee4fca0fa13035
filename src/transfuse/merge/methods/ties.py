"""TIES-Merging (Yadav et al., 2023): trim, elect sign, disjoint merge.

Followed the reference code (github.com/prateeky2806/ties-merging, ``topk_values_mask``,
``resolve_sign``, ``disjoint_merge``): the top-``density`` magnitudes of each task vector are kept
over the WHOLE model (a global top-k, gathered here in two streaming passes with an exact radix
select): as ``topk_values_mask`` there, |tau| >= the (d - int(d * density))-th smallest |tau| is
kept, ties at the threshold included (so int(d * density) + 1 entries when all differ); the elected sign is that of the sum of trimmed vectors;
agreeing entries are averaged over their count; theta = theta_0 + scale * merged.

Where the peers differ (METHODS.md, "Where the peers disagree"), as options:
- ``topk="per_tensor"``: threshold per tensor, keeping exactly int(n * density) entries (at least
  one) as mergekit and PEFT do: the threshold is the int(n * density)-th largest magnitude (they
  break ties at the threshold arbitrarily, so on 16-bit weights with many equal magnitudes a few
  entries at the threshold differ).
- ``sign_from="weighted"``: elect on w_i * tau_i (mergekit); default unweighted (paper, PEFT).
- ``normalize="weights"``: divide by the sum of agreeing weights (mergekit); default the agreeing
  count (paper, PEFT); ``"none"``: plain sum.
- ``topk="exact"``: PEFT's ``ties`` selection: exactly int(n * density) entries per tensor chosen by
  ``torch.topk`` (PEFT's ties at the threshold), the tensor merged in one block (``merge/_peft.py``).
- ``sign_method="frequency"``: elect the sign of the count of positive minus negative entries
  (PEFT's ``majority_sign_method="frequency"``); default ``"total"``, the sign of the sum.
Where the sum is exactly 0 the sign is +1 (PEFT); the paper uses the model-wide majority sign,
which only differs on exact cancellations.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from ..._lazy import torch
from .. import kernels
from .._ops import RadixSelect, disjoint_merge, elect_sign, keep_rank, per_model, tensor_magnitude_stats, tensor_magnitude_values
from .._peft import check_sign_method, majority_sign, topk_keep_
from . import MergeMethod, TensorContext, methods

if TYPE_CHECKING:
    from torch import Tensor


def _check(density: float, topk: str, sign_from: str, normalize: str) -> None:
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {density}")
    if topk not in ("global", "per_tensor", "exact"):
        raise ValueError(f"topk must be 'global', 'per_tensor' or 'exact', got {topk!r}")
    if sign_from not in ("unweighted", "weighted"):
        raise ValueError(f"sign_from must be 'unweighted' or 'weighted', got {sign_from!r}")
    if normalize not in ("count", "weights", "none"):
        raise ValueError(f"normalize must be 'count', 'weights' or 'none', got {normalize!r}")


def exact_rank(n: int, density: float) -> int:
    """0-based ascending rank of the int(n * density)-th largest magnitude (mergekit/PEFT per-tensor count)."""
    if density >= 1.0:
        return 0
    return n - max(1, int(n * density))


def _finish_selection(sel: "kernels.MagnitudeSelect", pass_index: int, dens: list, rank=keep_rank) -> None:
    """The fused selection after a pass: the kept-rank of every model once the sample is in. On
    bfloat16 the merge then runs on the sample's guess of the threshold, verified while merging."""
    if pass_index == 0:
        sel.set_ranks([rank(sel.n, d) for d in dens], guess=True)
    else:
        sel.finish_pass(pass_index)


@methods.register("ties")
class Ties(MergeMethod):
    """TIES-Merging (Yadav et al., 2023): global top-k trim, sign election, disjoint mean (reference code)."""

    per_model_params = ("density",)

    def __init__(self, *, density: float = 0.2, scale: float = 1.0, topk: str = "global",
                 sign_from: str = "unweighted", normalize: str = "count", sign_method: str = "total") -> None:
        _check(density, topk, sign_from, normalize)
        check_sign_method(sign_method)
        self.density, self.scale, self.topk = density, scale, topk
        self.sign_from, self.normalize, self.sign_method = sign_from, normalize, sign_method
        self.chunkable = topk != "exact"  # torch.topk over the whole tensor
        self.passes = 2 if topk == "global" else 0
        self.tensor_passes = 2 if topk == "per_tensor" else 0
        self.fast_tensor_passes = self.tensor_passes
        self._sel: RadixSelect | None = None
        self._fsel: kernels.MagnitudeSelect | None = None  # the fused path's global selection
        self._last_fsel: kernels.MagnitudeSelect | None = None  # the fused path's last per-tensor selection
        self._thr: np.ndarray | None = None  # (K,) float32 global thresholds, from either path's selection
        self._dens: list = []

    # -- global top-k: two streaming passes over the whole model
    def observe(self, pass_index: int, x: Tensor, w: Tensor, ctx: TensorContext) -> None:
        K = x.shape[0]
        v = x.abs().reshape(K, -1)
        if pass_index == 0:
            if self._sel is None:
                self._sel = RadixSelect(K, nonneg=True)
            self._dens = ctx.params["density"]
            self._sel.add_coarse(v)
        else:
            self._sel.add_fine(v)

    def finish_pass(self, pass_index: int) -> None:
        if self._fsel is not None:
            _finish_selection(self._fsel, pass_index, self._dens)
            if pass_index == self._fsel.passes - 1 and self._fsel.guess is None:
                self._thr = self._fsel.values()
            return
        if self._sel is None:
            return
        if pass_index == 0:
            n = int(self._sel.count[0])
            self._sel.set_ranks([[keep_rank(n, d)] for d in self._dens])
        else:
            self._thr = self._sel.values()[:, 0].numpy()

    # -- per-tensor top-k
    def observe_tensor(self, pass_index, x, w, ctx, state) -> None:
        dens = ctx.params["density"]
        tensor_magnitude_stats(pass_index, x, ctx.extra["rows"], state, lambda n, k: [exact_rank(n, dens[k])])

    def thresholds(self, x: Tensor, ctx: TensorContext) -> Tensor:
        if self.topk == "global":
            assert self._thr is not None, "global top-k needs its statistics passes first"
            return torch.from_numpy(self._thr)
        dens = ctx.params["density"]
        return tensor_magnitude_values(x, ctx.extra.setdefault("state", {}), lambda n, k: [exact_rank(n, dens[k])])[:, 0]

    def __call__(self, x: Tensor, w: Tensor, ctx: TensorContext) -> Tensor:
        if self.topk == "exact":
            trimmed = topk_keep_(x, ctx.params["density"])  # (K, *s), in the engine's scratch block
        else:
            thr = self.thresholds(x, ctx)  # (K,)
            trimmed = x.masked_fill_(x.abs() < per_model(thr, x), 0.0)  # (K, *s), in the engine's scratch block
        voters = trimmed * per_model(w, x) if self.sign_from == "weighted" else trimmed
        sign = elect_sign(voters) if self.sign_method == "total" else majority_sign(voters, self.sign_method)
        return self.scale * disjoint_merge(trimmed, w, sign, normalize=self.normalize)

    # -- the fused path: the same selection (histograms of the float bits) and per-entry merge
    def fast(self) -> bool:
        return self.topk != "exact" and self.sign_method == "total"

    def fast_pass_count(self) -> int:
        return self._fsel.passes if self._fsel is not None else self.passes

    def fast_observe(self, pass_index, xs, base, ctx) -> None:
        if self._fsel is None:
            self._fsel = kernels.MagnitudeSelect(len(xs), ctx.extra["group_numel"])
            self._dens = ctx.params["density"]
        self._fsel.add(pass_index, xs, base, ctx.start)

    def fast_tensor_pass_count(self, state) -> int:
        return state["fsel"].passes if "fsel" in state else self.fast_tensor_passes

    def fast_observe_tensor(self, pass_index, xs, base, ctx, state) -> None:
        if "fsel" not in state:
            numel = math.prod(ctx.extra["shape"])
            # tensors are merged one at a time: each selection takes over the last one's histograms
            state["fsel"] = self._last_fsel = kernels.MagnitudeSelect(len(xs), numel, reuse=self._last_fsel)
            state["dens"] = ctx.params["density"]
        state["fsel"].add(pass_index, xs, base, ctx.start)

    def fast_finish_tensor_pass(self, pass_index, state) -> None:
        _finish_selection(state["fsel"], pass_index, state["dens"], exact_rank)

    def fast_merge(self, xs, base, out, w, ctx, state) -> None:
        sel = self._fsel if self.topk == "global" else state["fsel"]
        if sel.guess is not None:  # a guessed threshold: counted (under g and g + 1) as the block is merged
            thr, keys, below = sel.guess_values(), sel.guess, sel.guess_below
        else:
            thr, keys, below = (self._thr if self.topk == "global" else sel.values()), None, None
        normalize = {"none": 0, "count": 1, "weights": 2}[self.normalize]
        kernels.ties(xs, base, thr, w, self.sign_from == "weighted", normalize, np.float32(self.scale), out, keys, below)

    def fast_merged(self) -> bool:
        sel = self._fsel
        return self.topk != "global" or sel is None or sel.guess is None or sel.verify_guess()

    def fast_tensor_merged(self, state) -> bool:
        sel = state.get("fsel")
        return sel is None or sel.guess is None or sel.verify_guess()
