"""Merge methods: one file per method, registered as ``@methods.register("name")``.

A method is a small class whose ``__init__`` takes its hyperparameters (keyword-only, typed,
defaulted: the signature is the schema) and whose ``__call__`` maps ONE tensor of every input
to the merged tensor::

    method(x, w, ctx) -> Tensor

``x`` is ``(K, *shape)`` float: the K task vectors (``operates_on = "deltas"``, the engine adds
the base back) or the K models' weights (``operates_on = "weights"``); ``w`` is ``(K,)`` the
per-model weights; ``ctx`` carries the tensor's name, the base tensor, the seeded generator,
per-model parameters and whole-model statistics. ``x`` is the engine's scratch block: a method
may modify it in place (and should, to save memory traffic).

Most methods are a pure function of one tensor's stacked inputs and need nothing else: they
take the one-function form (mergekit's ``easy_define`` shape)::

    @define("nearswap", per_model=(), models=1)
    def nearswap(x, w, ctx, *, t: float = 0.5) -> Tensor: ...

whose keyword-only arguments are the schema; ``define`` makes the class the engine runs.

Methods that need whole-model statistics (global top-k, PCB's quantiles) set ``passes`` and
implement ``observe(pass_index, x, w, ctx)`` / ``finish_pass(pass_index)``: the engine streams
every tensor through ``observe`` before the merging pass. Everything stays per-tensor, so
memory is bounded by a few tensors.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
import inspect
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional

from ..._lazy import torch
from ...registry import Registry

if TYPE_CHECKING:
    from torch import Tensor

methods: Registry = Registry("merge-method", "transfuse.merge.methods")


@dataclass
class TensorContext:
    """What a method may know about the tensor it merges (besides the stacked inputs).

    Torch objects (``generator``, ``per_model``) are made on first use: the fused path reads
    ``params`` and ``start`` and never imports torch.
    """

    name: str
    base: Optional[Tensor]  # (*shape) float, None when the method has no base
    generator_seed: int  # seeds ``generator`` from (seed, name, block): visiting order does not matter
    params: Dict[str, List[float]] = field(default_factory=dict)  # per-model parameters, e.g. "density": K floats
    extra: Dict[str, Any] = field(default_factory=dict)  # e.g. "statistics": [(…), …] per model
    seed: int = 0  # the merge's seed
    start: int = 0  # flat index, in the whole tensor, of this block's first entry

    @cached_property
    def generator(self) -> "torch.Generator":
        return torch.Generator().manual_seed(self.generator_seed)

    @cached_property
    def per_model(self) -> Dict[str, Tensor]:
        """``params`` as (K,) float32 tensors."""
        return {k: torch.tensor(v, dtype=torch.float32) for k, v in self.params.items()}

    def random_bits(self, stream: int, n: int) -> Tensor:
        """(n,) int32 uniform in [0, 2**24) for this block's entries (``stream``: e.g. the model).

        A pure function of (seed, tensor name, stream, entry index): the same whatever the
        visiting order or block size (see ``_ops.counter_bits``).
        """
        from .._ops import counter_bits

        return counter_bits(self.seed, self.name, stream, self.start, n)

    def random_keep(self, stream: int, n: int, p: float) -> Tensor:
        """(n,) float32 1.0 / 0.0: keep with probability p (the same draws as ``random_bits``)."""
        from .._ops import keep_mask

        return keep_mask(self.seed, self.name, stream, self.start, n, p)


class MergeMethod:
    """Base of the registered methods: attributes the engine reads, no merging logic."""

    operates_on: str = "deltas"  # "deltas" (task vectors) or "weights" (the models themselves)
    needs_base: bool = True
    passes: int = 0  # number of whole-model statistics passes before merging
    per_model_params: tuple = ()  # parameter names a model entry may set for itself
    data_driven: bool = False  # needs per-model statistics gathered over data (fisher, regmean)
    chunkable: bool = True  # may be applied to blocks of rows independently
    tensor_passes: int = 0  # per-tensor statistics passes (over the tensor's row blocks)
    extra_file: Optional[str] = None  # file for extra_outputs beside the model (Twin's factors)
    models_required: int = 0  # 0: any number of models
    models_min: int = 1  # the fewest models (besides the base) the method takes
    base_role: str = "base"  # "member": a base listed under models is merged as one of them (slerp)

    def observe(self, pass_index: int, x: Tensor, w: Tensor, ctx: TensorContext) -> None:  # pragma: no cover
        pass

    def finish_pass(self, pass_index: int) -> None:  # pragma: no cover
        pass

    def observe_tensor(self, pass_index: int, x: Tensor, w: Tensor, ctx: TensorContext, state: Dict[str, Any]) -> None:  # pragma: no cover
        pass

    @staticmethod
    def statistic_shape(shape: tuple) -> Optional[tuple]:
        """Data-driven methods: the shape a model's statistic for a tensor of ``shape`` must have (None: any)."""
        return None

    def weight_problem(self, weights: list) -> Optional[str]:
        """A reason these (K,) weights of one tensor cannot merge (found before any work), else None."""
        return None

    def extra_specs(self, name: str, shape: tuple, k: int) -> list:
        """(name, shape) of every extra output for this tensor, known before merging."""
        return []

    def extra_outputs(self, x: Tensor, w: Tensor, ctx: TensorContext) -> Dict[str, Tensor]:
        """Additional tensors to save beside the merged model (Twin's low-rank factors)."""
        return {}

    def __call__(self, x: Tensor, w: Tensor, ctx: TensorContext) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    # -- the fused path (kernels.py): optional; ``__call__`` above stays the reference. The engine
    # hands these 1-D numpy views of the input files (bfloat16 as uint16) and an output array.
    fast_tensor_passes: int = 0  # per-tensor statistics passes of the fused path

    def fast(self) -> bool:
        """True when ``fast_merge`` implements this configuration with a fused kernel."""
        return False

    def fast_pass_count(self) -> int:
        """Whole-model statistics passes of the fused path; read again after each pass (a
        selection may need more when a sampled guess missed)."""
        return self.passes

    def fast_observe(self, pass_index: int, xs: tuple, base: Any, ctx: TensorContext) -> None:  # pragma: no cover
        """Whole-model statistics pass of the fused path (as ``observe``; then ``finish_pass``)."""

    def fast_tensor_pass_count(self, state: Dict[str, Any]) -> int:
        """Per-tensor statistics passes of the fused path (read again after each pass)."""
        return self.fast_tensor_passes

    def fast_observe_tensor(self, pass_index: int, xs: tuple, base: Any, ctx: TensorContext, state: Dict[str, Any]) -> None:  # pragma: no cover
        """Per-tensor statistics pass of the fused path (as ``observe_tensor``)."""

    def fast_finish_tensor_pass(self, pass_index: int, state: Dict[str, Any]) -> None:
        """After each per-tensor pass of the fused path."""

    def fast_merge(self, xs: tuple, base: Any, out: Any, w: Any, ctx: TensorContext, state: Dict[str, Any]) -> None:  # pragma: no cover
        """Write the merged block into ``out`` (w: (K,) float32 numpy)."""
        raise NotImplementedError

    def fast_merged(self) -> bool:
        """After the whole merging pass: False when it used a whole-model statistic that was
        guessed and turned out wrong; the engine then runs the statistics passes that follow
        (``fast_pass_count`` grew) and the whole merging pass again, into fresh files."""
        return True

    def fast_tensor_merged(self, state: Dict[str, Any]) -> bool:
        """After a tensor's merge: False when it was merged on a guess that turned out wrong; the
        engine then runs the per-tensor passes that follow and merges the tensor again, over the
        same output."""
        return True


