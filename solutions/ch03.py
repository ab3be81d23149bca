"""Solutions to the chapter 3 exercises."""

import math

import torch


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(batch, seq, d_out) -> (batch, num_heads, seq, d_out // num_heads)."""
    batch, seq, d_out = x.shape
    return x.view(batch, seq, num_heads, d_out // num_heads).transpose(1, 2)


def merge_heads(context: torch.Tensor) -> torch.Tensor:
    """(batch, num_heads, seq, head_dim) -> (batch, seq, num_heads * head_dim)."""
    batch, num_heads, seq, head_dim = context.shape
    # reshape copies when needed: after the transpose the elements are not in order in memory.
    return context.transpose(1, 2).reshape(batch, seq, num_heads * head_dim)


def multihead_attention(
    x: torch.Tensor, w_qkv: torch.Tensor, w_out: torch.Tensor, b_out: torch.Tensor, num_heads: int
) -> torch.Tensor:
    """(batch, seq, d_in) -> (batch, seq, d_out) with weights (3 * d_out, d_in), (d_out, d_out), (d_out,)."""
    batch, seq, _ = x.shape
    d_out = w_out.shape[0]
    head_dim = d_out // num_heads

    def heads(t: torch.Tensor) -> torch.Tensor:  # (batch, seq, d_out) -> (batch, num_heads, seq, head_dim)
        return t.view(batch, seq, num_heads, head_dim).transpose(1, 2)

    queries, keys, values = (heads(t) for t in (x @ w_qkv.T).split(d_out, dim=-1))
    scores = queries @ keys.transpose(-2, -1) / math.sqrt(head_dim)
    future = torch.triu(torch.ones(seq, seq, dtype=torch.bool), diagonal=1)
    weights = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)
    context = (weights @ values).transpose(1, 2).reshape(batch, seq, d_out)
    return context @ w_out.T + b_out


def attention_parameter_count(d_in: int, d_out: int, num_heads: int, qkv_bias: bool) -> int:
    """The number of parameters of MultiHeadCausalAttention with these settings."""
    # The heads share the projections: their number changes how the features are grouped, not how many there are.
    qkv = 3 * (d_in * d_out + (d_out if qkv_bias else 0))
    out_proj = d_out * d_out + d_out
    return qkv + out_proj
