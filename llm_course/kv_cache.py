"""Chapter 4: the key/value cache that makes generation fast.

Generating one token at a time, the model would re-read the whole sequence at every step, although the
keys and values of the earlier tokens do not change (causal attention: a token never sees later ones).
A `KVCache` per transformer block keeps them, so the prompt is processed once and then each step feeds
only the newest token: (batch, 1) instead of (batch, seq).
"""

from __future__ import annotations

import torch

from .attention import causal_attention
from .multihead_attention import MultiHeadCausalAttention

__all__ = ["KVCache"]

CHAPTER = 4


class KVCache:
    """The keys and values one attention layer has computed so far, each (batch, n_heads, length, head_dim).

    Room for `max_length` positions is allocated on first use, so each step writes into it instead of
    copying the whole cache.
    """

    def __init__(self, max_length: int):
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
            raise ValueError(f"max_length must be a positive integer, got {max_length!r}")
        self.max_length = max_length
        self.length = 0  # positions filled so far
        self.keys: torch.Tensor | None = None  # (batch, n_heads, max_length, head_dim) once used
        self.values: torch.Tensor | None = None

    def append(self, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the (batch, n_heads, new, head_dim) keys and values of the new positions; return those of
        all positions so far, (batch, n_heads, length, head_dim) each."""
        batch, n_heads, new, head_dim = keys.shape
        if self.length + new > self.max_length:
            raise ValueError(
                f"the cache holds {self.length} of {self.max_length} positions and cannot take {new} more: "
                "start a new cache for the last positions (the window must slide)"
            )
        if self.keys is None:
            self.keys = keys.new_empty(batch, n_heads, self.max_length, head_dim)
            self.values = values.new_empty(batch, n_heads, self.max_length, head_dim)
        self.keys[:, :, self.length : self.length + new] = keys
        self.values[:, :, self.length : self.length + new] = values
        self.length += new
        return self.keys[:, :, : self.length], self.values[:, :, : self.length]

    def attend(self, att: MultiHeadCausalAttention, x: torch.Tensor) -> torch.Tensor:
        """`att` applied to new tokens x (batch, new, d_in) that follow the cached ones -> (batch, new, d_out).

        Gives the last `new` rows of what `att` gives for the whole sequence: the new queries attend to the
        cached keys and values plus their own, and the causal mask is the rows of the new positions.
        """
        batch, new, _ = x.shape
        start = self.length
        queries, keys, values = att.qkv_heads(x)
        keys, values = self.append(keys, values)  # (batch, n_heads, start + new, head_dim)
        mask = att.mask[start : start + new, : start + new]
        context = causal_attention(queries, keys, values, mask, att.dropout)  # (batch, n_heads, new, head_dim)
        return att.out_proj(context.transpose(1, 2).reshape(batch, new, -1))