def define(name: str, *, operates_on: str = "deltas", needs_base: bool = True, per_model: tuple = (),
           whole_tensor: bool = True, models: int = 0, base_role: str = "base",
           validate: Optional[Callable[..., None]] = None) -> Callable:
    """Register a pure per-tensor function ``fn(x (K, *s), w (K,), ctx, *, hyper...) -> (*s)`` as a method.

    The function's keyword-only, typed, defaulted arguments are the method's parameters (checked
    by the plan against the signature; ``validate(**hyper)`` raises ``ValueError`` on bad values when
    the method is built, before any work). ``per_model`` names parameters a model entry
    may set for itself: the function reads them as ``ctx.params[name]`` (K floats, resolved for
    this tensor). ``whole_tensor``: the function needs the whole tensor at once (norms, angles,
    top-k); otherwise it may get row blocks. ``models``: exact number of models (besides the
    base), 0 = any. ``base_role``: "base" (the base is the common origin and never an expert) or
    "member" (a base also listed under models is merged like the others: slerp's first model).
    """

    def decorator(fn: Callable) -> type:
        sig = inspect.signature(fn)
        hyper = [p for p in sig.parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY]

        def __init__(self, **kwargs: Any) -> None:
            bound = {p.name: kwargs.pop(p.name, p.default) for p in hyper}
            if kwargs:
                raise TypeError(f"unexpected parameter(s) {', '.join(kwargs)}")
            self.hyper = bound
            for k, v in bound.items():
                setattr(self, k, v)
            if validate is not None:
                validate(**bound)

        __init__.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
            + hyper)

        def __call__(self, x: "Tensor", w: "Tensor", ctx: TensorContext) -> "Tensor":
            return fn(x, w, ctx, **self.hyper)

        cls = type(fn.__name__.title().replace("_", ""), (MergeMethod,), {
            "__init__": __init__, "__call__": __call__, "__doc__": fn.__doc__, "__module__": fn.__module__,
            "operates_on": operates_on, "needs_base": needs_base, "per_model_params": tuple(per_model),
            "chunkable": not whole_tensor, "models_required": models, "base_role": base_role, "function": staticmethod(fn),
        })
        return methods.register(name)(cls)

    return decorator


def get_method(name: str) -> type:
    return methods.get(name)


__all__ = ["methods", "MergeMethod", "TensorContext", "define", "get_method"]
