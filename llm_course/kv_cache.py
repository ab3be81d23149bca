"""Chapter 5: the key/value cache that makes generation fast.

Generating one token at a time, the model would re-read the whole sequence at every step, although the
keys and values of the earlier tokens never change (causal attention: a token never sees later ones). A
`KVCache` per transformer block keeps them: the prompt is read once, then each step feeds only the newest
token, (batch, 1) instead of (batch, seq). The attention module's own forward uses the cache
(`MultiHeadCausalAttention.forward(x, kv_cache)`), so there is only one attention code path.
"""

from __future__ import annotations

import torch

from .utils import check_int

__all__ = ["KVCache"]

CHAPTER = 5


class KVCache:
    """The keys and values one attention layer has computed so far, each (batch, kv_heads, length, head_dim).

    Room for `max_length` positions is allocated on first use, so each step writes into it instead of
    copying the whole cache.
    """

    def __init__(self, max_length: int):
        check_int("max_length", max_length)
        self.max_length = max_length
        self.length = 0  # positions filled so far
        self.keys: torch.Tensor | None = None  # (batch, kv_heads, max_length, head_dim) once used
        self.values: torch.Tensor | None = None

    def append(self, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the (batch, kv_heads, new, head_dim) keys and values of the new positions; return those of
        all positions so far, (batch, kv_heads, length, head_dim) each."""
        batch, heads, new, head_dim = keys.shape
        if self.length + new > self.max_length:
            raise ValueError(
                f"the cache holds {self.length} of {self.max_length} positions and cannot take {new} more: "
                "start a new cache for the last positions (the window must slide)"
            )
        if self.keys is None:
            self.keys = keys.new_empty(batch, heads, self.max_length, head_dim)
            self.values = values.new_empty(batch, heads, self.max_length, head_dim)
        self.keys[:, :, self.length : self.length + new] = keys
        self.values[:, :, self.length : self.length + new] = values
        self.length += new
        return self.keys[:, :, : self.length], self.values[:, :, : self.length]
