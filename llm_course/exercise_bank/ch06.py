"""Chapter 6 exercises: padding-aware last-token pooling, a LoRA layer's forward pass, accuracy.

The references are written with torch here (LoRA as in Hu et al. 2021 and the peft library: the update
B A is scaled by alpha / rank), so the checks stand alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import Exercise, ExerciseCase
from .inputs import randint, randn


def last_token_states_reference(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    batch, seq, _ = hidden.shape
    # The largest position whose mask is 1: positions are numbered 1..seq so that padding (0) never wins.
    last = (attention_mask * torch.arange(1, seq + 1)).argmax(dim=1)
    return hidden[torch.arange(batch), last]


def last_token_states_cases() -> list[ExerciseCase]:
    return [
        ExerciseCase("no padding", (randn(1, 2, 3, 4), torch.ones(2, 3, dtype=torch.long))),
        ExerciseCase("padding on the right",
                     (randn(2, 3, 5, 4), torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]))),
        ExerciseCase("a single real token", (randn(3, 2, 4, 3), torch.tensor([[1, 0, 0, 0], [1, 1, 1, 0]]))),
        ExerciseCase("padding on the left", (randn(4, 2, 5, 4), torch.tensor([[0, 0, 1, 1, 1], [0, 1, 1, 1, 1]]))),
    ]


def lora_linear_reference(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, lora_A: torch.Tensor, lora_B: torch.Tensor, alpha: float
) -> torch.Tensor:
    rank = lora_A.shape[0]
    return F.linear(x, weight, bias) + (alpha / rank) * F.linear(F.linear(x, lora_A), lora_B)


def lora_linear_cases() -> list[ExerciseCase]:
    def case(label: str, seed: int, x_shape: tuple[int, ...], d_out: int, rank: int, alpha: float,
             zero_b: bool = False) -> ExerciseCase:
        d_in = x_shape[-1]
        lora_B = torch.zeros(d_out, rank) if zero_b else randn(seed + 4, d_out, rank)
        return ExerciseCase(label, (randn(seed, *x_shape), randn(seed + 1, d_out, d_in), randn(seed + 2, d_out),
                                    randn(seed + 3, rank, d_in), lora_B, alpha))

    return [
        case("B = 0, as at initialisation: the frozen layer alone", 1, (2, 4), 3, 2, 4.0, zero_b=True),
        case("rank 2, alpha 4", 6, (2, 4), 3, 2, 4.0),
        case("rank 1, alpha 1", 11, (3, 5), 2, 1, 1.0),
        case("a batch of sequences (2, 3, 6)", 16, (2, 3, 6), 4, 2, 8.0),
    ]


def batch_accuracy_reference(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return (logits.argmax(dim=-1) == labels).float().mean().item()


def batch_accuracy_cases() -> list[ExerciseCase]:
    logits = torch.tensor([[2.0, 0.1], [0.3, 1.5], [1.0, -1.0], [0.2, 0.4]])
    return [
        ExerciseCase("every prediction right", (logits, torch.tensor([0, 1, 0, 1]))),
        ExerciseCase("half of them right", (logits, torch.tensor([0, 0, 1, 1]))),
        ExerciseCase("none right", (logits, torch.tensor([1, 0, 1, 0]))),
        ExerciseCase("10 examples, 3 classes", (randn(1, 10, 3), randint(2, 3, 10))),
        ExerciseCase("a single example", (torch.tensor([[0.1, 0.7, 0.2]]), torch.tensor([1]))),
    ]


EXERCISES = (
    Exercise(
        id="6.1",
        title="The last real token of each sequence",
        function="last_token_states",
        task=(
            "A classifier built on a GPT reads the output at the last token, the only one that has seen the "
            "whole text. In a padded batch that is not the last position. Write `last_token_states(hidden, "
            "attention_mask)`: `hidden` (batch, seq, emb) are the model's outputs, `attention_mask` (batch, seq) "
            "is 1 for a real token and 0 for padding. Return (batch, emb): for each sequence, the vector at "
            "its last real token.\n\n"
            "The course pads on the right, but some tokenizers pad on the left: handle both."
        ),
        stub='''import torch


def last_token_states(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(batch, seq, emb) outputs and (batch, seq) mask (1 = token, 0 = padding) -> (batch, emb)."""
    # YOUR CODE HERE
    raise NotImplementedError()
''',
        reference=last_token_states_reference,
        cases=last_token_states_cases,
    ),
    Exercise(
        id="6.2",
        title="A LoRA layer's forward pass",
        function="lora_linear",
        task=(
            "LoRA fine-tunes a frozen linear layer (`weight` (d_out, d_in), `bias` (d_out,)) by adding a "
            "low-rank update: two small matrices `lora_A` (rank, d_in) and `lora_B` (d_out, rank), whose product "
            "is scaled by `alpha / rank`. Write `lora_linear(x, weight, bias, lora_A, lora_B, alpha)`: the frozen "
            "layer's output `x @ weight.T + bias` plus `alpha / rank` times `x @ lora_A.T @ lora_B.T`, for `x` "
            "of shape (..., d_in). Return (..., d_out).\n\n"
            "Why is `lora_B` initialised to zeros?"
        ),
        stub='''import torch


def lora_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, lora_A: torch.Tensor, lora_B: torch.Tensor, alpha: float
) -> torch.Tensor:
    """(..., d_in) -> (..., d_out): the frozen layer plus the update (alpha / rank) B A."""
    # YOUR CODE HERE
    raise NotImplementedError()
''',
        reference=lora_linear_reference,
        cases=lora_linear_cases,
    ),
    Exercise(
        id="6.3",
        title="Classification accuracy",
        function="batch_accuracy",
        task=(
            "Write `batch_accuracy(logits, labels)`: the fraction (between 0 and 1) of the examples whose most "
            "likely class in `logits` (n, classes) is their label in `labels` (n,). Return a Python float (a "
            "one-element tensor is accepted too)."
        ),
        stub='''import torch


def batch_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """(n, classes) logits, (n,) labels -> the fraction of examples classified correctly."""
    # YOUR CODE HERE
    raise NotImplementedError()
''',
        reference=batch_accuracy_reference,
        cases=batch_accuracy_cases,
    ),
)
