"""A reservoir-sampled replay buffer (Vitter 1985): every sample seen has the same chance to be kept."""
from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import Tensor


class Reservoir:
    """Fixed-size memory of inputs, labels and optional logits; ``add`` is reservoir sampling."""

    def __init__(self, capacity: int, generator: torch.Generator) -> None:
        self.capacity = int(capacity)
        self.generator = generator
        self.seen = 0
        self.data: Dict[str, Tensor] = {}

    def __len__(self) -> int:
        return min(self.seen, self.capacity)

    def add(self, **tensors: Tensor) -> None:
        """Offer a batch (every tensor (B, ...)) sample by sample."""
        n = len(next(iter(tensors.values())))
        if not self.data:
            self.data = {k: torch.zeros((self.capacity, *v.shape[1:]), dtype=v.dtype) for k, v in tensors.items()}
        for i in range(n):
            if self.seen < self.capacity:
                slot: Optional[int] = self.seen
            else:
                j = int(torch.randint(0, self.seen + 1, (1,), generator=self.generator))
                slot = j if j < self.capacity else None
            if slot is not None:
                for k, v in tensors.items():
                    self.data[k][slot] = v[i].detach()
            self.seen += 1

    def sample(self, n: int) -> Dict[str, Tensor]:
        """``n`` stored samples drawn uniformly without replacement (fewer when the buffer holds fewer)."""
        size = len(self)
        pick = torch.randperm(size, generator=self.generator)[: min(n, size)]
        return {k: v[pick] for k, v in self.data.items()}
