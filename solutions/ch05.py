"""Solutions to the chapter 5 exercises."""

import math

import torch
import torch.nn.functional as F
from torch import nn


def warmup_cosine_lr(step: int, total_steps: int, peak_lr: float, warmup_steps: int, min_lr: float) -> float:
    """The learning rate of step `step` (0-based) under linear warmup, then cosine decay to min_lr."""
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr + (peak_lr - min_lr) * (1 + math.cos(math.pi * progress)) / 2


def append_to_cache(
    cache_keys: torch.Tensor, cache_values: torch.Tensor, new_keys: torch.Tensor, new_values: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(batch, heads, length, head_dim) + (batch, heads, new, head_dim) -> (batch, heads, length + new, head_dim)."""
    return torch.cat([cache_keys, new_keys], dim=2), torch.cat([cache_values, new_values], dim=2)


def accumulate_gradients(model: nn.Module, micro_batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Leave in each parameter's .grad the gradient of the mean cross-entropy over all micro-batches' examples."""
    total = sum(len(targets) for _, targets in micro_batches)
    for inputs, targets in micro_batches:
        # A micro-batch's mean loss, weighted by its share of the examples: the weighted sum is the overall mean.
        loss = F.cross_entropy(model(inputs), targets) * len(targets) / total
        loss.backward()


def clip_gradients(grads: list[torch.Tensor], max_norm: float) -> list[torch.Tensor]:
    """The gradients scaled down together so that their total norm is at most max_norm."""
    total_norm = torch.cat([grad.flatten() for grad in grads]).norm().item()  # all elements as one vector
    if total_norm <= max_norm:
        return [grad.clone() for grad in grads]
    return [grad * (max_norm / total_norm) for grad in grads]
