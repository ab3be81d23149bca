"""Solutions to the chapter 2 exercises."""

import math

import torch


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(..., n_queries, n_keys) scores, (n_queries, n_keys) bool mask, True = hidden -> weights, same shape."""
    scores = scores.masked_fill(mask, float("-inf"))  # exp(-inf) = 0: a hidden key gets no weight
    # Subtracting each row's maximum changes no weight but keeps exp() from overflowing.
    exps = torch.exp(scores - scores.amax(dim=-1, keepdim=True))
    return exps / exps.sum(dim=-1, keepdim=True)


def attention_context(
    queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., n_q, d), (..., n_k, d), (..., n_k, d_v) -> context (..., n_q, d_v), weights (..., n_q, n_k)."""
    scores = queries @ keys.transpose(-2, -1) / math.sqrt(keys.shape[-1])
    weights = torch.softmax(scores, dim=-1)
    return weights @ values, weights


def causal_mask_for_last(n_queries: int, n_keys: int) -> torch.Tensor:
    """(n_queries, n_keys) bool mask, True where a query at one of the last n_queries positions must not look."""
    query_positions = torch.arange(n_keys - n_queries, n_keys).unsqueeze(1)  # (n_queries, 1)
    key_positions = torch.arange(n_keys).unsqueeze(0)  # (1, n_keys)
    return key_positions > query_positions
