"""Chapter 3: multi-head causal attention, first as a stack of single heads, then as one module.

Inputs are (batch, seq, d_in); `return_weights=True` also returns the (batch, num_heads, seq, seq)
attention weights for plotting, otherwise the fused `scaled_dot_product_attention` kernel is used.
`MultiHeadCausalAttention` also takes a key/value cache, which chapter 5 adds for fast generation, and
chapter 8's options: rotary position embeddings (`rope_cos_sin`, `apply_rope`) and grouped-query attention
(fewer key/value heads than query heads).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from .attention import CausalAttention, causal_attention, causal_mask, check_attention_input

if TYPE_CHECKING:
    from .kv_cache import KVCache

__all__ = ["MultiHeadAttentionWrapper", "MultiHeadCausalAttention", "rope_cos_sin", "apply_rope"]

CHAPTER = 3
CHAPTERS = {"rope_cos_sin": 8, "apply_rope": 8}  # introduced by chapter 8


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


def rope_cos_sin(head_dim: int, context_length: int, theta: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The cosines and sines of rotary position embeddings, each (context_length, head_dim).

    Dimension i of a head is paired with dimension i + head_dim // 2; pair i turns by the angle
    position * theta ** (-2i / head_dim): fast for the first pairs, slower and slower for the later ones.
    """
    if head_dim % 2 != 0:
        raise ValueError(f"rotary embeddings rotate pairs of dimensions: head_dim must be even, got {head_dim}")
    frequencies = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim)
    angles = torch.outer(torch.arange(context_length).float(), frequencies)  # (context_length, head_dim // 2)
    angles = torch.cat([angles, angles], dim=-1)  # both dimensions of a pair turn by the same angle
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each pair (x_i, x_{i + head_dim // 2}) of the (batch, heads, seq, head_dim) queries or keys by
    the angles of their positions; cos and sin are the (seq, head_dim) rows of those positions."""
    first, second = x.chunk(2, dim=-1)
    rotated_quarter = torch.cat([-second, first], dim=-1)  # each pair turned by 90 degrees
    # (x, y) -> (x cos a - y sin a, x sin a + y cos a), for every pair at once
    return x * cos.to(x.dtype) + rotated_quarter * sin.to(x.dtype)


class MultiHeadCausalAttention(nn.Module):
    """Multi-head causal attention: one linear layer computes the queries, keys and values of all heads,
    which are split into heads, then an output projection mixes the heads' results:
    (batch, seq, d_in) -> (batch, seq, d_out), each head of width d_out // num_heads.

    Chapter 8's options: `num_kv_heads` < num_heads shares each key/value head among num_heads //
    num_kv_heads query heads (grouped-query attention); `rope_theta` rotates queries and keys by their
    positions (rotary embeddings); `out_bias=False` drops the output projection's bias.
    """

    def __init__(
        self,
        d_in: int,
        d_out: int,
        context_length: int,
        dropout: float,
        num_heads: int,
        qkv_bias: bool = False,
        num_kv_heads: int | None = None,
        rope_theta: float | None = None,
        out_bias: bool = True,
    ):
        super().__init__()
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        if num_heads < 1:
            raise ValueError(f"num_heads must be at least 1, got {num_heads}")
        if d_out % num_heads != 0:
            raise ValueError(
                f"d_out ({d_out}) must be divisible by num_heads ({num_heads}) so that every head gets "
                f"d_out // num_heads features; e.g. use d_out={num_heads * max(1, round(d_out / num_heads))}"
            )
        if num_kv_heads < 1 or num_heads % num_kv_heads != 0:
            raise ValueError(
                f"num_kv_heads ({num_kv_heads}) must divide num_heads ({num_heads}): each key/value head serves "
                "the same number of query heads"
            )
        self.d_in = d_in
        self.d_out = d_out
        self.context_length = context_length
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = d_out // num_heads
        self.kv_dim = num_kv_heads * self.head_dim  # the width of all keys (or values) together
        # The query, key and value projections side by side in one layer: output features [0, d_out) are the
        # queries, the next kv_dim the keys, the last kv_dim the values (3 * d_out in all without grouped-query
        # attention). One large matrix product is faster than three small ones.
        self.W_qkv = nn.Linear(d_in, d_out + 2 * self.kv_dim, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out, bias=out_bias)  # mixes what the heads found
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", causal_mask(context_length), persistent=False)
        self.rope = rope_theta is not None
        if self.rope:  # computed once for every position; not saved in checkpoints (no learned state)
            cos, sin = rope_cos_sin(self.head_dim, context_length, rope_theta)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, seq, heads * head_dim) -> (batch, heads, seq, head_dim): features h * head_dim onwards go to head h."""
        batch, seq, _ = x.shape
        return x.view(batch, seq, -1, self.head_dim).transpose(1, 2)

    def qkv_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(batch, seq, d_in) -> queries (batch, num_heads, seq, head_dim), keys and values (batch,
        num_kv_heads, seq, head_dim) each."""
        queries, keys, values = self.W_qkv(x).split([self.d_out, self.kv_dim, self.kv_dim], dim=-1)
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
        if self.rope:  # chapter 8: turn each query and key by the angles of its position
            cos, sin = self.rope_cos[start : start + seq], self.rope_sin[start : start + seq]
            queries, keys = apply_rope(queries, cos, sin), apply_rope(keys, cos, sin)
        if kv_cache is not None:
            keys, values = kv_cache.append(keys, values)  # (batch, num_kv_heads, start + seq, head_dim)
        if self.num_kv_heads != self.num_heads:  # chapter 8: query head h reads key/value head h // group
            group = self.num_heads // self.num_kv_heads
            keys, values = keys.repeat_interleave(group, dim=1), values.repeat_interleave(group, dim=1)
        mask = self.mask[start : start + seq, : start + seq]  # the rows of x's positions
        result = causal_attention(queries, keys, values, mask, self.dropout, return_weights)
        context, weights = result if return_weights else (result, None)
        # (batch, num_heads, seq, head_dim) -> (batch, seq, d_out): put the heads side by side again
        output = self.out_proj(context.transpose(1, 2).reshape(batch, seq, -1))
        return (output, weights) if return_weights else output
