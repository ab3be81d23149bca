"""Seeded inputs for the exercises' cases: the same values on every run and every machine."""

from __future__ import annotations

import torch


def randn(seed: int, *shape: int) -> torch.Tensor:
    """Standard normal float32 values, as `torch.manual_seed(seed); torch.randn(*shape)` draws them."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def randint(seed: int, high: int, *shape: int) -> torch.Tensor:
    """Integers in [0, high) (int64), as `torch.manual_seed(seed); torch.randint(high, shape)` draws them."""
    return torch.randint(high, shape, generator=torch.Generator().manual_seed(seed))
