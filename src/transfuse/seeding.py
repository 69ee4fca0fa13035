"""One place that seeds every random number generator a run draws from before it builds anything."""
from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (CPU and every CUDA device).

    Called before a run builds its data splits, models and objective modules, so that the same
    recipe and seed give the same initial weights (models initialise from torch's global generator).
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
