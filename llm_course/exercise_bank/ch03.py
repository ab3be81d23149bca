"""Chapter 3 exercises: splitting into heads, merging them back, multi-head attention, its parameter count."""

from __future__ import annotations

import torch

from .. import Exercise, ExerciseCase, MultiHeadCausalAttention
from .inputs import randn


def split_heads_reference(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    batch, seq, d_out = x.shape
    return MultiHeadCausalAttention(d_out, d_out, seq, 0.0, num_heads).split_heads(x)


def split_heads_cases() -> list[ExerciseCase]:
    return [
        ExerciseCase("2 tokens of width 4 into 2 heads", (randn(1, 1, 2, 4), 2)),
        ExerciseCase("a batch of 2, width 6 into 3 heads", (randn(2, 2, 3, 6), 3)),
        ExerciseCase("a single head", (randn(3, 2, 3, 4), 1)),
        ExerciseCase("heads of width 1", (randn(4, 1, 3, 4), 4)),
    ]


def merge_heads_reference(context: torch.Tensor) -> torch.Tensor:
    batch, num_heads, seq, head_dim = context.shape
    return context.transpose(1, 2).reshape(batch, seq, num_heads * head_dim)


def merge_heads_cases() -> list[ExerciseCase]:
    # What attention returns is often a transposed view, whose elements are not laid out in order in memory.
    not_contiguous = randn(4, 2, 5, 3, 2).transpose(1, 2)  # (batch, heads, seq, head_dim) = (2, 3, 5, 2)
    return [
        ExerciseCase("2 heads, 3 tokens", (randn(1, 1, 2, 3, 2),)),
        ExerciseCase("a batch of 2, 3 heads", (randn(2, 2, 3, 4, 2),)),
        ExerciseCase("a single head", (randn(3, 1, 1, 4, 3),)),
        ExerciseCase("a transposed view, not contiguous in memory", (not_contiguous,)),
    ]


def multihead_attention_reference(
    x: torch.Tensor, w_qkv: torch.Tensor, w_out: torch.Tensor, b_out: torch.Tensor, num_heads: int
) -> torch.Tensor:
    batch, seq, d_in = x.shape
    att = MultiHeadCausalAttention(d_in, w_out.shape[0], seq, 0.0, num_heads).eval()
    with torch.no_grad():
        att.W_qkv.weight.copy_(w_qkv)
        att.out_proj.weight.copy_(w_out)
        att.out_proj.bias.copy_(b_out)
        return att(x)


def multihead_attention_cases() -> list[ExerciseCase]:
    def case(label: str, seed: int, batch: int, seq: int, d_in: int, d_out: int, num_heads: int) -> ExerciseCase:
        weights = (randn(seed + 1, 3 * d_out, d_in) / d_in**0.5, randn(seed + 2, d_out, d_out) / d_out**0.5)
        return ExerciseCase(label, (randn(seed, batch, seq, d_in), *weights, randn(seed + 3, d_out), num_heads))

    return [
        case("3 tokens, width 4, 2 heads", 1, 1, 3, 4, 4, 2),
        case("a single head", 5, 1, 4, 4, 4, 1),
        case("a batch of 2, d_in 6, d_out 8, 4 heads", 9, 2, 5, 6, 8, 4),
        case("a single token", 13, 2, 1, 4, 6, 3),
    ]


def attention_parameter_count_reference(d_in: int, d_out: int, num_heads: int, qkv_bias: bool) -> int:
    att = MultiHeadCausalAttention(d_in, d_out, 4, 0.0, num_heads, qkv_bias)
    return sum(parameter.numel() for parameter in att.parameters())


def attention_parameter_count_cases() -> list[ExerciseCase]:
    return [
        ExerciseCase("width 4, 2 heads, no bias", (4, 4, 2, False)),
        ExerciseCase("d_in 6, d_out 8, with biases", (6, 8, 1, True)),
        ExerciseCase("the course model's attention (256 wide, 4 heads)", (256, 256, 4, False)),
        ExerciseCase("GPT-2 small's attention (768 wide, 12 heads, biases)", (768, 768, 12, True)),
        ExerciseCase("GPT-2 small's width with a single head", (768, 768, 1, True)),
    ]


EXERCISES = (
    Exercise(
        id="3.1",
        title="Split into heads",
        function="split_heads",
        task=(
            "Write `split_heads(x, num_heads)`: cut each token vector of `x` (batch, seq, d_out) into `num_heads` "
            "consecutive pieces of width `head_dim = d_out // num_heads` (features `h * head_dim` onwards go to "
            "head `h`) and move the head dimension in front of the sequence: return (batch, num_heads, seq, "
            "head_dim)."
        ),
        stub='''import torch


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(batch, seq, d_out) -> (batch, num_heads, seq, d_out // num_heads)."""
    # YOUR CODE HERE
    raise NotImplementedError()
''',
        reference=split_heads_reference,
        cases=split_heads_cases,
    ),
    Exercise(
        id="3.2",
        title="Merge the heads back",
        function="merge_heads",
        task=(
            "Write `merge_heads(context)`, the inverse of splitting: the heads' results `context` (batch, "
            "num_heads, seq, head_dim) become one vector per token again, the heads side by side: return "
            "(batch, seq, num_heads * head_dim), head 0's features first.\n\n"
            "The input may be a transposed view that is not contiguous in memory."
        ),
        stub='''import torch


def merge_heads(context: torch.Tensor) -> torch.Tensor:
    """(batch, num_heads, seq, head_dim) -> (batch, seq, num_heads * head_dim)."""
    # YOUR CODE HERE
    raise NotImplementedError()
''',
        reference=merge_heads_reference,
        cases=merge_heads_cases,
    ),
    Exercise(
        id="3.3",
        title="Multi-head causal attention from its weights",
        function="multihead_attention",
        task=(
            "Write `multihead_attention(x, w_qkv, w_out, b_out, num_heads)`, the forward pass of "
            "`MultiHeadCausalAttention` (without dropout and without query/key/value biases) from its weight "
            "tensors:\n\n"
            "- `x @ w_qkv.T` gives, side by side, the queries (the first `d_out` features), the keys and the "
            "values; `w_qkv` is (3 * d_out, d_in), as `nn.Linear` stores it;\n"
            "- split each into `num_heads` heads, apply causal scaled dot-product attention per head, merge "
            "the heads;\n"
            "- finish with the output projection `w_out` (d_out, d_out) and its bias `b_out` (d_out,).\n\n"
            "Return (batch, seq, d_out). Your `split_heads` and `merge_heads` may help."
        ),
        stub='''import math

import torch


def multihead_attention(
    x: torch.Tensor, w_qkv: torch.Tensor, w_out: torch.Tensor, b_out: torch.Tensor, num_heads: int
) -> torch.Tensor:
    """(batch, seq, d_in) -> (batch, seq, d_out) with weights (3 * d_out, d_in), (d_out, d_out), (d_out,)."""
    # YOUR CODE HERE
    raise NotImplementedError()
''',
        reference=multihead_attention_reference,
        cases=multihead_attention_cases,
    ),
    Exercise(
        id="3.4",
        title="How many parameters?",
        function="attention_parameter_count",
        task=(
            "Write `attention_parameter_count(d_in, d_out, num_heads, qkv_bias)`: the number of trainable "
            "parameters (weights and biases) of `MultiHeadCausalAttention(d_in, d_out, context_length, dropout, "
            "num_heads, qkv_bias)`, from a formula rather than by building the module. The output projection "
            "always has a bias; the query, key and value projections have biases only with `qkv_bias`.\n\n"
            "What does the number of heads change?"
        ),
        stub='''def attention_parameter_count(d_in: int, d_out: int, num_heads: int, qkv_bias: bool) -> int:
    """The number of parameters of MultiHeadCausalAttention with these settings."""
    # YOUR CODE HERE
    raise NotImplementedError()
''',
        reference=attention_parameter_count_reference,
        cases=attention_parameter_count_cases,
    ),
)
