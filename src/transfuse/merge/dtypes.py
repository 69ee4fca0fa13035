"""Tensor dtypes by name, without importing torch (the fused merge path never needs it).

The plan, the safetensors headers and the output layout speak of dtypes as :class:`DType`;
the torch path asks for ``.torch`` where it makes tensors. ``str(dtype)`` reads as torch's
(``torch.bfloat16``) so messages stay the same.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

from .._lazy import torch
from ..errors import TransfuseError


@dataclass(frozen=True)
class DType:
    name: str  # torch's attribute name, e.g. "bfloat16"
    code: str  # the safetensors header's code, e.g. "BF16"
    itemsize: int  # bytes per entry
    is_floating_point: bool

    @property
    def torch(self) -> "torch.dtype":
        return getattr(torch, self.name)

    def __str__(self) -> str:
        return f"torch.{self.name}"


F64, F32, F16, BF16 = DType("float64", "F64", 8, True), DType("float32", "F32", 4, True), DType("float16", "F16", 2, True), DType("bfloat16", "BF16", 2, True)
_ALL = [
    F64, F32, F16, BF16,
    DType("int64", "I64", 8, False), DType("int32", "I32", 4, False), DType("int16", "I16", 2, False),
    DType("int8", "I8", 1, False), DType("uint8", "U8", 1, False), DType("bool", "BOOL", 1, False),
    DType("float8_e4m3fn", "F8_E4M3", 1, True), DType("float8_e5m2", "F8_E5M2", 1, True),
]
BY_CODE: Dict[str, DType] = {d.code: d for d in _ALL}  # safetensors header code -> DType
BY_NAME: Dict[str, DType] = {d.name: d for d in _ALL}


def of_torch(dtype: "torch.dtype", where: str) -> DType:
    """The DType of a torch dtype (e.g. a pickle checkpoint's tensor); ``where`` names it for the error."""
    name = str(dtype).replace("torch.", "")
    if name not in BY_NAME:
        raise TransfuseError(f"{where} has dtype {dtype}, which safetensors merging does not support; convert it to a float dtype first")
    return BY_NAME[name]
