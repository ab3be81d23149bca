"""Chapter 3: multi-head causal attention, first as a stack of single heads, then as one module.

Inputs are (batch, seq, d_in); `return_weights=True` also returns the (batch, num_heads, seq, seq)
attention weights for plotting, otherwise the fused `scaled_dot_product_attention` kernel is used.
`MultiHeadCausalAttention` also takes a key/value cache, which chapter 5 adds for fast generation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from .attention import CausalAttention, causal_attention, causal_mask, check_attention_input

if TYPE_CHECKING:
    from .kv_cache import KVCache

__all__ = ["MultiHeadAttentionWrapper", "MultiHeadCausalAttention"]

CHAPTER = 3


class MultiHeadAttentionWrapper(nn.Module):
    """`num_heads` independent CausalAttention heads side by side:
    (batch, seq, d_in) -> (batch, seq, num_heads * d_out)."""

    def __init__(
        self, d_in: int, d_out: int, context_length: int, dropout: float, num_heads: int, qkv_bias: bool = False
    ):
        super().__init__()
        if num_heads < 1:
            raise ValueError(f"num_heads must be at least 1, got {num_heads}")
        self.heads = nn.ModuleList(
            [CausalAttention(d_in, d_out, context_length, dropout, qkv_bias) for _ in range(num_heads)]
        )

    def forward(
        self, x: torch.Tensor, return_weights: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """(batch, seq, d_in) -> (batch, seq, num_heads * d_out) [, weights (batch, num_heads, seq, seq)]."""
        if not return_weights:
            return torch.cat([head(x) for head in self.heads], dim=-1)
        contexts, weights = zip(*(head(x, return_weights=True) for head in self.heads))
        return torch.cat(contexts, dim=-1), torch.stack(weights, dim=1)


class MultiHeadCausalAttention(nn.Module):
    """Multi-head causal attention: one linear layer computes the queries, keys and values of all heads,
    which are split into heads, then an output projection mixes the heads' results:
    (batch, seq, d_in) -> (batch, seq, d_out), each head of width d_out // num_heads."""

    def __init__(
        self, d_in: int, d_out: int, context_length: int, dropout: float, num_heads: int, qkv_bias: bool = False
    ):
        super().__init__()
        if num_heads < 1:
            raise ValueError(f"num_heads must be at least 1, got {num_heads}")
        if d_out % num_heads != 0:
            raise ValueError(
                f"d_out ({d_out}) must be divisible by num_heads ({num_heads}) so that every head gets "
                f"d_out // num_heads features; e.g. use d_out={num_heads * max(1, round(d_out / num_heads))}"
            )
        self.d_in = d_in
        self.d_out = d_out
        self.context_length = context_length
        self.num_heads = num_heads
        self.head_dim = d_out // num_heads
        # The query, key and value projections side by side in one layer, three times as wide: output
        # features [0, d_out) are the queries, [d_out, 2 * d_out) the keys, the rest the values. One large
        # matrix product is faster than three small ones.
        self.W_qkv = nn.Linear(d_in, 3 * d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)  # mixes what the heads found
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", causal_mask(context_length), persistent=False)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, seq, d_out) -> (batch, num_heads, seq, head_dim): features h * head_dim onwards go to head h."""
        batch, seq, _ = x.shape
        return x.view(batch, seq, self.num_heads, self.head_dim).transpose(1, 2)

    def qkv_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(batch, seq, d_in) -> queries, keys and values, each (batch, num_heads, seq, head_dim)."""
        queries, keys, values = self.W_qkv(x).split(self.d_out, dim=-1)  # each (batch, seq, d_out)
        return self.split_heads(queries), self.split_heads(keys), self.split_heads(values)

    def forward(
        self, x: torch.Tensor, kv_cache: KVCache | None = None, return_weights: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """(batch, seq, d_in) -> output (batch, seq, d_out) [, weights (batch, num_heads, seq, all_seq)].

        With a `kv_cache` (chapter 5), x holds only the tokens that follow the cached ones: their keys and
        values join the cache, and their queries attend to every position so far (all_seq of them).
        """
        check_attention_input(x, self.d_in, self.context_length)
        batch, seq, _ = x.shape
        start = 0 if kv_cache is None else kv_cache.length  # the position of x's first token
        queries, keys, values = self.qkv_heads(x)
        if kv_cache is not None:
            keys, values = kv_cache.append(keys, values)  # (batch, num_heads, start + seq, head_dim)
        mask = self.mask[start : start + seq, : start + seq]  # the rows of x's positions
        result = causal_attention(queries, keys, values, mask, self.dropout, return_weights)
        context, weights = result if return_weights else (result, None)
        # (batch, num_heads, seq, head_dim) -> (batch, seq, d_out): put the heads side by side again
        output = self.out_proj(context.transpose(1, 2).reshape(batch, seq, -1))
        return (output, weights) if return_weights else output
