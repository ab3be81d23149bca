"""Chapter 2 exercises: a masked softmax, scaled dot-product attention, a causal mask for the last queries."""

from __future__ import annotations

import torch

from .. import Exercise, ExerciseCase, attention_weights, causal_mask
from .inputs import randn


def masked_softmax_reference(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.softmax(scores.masked_fill(mask, float("-inf")), dim=-1)


def masked_softmax_cases() -> list[ExerciseCase]:
    last_two_of_five = causal_mask(5)[3:]
    return [
        ExerciseCase("nothing masked", (randn(1, 3, 3), torch.zeros(3, 3, dtype=torch.bool))),
        ExerciseCase("a causal mask", (randn(2, 4, 4), causal_mask(4))),
        ExerciseCase("a batch of score matrices sharing one mask", (randn(3, 2, 4, 4), causal_mask(4))),
        ExerciseCase("the last 2 queries of 5 keys", (randn(4, 2, 5), last_two_of_five)),
        ExerciseCase(
            "large scores, where exp() overflows a float",
            (torch.tensor([[1000.0, 999.0, 0.0], [500.0, 2000.0, 1999.0], [-1000.0, 1.0, 3.0]]), causal_mask(3)),
        ),
    ]


def attention_context_reference(
    queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    weights = attention_weights(queries, keys)
    return weights @ values, weights


def attention_context_cases() -> list[ExerciseCase]:
    return [
        ExerciseCase("3 tokens of width 2", (randn(1, 3, 2), randn(2, 3, 2), randn(3, 3, 2))),
        ExerciseCase(
            "2 queries over 5 keys, values of another width", (randn(4, 2, 4), randn(5, 5, 4), randn(6, 5, 3))
        ),
        ExerciseCase("a batch of heads (2, 3, 4, 8)", tuple(randn(seed, 2, 3, 4, 8) for seed in (7, 8, 9))),
        ExerciseCase("width 64, where the scaling matters most", tuple(randn(seed, 4, 64) for seed in (10, 11, 12))),
    ]


def causal_mask_for_last_reference(n_queries: int, n_keys: int) -> torch.Tensor:
    return causal_mask(n_keys)[n_keys - n_queries :]


def causal_mask_for_last_cases() -> list[ExerciseCase]:
    return [
        ExerciseCase("as many queries as keys", (4, 4)),
        ExerciseCase("a single token", (1, 1)),
        ExerciseCase("the newest query only: it sees every key", (1, 5)),
        ExerciseCase("the last 2 queries of 5 positions", (2, 5)),
        ExerciseCase("the last 3 queries of 6 positions", (3, 6)),
    ]


EXERCISES = (
    Exercise(
        id="2.1",
        title="A masked softmax",
        function="masked_softmax",
        task=(
            "Write `masked_softmax(scores, mask)`: the softmax of `scores` (..., n_queries, n_keys) over the last "
            "dimension, where the keys that `mask` (n_queries, n_keys) marks `True` get a weight of exactly 0 "
            "and every row still sums to 1 over the keys it may see. `mask` applies to every matrix of a batch.\n\n"
            "Mind large scores: `exp(1000.0)` is `inf` in floating point. (No row is entirely masked.)"
        ),
        stub='''import torch


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(..., n_queries, n_keys) scores, (n_queries, n_keys) bool mask, True = hidden -> weights, same shape."""
    # YOUR CODE HERE
    raise NotImplementedError()
''',
        reference=masked_softmax_reference,
        cases=masked_softmax_cases,
    ),
    Exercise(
        id="2.2",
        title="Scaled dot-product attention",
        function="attention_context",
        task=(
            "Write `attention_context(queries, keys, values)`, attention without a mask: the weights are the "
            "softmax, over the keys, of the dot products of each query with each key divided by the square root "
            "of the keys' width; each context vector is the weighted sum of the values.\n\n"
            "Shapes: queries (..., n_queries, d), keys (..., n_keys, d), values (..., n_keys, d_v), with any "
            "number of leading batch dimensions. Return `(context, weights)`: (..., n_queries, d_v) and "
            "(..., n_queries, n_keys)."
        ),
        stub='''import math

import torch


def attention_context(
    queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., n_q, d), (..., n_k, d), (..., n_k, d_v) -> context (..., n_q, d_v), weights (..., n_q, n_k)."""
    # YOUR CODE HERE
    raise NotImplementedError()
''',
        reference=attention_context_reference,
        cases=attention_context_cases,
        returns=("context", "weights"),
    ),
    Exercise(
        id="2.3",
        title="A causal mask for the last queries",
        function="causal_mask_for_last",
        task=(
            "When a model generates text with a key/value cache (chapter 4), the queries are only the newest "
            "positions while the keys cover the whole sequence. Write `causal_mask_for_last(n_queries, n_keys)`: "
            "the boolean mask (n_queries, n_keys) for queries at the **last** `n_queries` positions of a "
            "sequence of `n_keys` tokens, `True` where a query must not see a key (a later position).\n\n"
            "With `n_queries == n_keys` it is the usual causal mask. (`n_queries` is at most `n_keys`.)"
        ),
        stub='''import torch


def causal_mask_for_last(n_queries: int, n_keys: int) -> torch.Tensor:
    """(n_queries, n_keys) bool mask, True where a query at one of the last n_queries positions must not look."""
    # YOUR CODE HERE
    raise NotImplementedError()
''',
        reference=causal_mask_for_last_reference,
        cases=causal_mask_for_last_cases,
    ),
)
