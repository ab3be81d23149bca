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

__all__ = [
    "SelfAttentionV1",
    "SelfAttentionV2",
    "CausalAttention",
    "attention_weights",
    "causal_attention",
    "causal_mask",
    "check_attention_input",
]

CHAPTER = 2


def check_attention_input(x: torch.Tensor, d_in: int, context_length: int | None = None) -> None:
    """Raise a clear error unless `x` is a (batch, seq, d_in) tensor with seq <= context_length."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor of shape (batch, seq, {d_in}), got {type(x).__name__}")
    if x.dim() != 3:
        hint = "; add a batch dimension with x.unsqueeze(0)" if x.dim() == 2 else ""
        raise ValueError(f"expected input of shape (batch, seq, {d_in}), got shape {tuple(x.shape)}{hint}")
    if x.shape[-1] != d_in:
        raise ValueError(
            f"expected input of shape (batch, seq, {d_in}), got {tuple(x.shape)}: the last dimension must "
            f"equal the d_in={d_in} the module was built with"
        )
    if context_length is not None and x.shape[1] > context_length:
        raise ValueError(
            f"sequence length {x.shape[1]} exceeds context_length {context_length}: keep only the last "
            f"{context_length} positions, e.g. x[:, -{context_length}:]"
        )


def attention_weights(queries: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax of the scaled dot products: (..., n_queries, d) x (..., n_keys, d) -> (..., n_queries, n_keys).

    `mask` (n_queries, n_keys) is True where a query must not see a key; those scores become -inf
    before the softmax, so each row still sums to 1 over the keys it may see.
    """
    scores = queries @ keys.transpose(-2, -1)
    if mask is not None:
        scores = scores.masked_fill(mask, float("-inf"))
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

    def forward(
        self, x: torch.Tensor, return_weights: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """(batch, seq, d_in) -> context (batch, seq, d_out) [, weights (batch, seq, seq)]."""
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

    def forward(
        self, x: torch.Tensor, return_weights: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """(batch, seq, d_in) -> context (batch, seq, d_out) [, weights (batch, seq, seq)]."""
        check_attention_input(x, self.d_in)
        queries, keys, values = self.W_query(x), self.W_key(x), self.W_value(x)
        weights = attention_weights(queries, keys)
        context = weights @ values
        return (context, weights) if return_weights else context


def causal_mask(context_length: int) -> torch.Tensor:
    """(context_length, context_length) boolean mask, True above the diagonal (the future)."""
    return torch.triu(torch.ones(context_length, context_length, dtype=torch.bool), diagonal=1)


def causal_attention(
    queries: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    dropout: nn.Dropout,
    return_weights: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Masked attention of (..., n_queries, d) queries over (..., n_keys, d) keys and values -> (..., n_queries, d).

    `mask` (n_queries, n_keys) is True where a query must not see a key: `causal_mask(seq)` for a whole
    sequence, its last rows when the queries are the last positions only. With `return_weights` the
    weights are computed explicitly (after dropout) and returned too; otherwise the fused kernel
    computes the same result.
    """
    if return_weights:
        weights = dropout(attention_weights(queries, keys, mask))
        return weights @ values, weights
    dropout_p = dropout.p if dropout.training else 0.0
    if queries.shape[-2] == keys.shape[-2]:
        # A square causal mask is what is_causal=True applies, and it lets the kernel skip the future.
        return F.scaled_dot_product_attention(queries, keys, values, dropout_p=dropout_p, is_causal=True)
    if not mask.any():
        # Every query may see every key (e.g. one new token after a key/value cache): no mask to apply.
        return F.scaled_dot_product_attention(queries, keys, values, dropout_p=dropout_p)
    # PyTorch's boolean attn_mask marks the keys a query may see: the opposite of ours.
    return F.scaled_dot_product_attention(queries, keys, values, attn_mask=~mask, dropout_p=dropout_p)


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
        # Built once for the longest sequence and sliced to the input's length in forward; not saved
        # in checkpoints (persistent=False) because it is no learned state.
        self.register_buffer("mask", causal_mask(context_length), persistent=False)

    def forward(
        self, x: torch.Tensor, return_weights: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """(batch, seq, d_in) -> context (batch, seq, d_out) [, weights (batch, seq, seq)]."""
        check_attention_input(x, self.d_in, self.context_length)
        seq = x.shape[1]
        queries, keys, values = self.W_query(x), self.W_key(x), self.W_value(x)
        return causal_attention(queries, keys, values, self.mask[:seq, :seq], self.dropout, return_weights)
