"""Solutions to the chapter 8 exercises."""

import math

import torch
import torch.nn.functional as F


def rms_normalize(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """(..., emb) -> (..., emb): x / sqrt(mean(x ** 2) + eps) * weight, over the last dimension."""
    return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps) * weight


def rotate_pair(pair: torch.Tensor, frequency: float) -> torch.Tensor:
    """(seq, 2) -> (seq, 2): the vector at position m rotated by the angle m * frequency."""
    angles = torch.arange(pair.shape[0], dtype=pair.dtype) * frequency
    cos, sin = torch.cos(angles), torch.sin(angles)
    x, y = pair[:, 0], pair[:, 1]
    return torch.stack([x * cos - y * sin, x * sin + y * cos], dim=1)


def expand_kv_heads(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(batch, kv_heads, seq, head_dim) -> (batch, kv_heads * n_rep, seq, head_dim); head h is kv head h // n_rep."""
    batch, kv_heads, seq, head_dim = x.shape
    # A new axis after the heads, expanded without copying, then folded into the head axis: h -> h // n_rep.
    return x[:, :, None].expand(batch, kv_heads, n_rep, seq, head_dim).reshape(batch, kv_heads * n_rep, seq, head_dim)


def swiglu_feed_forward(
    x: torch.Tensor, w_gate: torch.Tensor, w_up: torch.Tensor, w_down: torch.Tensor
) -> torch.Tensor:
    """(..., emb) -> (..., emb): (silu(x W_gate^T) * (x W_up^T)) W_down^T."""
    return (F.silu(x @ w_gate.T) * (x @ w_up.T)) @ w_down.T
