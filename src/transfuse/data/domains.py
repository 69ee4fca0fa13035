"""Several domains of image data sets pooled for training and an unseen one for testing (domain generalisation).

Each domain is a base data set (fashion_mnist, mnist5k, digits at 28x28, ...) rotated and/or noised as
``shifted`` does it. Domains of one base share its training images out disjointly (as DomainBed's
rotated MNIST does), so no image is seen in two domains. Training sample ids are ``i * K + d``
(``d``: the domain's place in ``train``, ``K``: the number of train domains), so an objective reads a
sample's domain as ``index % K`` (``metadmoe`` masks the sample's own expert with it).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch

from ..errors import TransfuseError
from . import DataSplits, IndexedTensors, build_data, datasets, fingerprint_tensors
from .shifted import _shift

_DOMAIN_KEYS = {"base", "base_params", "rotate", "noise"}


def _check(spec: Dict[str, Any], where: str) -> None:
    unknown = set(spec) - _DOMAIN_KEYS
    if unknown:
        raise TransfuseError(f"{where} has unknown keys {sorted(unknown)}; a domain is {{base, base_params, rotate, noise}}")
    if float(spec.get("noise", 0.0)) < 0:
        raise TransfuseError(f"{where} noise is a standard deviation and must be >= 0")


@datasets.register("domains")
def domains(
    *,
    base: str = "mnist5k",
    base_params: Optional[Dict[str, Any]] = None,
    train: Optional[List[Dict[str, Any]]] = None,
    test: Optional[Dict[str, Any]] = None,
    domain: Optional[int] = None,
    seed: int = 0,
) -> DataSplits:
    """Train domains ``train`` (default rotations 0, 30, 60 degrees) pooled, tested on the unseen ``test`` domain (default 90).

    A domain is {rotate: degrees, noise: std, base: name, base_params: {...}}; base defaults to ``base``.
    domain: keep only train domain number ``domain`` (to train that domain's expert); the test split is still the unseen one.
    """
    train = [{"rotate": 0}, {"rotate": 30}, {"rotate": 60}] if train is None else list(train)
    test = {"rotate": 90} if test is None else dict(test)
    if not train:
        raise TransfuseError("domains needs at least one train domain, e.g. train=[{rotate: 0}, {rotate: 45}]")
    for i, spec in enumerate(train):
        _check(spec, f"domains train[{i}]")
    _check(test, "domains test")
    k = len(train)
    if domain is not None and not 0 <= domain < k:
        raise TransfuseError(f"domains domain={domain} but there are {k} train domains (0..{k - 1})")
    built: Dict[str, DataSplits] = {}

    def base_of(spec: Dict[str, Any]) -> DataSplits:
        name, params = spec.get("base", base), spec.get("base_params", base_params if "base" not in spec else None)
        key = f"{name} {sorted((params or {}).items())}"
        if key not in built:
            if name in ("shifted", "domains"):
                raise TransfuseError(f"a domain's base must be a plain image data set, not {name!r}")
            built[key] = build_data(name, params)
        return built[key]

    bases = [base_of(s) for s in train]
    shapes = {b.in_shape for b in bases} | {base_of(test).in_shape}
    classes = {b.num_classes for b in bases} | {base_of(test).num_classes}
    if len(shapes) != 1 or len(classes) != 1:
        raise TransfuseError(
            f"the domains' bases differ in input shape {sorted(shapes)} or classes {sorted(classes)}; "
            "give them the same (e.g. digits with base_params: {size: 28} beside mnist5k)"
        )
    gen = torch.Generator().manual_seed(seed)
    # domains of one base share its training images out disjointly, in one seeded order per base
    owners: Dict[int, List[int]] = {}
    for d, b in enumerate(bases):
        owners.setdefault(id(b), []).append(d)
    order = {key: torch.randperm(len(b.train), generator=gen) for key, b in ((id(b), b) for b in bases)}
    parts_in, parts_y, parts_id = [], [], []
    for d, (spec, b) in enumerate(zip(train, bases)):
        sharing = owners[id(b)]
        chunk = order[id(b)][sharing.index(d) :: len(sharing)]  # (N_d,) positions in the base's train split
        if len(chunk) == 0 or (domain is not None and d != domain):
            continue
        piece = _shift(b.train.subset(chunk), float(spec.get("rotate", 0.0)), float(spec.get("noise", 0.0)),
                       float(b.train.inputs.min()), torch.Generator().manual_seed(seed * 1009 + d + 1))
        parts_in.append(piece.inputs)
        parts_y.append(piece.labels)
        parts_id.append(torch.arange(len(chunk)) * k + d)
    tb = base_of(test)
    if tb.test is None:
        raise TransfuseError(f"the test domain's base {test.get('base', base)!r} has no test split")
    test_split = _shift(tb.test, float(test.get("rotate", 0.0)), float(test.get("noise", 0.0)), float(tb.train.inputs.min()),
                        torch.Generator().manual_seed(seed * 1009))
    train_split = IndexedTensors(torch.cat(parts_in), torch.cat(parts_y), torch.cat(parts_id))
    describe = f"domains train={train} test={test} base={base} {base_params} domain={domain} seed={seed}"
    return DataSplits(
        name="domains" if domain is None else f"domains[{domain}]",
        train=train_split,
        test=IndexedTensors(test_split.inputs, test_split.labels),
        num_classes=classes.pop(),
        in_shape=shapes.pop(),
        fingerprint=fingerprint_tensors(train_split.inputs, train_split.labels, train_split.index, extra=describe),
        class_names=bases[0].class_names,
    )
