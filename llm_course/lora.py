"""Chapter 6: LoRA (low-rank adaptation), from scratch: fine-tune a few small matrices instead of the model.

A frozen linear layer y = x W^T + b gets a trainable detour through `rank` dimensions: y + (x A^T B^T) *
alpha / rank, with A (rank, in) and B (out, rank). The update B A to W has rank at most `rank`, so it
costs rank * (in + out) parameters instead of in * out. B starts at zero, so at first the model computes
exactly what it did before; `merge_lora` folds the trained B A into W, which leaves a plain GPTModel
that is as fast as the original and saves with save_checkpoint like any other.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .model import GPTModel

__all__ = ["LORA_TARGETS", "SWIGLU_LORA_TARGETS", "LoRALinear", "add_lora", "merge_lora"]

CHAPTER = 6
CHAPTERS = {"SWIGLU_LORA_TARGETS": 8}  # introduced by chapter 8

# The linear layers of a transformer block that get LoRA by default, named as in `block.named_modules()`:
# the attention's query/key/value and output projections and both feed-forward layers (all three in a
# SwiGLU feed-forward network, chapter 8).
LORA_TARGETS = ("att.W_qkv", "att.out_proj", "ff.layers.0", "ff.layers.2")
SWIGLU_LORA_TARGETS = ("att.W_qkv", "att.out_proj", "ff.gate", "ff.up", "ff.down")


class LoRALinear(nn.Module):
    """A frozen nn.Linear plus a trainable low-rank update: (..., in_features) -> (..., out_features).

    output = linear(x) + (x @ A.T @ B.T) * alpha / rank. A is drawn like nn.Linear's own weights
    (Kaiming-uniform, bound 1 / sqrt(in_features)) and B is zero, so a new LoRALinear computes exactly what
    `linear` does and training starts from the pretrained model. Dividing by rank keeps the update's size
    comparable across ranks, so one learning rate works for several (alpha sets the size).
    """

    def __init__(self, linear: nn.Linear, rank: int, alpha: float):
        super().__init__()
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"LoRALinear wraps an nn.Linear, got {type(linear).__name__}")
        largest = min(linear.in_features, linear.out_features)  # B A cannot have a higher rank
        if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= largest:
            raise ValueError(f"rank must be an integer from 1 to {largest} (the layer's smaller side), got {rank!r}")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
            raise ValueError(f"alpha must be a positive number (commonly rank or 2 * rank), got {alpha!r}")
        self.linear = linear.requires_grad_(False)
        self.rank = rank
        self.alpha = alpha
        self.scaling = alpha / rank
        weight = linear.weight
        self.lora_A = nn.Parameter(torch.empty(rank, linear.in_features, device=weight.device, dtype=weight.dtype))
        self.lora_B = nn.Parameter(torch.zeros(linear.out_features, rank, device=weight.device, dtype=weight.dtype))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # nn.Linear's init: bound 1 / sqrt(in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Two thin products, (..., in) -> (..., rank) -> (..., out); B A (out, in) is never formed.
        return self.linear(x) + (x @ self.lora_A.T @ self.lora_B.T) * self.scaling

    def _merge(self) -> nn.Linear:
        """The wrapped nn.Linear with B A * scaling added to its weight (in place, so only merge_lora calls it)."""
        with torch.no_grad():
            self.linear.weight += (self.lora_B @ self.lora_A) * self.scaling
        return self.linear

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha}"


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent), child, module)


def add_lora(
    model: GPTModel,
    rank: int = 8,
    alpha: float = 16,
    targets: tuple[str, ...] | None = None,
    train_head: bool = True,
) -> GPTModel:
    """Wrap the `targets` linear layers of every transformer block (default: LORA_TARGETS, or
    SWIGLU_LORA_TARGETS for a SwiGLU feed-forward network) in a LoRALinear, in place, and freeze
    every other parameter except the output head's (when `train_head`: a new classifier head must learn
    from scratch, and it is small). Returns the model; count_trainable_parameters(model) says what trains.

    Save it with save_checkpoint only after merge_lora (an unmerged model has extra weights that a plain
    GPTModel cannot load).
    """
    if not isinstance(model, GPTModel):
        raise TypeError(f"add_lora expects a GPTModel, got {type(model).__name__}")
    if any(isinstance(module, LoRALinear) for module in model.modules()):
        raise ValueError("the model already has LoRA layers: call merge_lora(model) before adding new ones")
    if targets is None:
        targets = SWIGLU_LORA_TARGETS if model.cfg.feed_forward == "swiglu" else LORA_TARGETS
    unknown = [t for t in targets if not isinstance(dict(model.blocks[0].named_modules()).get(t), nn.Linear)]
    if unknown or not targets:
        linears = [name for name, m in model.blocks[0].named_modules() if isinstance(m, nn.Linear)]
        raise ValueError(f"LoRA targets must name linear layers of a block ({', '.join(linears)}); got {list(targets)}")
    model.requires_grad_(False)
    for block in model.blocks:
        for target in targets:
            _replace(block, target, LoRALinear(block.get_submodule(target), rank, alpha))
    model.out_head.requires_grad_(train_head)
    return model


def merge_lora(model: GPTModel) -> GPTModel:
    """Fold every LoRALinear's update into its weight and put the plain nn.Linear back, in place; return the
    model. The merged layers stay frozen like the rest of the base model (set_trainable_layers unfreezes)."""
    if not isinstance(model, GPTModel):
        raise TypeError(f"merge_lora expects a GPTModel, got {type(model).__name__}")
    wrapped = [(name, module) for name, module in model.named_modules() if isinstance(module, LoRALinear)]
    for name, module in wrapped:
        _replace(model, name, module._merge())
    return model
