"""Chapter 2: self-attention and causal attention.

Every class takes inputs of shape (batch, seq, d_in). Each `forward` accepts `return_weights=True` to
also return the attention weights for plotting; otherwise the causal classes use PyTorch's fused
`scaled_dot_product_attention`, which computes the same function faster and without storing the
(seq, seq) weight matrix.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SelfAttentionV1", "SelfAttentionV2", "CausalAttention", "attention_weights", "causal_attention", "causal_mask", "check_attention_input"]

CHAPTER = 2


def check_attention_input(x: torch.Tensor, d_in: int, context_length: int | None = None) -> None:
    """Raise a clear error unless `x` has shape (batch, seq, d_in) with seq <= context_length."""
    if x.dim() != 3 or x.shape[-1] != d_in:
        raise ValueError(f"expected input of shape (batch, seq, {d_in}), got {tuple(x.shape)}")
    if context_length is not None and x.shape[1] > context_length:
        raise ValueError(f"sequence length {x.shape[1]} exceeds context_length {context_length}")


def attention_weights(queries: torch.Tensor, keys: torch.Tensor, causal_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax of the scaled dot products: (..., n_queries, d) x (..., n_keys, d) -> (..., n_queries, n_keys).

    `causal_mask` is True where a query must not see a key; those scores become -inf before the softmax,
    so each row still sums to 1 over the keys it may see.
    """
    scores = queries @ keys.transpose(-2, -1)
    if causal_mask is not None:
        scores = scores.masked_fill(causal_mask, float("-inf"))
    # Dividing by sqrt(d) keeps the scores' variance near 1, so the softmax does not saturate.
    return torch.softmax(scores / math.sqrt(keys.shape[-1]), dim=-1)


class SelfAttentionV1(nn.Module):
    """Scaled dot-product self-attention with raw weight matrices: (batch, seq, d_in) -> (batch, seq, d_out)."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.d_in = d_in
        self.W_query = nn.Parameter(torch.rand(d_in, d_out))
        self.W_key = nn.Parameter(torch.rand(d_in, d_out))
        self.W_value = nn.Parameter(torch.rand(d_in, d_out))

    def forward(self, x: torch.Tensor, return_weights: bool = False):
        check_attention_input(x, self.d_in)
        queries, keys, values = x @ self.W_query, x @ self.W_key, x @ self.W_value
        weights = attention_weights(queries, keys)
        context = weights @ values
        return (context, weights) if return_weights else context


class SelfAttentionV2(nn.Module):
    """Self-attention with nn.Linear projections (better initialisation, optional bias)."""

    def __init__(self, d_in: int, d_out: int, qkv_bias: bool = False):
        super().__init__()
        self.d_in = d_in
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)

    def forward(self, x: torch.Tensor, return_weights: bool = False):
        check_attention_input(x, self.d_in)
        queries, keys, values = self.W_query(x), self.W_key(x), self.W_value(x)
        weights = attention_weights(queries, keys)
        context = weights @ values
        return (context, weights) if return_weights else context


def causal_attention(
    queries: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    causal_mask: torch.Tensor,
    dropout: nn.Dropout,
    return_weights: bool = False,
):
    """Causal attention of (..., seq, d) queries, keys and values -> (..., seq, d) context vectors.

    With `return_weights` the weights are computed explicitly and returned too; otherwise the fused
    kernel computes the same result. `causal_mask` is the (seq, seq) boolean mask of future keys.
    """
    if return_weights:
        weights = dropout(attention_weights(queries, keys, causal_mask))
        return weights @ values, weights
    dropout_p = dropout.p if dropout.training else 0.0
    return F.scaled_dot_product_attention(queries, keys, values, dropout_p=dropout_p, is_causal=True)


def causal_mask(context_length: int) -> torch.Tensor:
    """(context_length, context_length) boolean mask, True above the diagonal (the future)."""
    return torch.triu(torch.ones(context_length, context_length, dtype=torch.bool), diagonal=1)


class CausalAttention(nn.Module):
    """Single-head causal self-attention with dropout: (batch, seq, d_in) -> (batch, seq, d_out)."""

    def __init__(self, d_in: int, d_out: int, context_length: int, dropout: float, qkv_bias: bool = False):
        super().__init__()
        self.d_in = d_in
        self.context_length = context_length
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.dropout = nn.Dropout(dropout)
        # Built once for the longest sequence and sliced to the input's length in forward.
        self.register_buffer("mask", causal_mask(context_length), persistent=False)

    def forward(self, x: torch.Tensor, return_weights: bool = False):
        check_attention_input(x, self.d_in, self.context_length)
        seq = x.shape[1]
        result = causal_attention(
            self.W_query(x), self.W_key(x), self.W_value(x), self.mask[:seq, :seq], self.dropout, return_weights
        )
        return result
