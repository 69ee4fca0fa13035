"""MLP: a plain multilayer perceptron over flattened inputs (Linear -> ReLU per hidden layer)."""
from __future__ import annotations

import math
from typing import Sequence, Tuple, Union

from torch import Tensor, nn

from ..errors import TransfuseError
from . import models


class MLP(nn.Module):
    def __init__(self, in_features: int, hidden: Sequence[int], num_classes: int, dropout: float) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x.flatten(1).float()))  # (B, D) -> (B, C)


@models.register("mlp")
def mlp(
    *,
    in_shape: Tuple[int, ...],
    num_classes: int,
    hidden: Union[int, Sequence[int]] = (128,),
    dropout: float = 0.0,
) -> nn.Module:
    """MLP over flattened inputs; hidden lists the hidden layer widths (empty: a linear classifier)."""
    hidden = [hidden] if isinstance(hidden, int) else list(hidden)  # one int means one entry
    if any(int(h) < 1 for h in hidden):
        raise TransfuseError(f"mlp hidden widths must be positive; got {list(hidden)}")
    if not 0.0 <= dropout < 1.0:
        raise TransfuseError(f"mlp dropout must be in [0, 1); got {dropout}")
    return MLP(math.prod(in_shape), [int(h) for h in hidden], num_classes, dropout)
