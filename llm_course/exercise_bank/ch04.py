"""Chapter 4 exercises: a greedy decoding step, top-k sampling, temperature, perplexity."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import Exercise, ExerciseCase, next_token_probs, perplexity, sample_next_token
from .inputs import randint, randn


def greedy_next_token_reference(logits: torch.Tensor) -> torch.Tensor:
    return sample_next_token(logits[:, -1, :], temperature=0.0)


def greedy_next_token_cases() -> list[ExerciseCase]:
    return [
        ExerciseCase("one sequence of one token", (torch.tensor([[[0.1, 2.0, -1.0, 0.5, 1.5]]]),)),
        ExerciseCase("the last position decides, not the earlier ones", (randn(1, 1, 4, 6),)),
        ExerciseCase("a batch of 2 sequences", (randn(2, 2, 3, 8),)),
        ExerciseCase("only negative logits", (-randn(3, 2, 2, 5).abs() - 1,)),
    ]


def top_k_probs_reference(logits: torch.Tensor, k: int) -> torch.Tensor:
    return next_token_probs(logits, top_k=k)


def top_k_probs_cases() -> list[ExerciseCase]:
    five = torch.tensor([[2.0, 1.0, 0.5, -1.0, 3.0]])
    return [
        ExerciseCase("the 2 best of 5 tokens", (five, 2)),
        ExerciseCase("k = 1: all probability on the best token", (five, 1)),
        ExerciseCase("k = the vocabulary size: an ordinary softmax", (five, 5)),
        ExerciseCase("a batch: each row keeps its own top k", (randn(1, 2, 10), 3)),
        ExerciseCase("k larger than the vocabulary", (randn(2, 2, 4), 10)),
    ]


def temperature_probs_reference(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return next_token_probs(logits, temperature=temperature)


def temperature_probs_cases() -> list[ExerciseCase]:
    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0]])
    return [
        ExerciseCase("temperature 1: an ordinary softmax", (logits, 1.0)),
        ExerciseCase("temperature 0.5 sharpens", (logits, 0.5)),
        ExerciseCase("temperature 2 flattens", (randn(1, 2, 6), 2.0)),
        ExerciseCase("temperature 0 means greedy", (randn(2, 2, 6), 0.0)),
        ExerciseCase("a tiny temperature, where exp() overflows", (torch.tensor([[10.0, 9.0, -5.0]]), 0.01)),
    ]


def perplexity_from_logits_reference(logits: torch.Tensor, targets: torch.Tensor) -> float:
    return perplexity(F.cross_entropy(logits.flatten(0, 1), targets.flatten()))


def perplexity_from_logits_cases() -> list[ExerciseCase]:
    confident = torch.full((1, 3, 4), -5.0)
    targets = torch.tensor([[2, 0, 3]])
    confident[0, torch.arange(3), targets[0]] = 5.0
    return [
        ExerciseCase("equal logits over 5 tokens: perplexity 5", (torch.zeros(1, 3, 5), torch.tensor([[0, 4, 2]]))),
        ExerciseCase("a batch of 2 sequences", (randn(1, 2, 4, 7), randint(2, 7, 2, 4))),
        ExerciseCase("a confident, correct model: close to 1", (confident, targets)),
        ExerciseCase("a vocabulary of 1,000 tokens", (randn(3, 1, 2, 1000), randint(4, 1000, 1, 2))),
    ]


EXERCISES = (
    Exercise(
        id="4.1",
        title="A greedy decoding step",
        function="greedy_next_token",
        task=(
            "Write `greedy_next_token(logits)`: given the model's output `logits` (batch, seq, vocab) for a batch "
            "of sequences, choose each sequence's next token greedily (the most likely one) from the prediction "
            "at its **last** position. Return the token ids as an int64 tensor of shape (batch, 1), ready to "
            "be appended to the sequences with `torch.cat`."
        ),
        stub='''import torch


def greedy_next_token(logits: torch.Tensor) -> torch.Tensor:
    """(batch, seq, vocab) logits -> (batch, 1) int64 ids of the most likely next tokens."""
    # YOUR CODE HERE
    raise NotImplementedError()
''',
        reference=greedy_next_token_reference,
        cases=greedy_next_token_cases,
    ),
    Exercise(
        id="4.2",
        title="Top-k sampling",
        function="top_k_probs",
        task=(
            "Write `top_k_probs(logits, k)`: the distribution top-k sampling draws from. For each row of `logits` "
            "(batch, vocab), keep the `k` largest logits, give every other token probability exactly 0, and "
            "turn the kept logits into probabilities that sum to 1 (a softmax over them). If `k` is at least "
            "the vocabulary size, every token is kept. Return (batch, vocab) probabilities.\n\n"
            "(The logits have no ties, so the top `k` are well defined.)"
        ),
        stub='''import torch


def top_k_probs(logits: torch.Tensor, k: int) -> torch.Tensor:
    """(batch, vocab) logits -> (batch, vocab) probabilities over each row's k most likely tokens."""
    # YOUR CODE HERE
    raise NotImplementedError()
''',
        reference=top_k_probs_reference,
        cases=top_k_probs_cases,
    ),
    Exercise(
        id="4.3",
        title="Temperature",
        function="temperature_probs",
        task=(
            "Write `temperature_probs(logits, temperature)`: the softmax of `logits` (batch, vocab) divided by "
            "`temperature`. Temperature 0 means greedy decoding: probability 1 on each row's most likely token "
            "and 0 elsewhere (dividing by 0 is not an option). Return (batch, vocab) probabilities.\n\n"
            "Small temperatures make large scaled logits: mind `exp()` overflowing."
        ),
        stub='''import torch


def temperature_probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """(batch, vocab) logits -> (batch, vocab) probabilities at this temperature (0 = greedy)."""
    # YOUR CODE HERE
    raise NotImplementedError()
''',
        reference=temperature_probs_reference,
        cases=temperature_probs_cases,
    ),
    Exercise(
        id="4.4",
        title="Perplexity from logits",
        function="perplexity_from_logits",
        task=(
            "Write `perplexity_from_logits(logits, targets)`: the perplexity of a model's predictions "
            "`logits` (batch, seq, vocab) of the tokens `targets` (batch, seq), i.e. the exponential of the "
            "mean cross-entropy over all batch * seq predictions. Return it as a Python float (a one-element "
            "tensor is accepted too).\n\n"
            "A model that spreads its probability evenly over V tokens has perplexity V: the first check is "
            "one you can work out by hand."
        ),
        stub='''import math

import torch
import torch.nn.functional as F


def perplexity_from_logits(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """(batch, seq, vocab) logits, (batch, seq) target ids -> exp(mean cross-entropy)."""
    # YOUR CODE HERE
    raise NotImplementedError()
''',
        reference=perplexity_from_logits_reference,
        cases=perplexity_from_logits_cases,
    ),
)
