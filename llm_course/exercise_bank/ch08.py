"""Chapter 8 exercises: RMSNorm, the rotary embedding of a pair of dimensions, grouped-query attention's
repeated key/value heads, and the SwiGLU feed-forward network of Llama.

The references are torch's own functions (`F.rms_norm`, complex multiplication for the rotation,
`repeat_interleave`, `F.silu`), so the checks stand alone.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .. import Exercise, ExerciseCase
from .inputs import randn


def rms_normalize_reference(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return F.rms_norm(x, weight.shape, weight, eps)


def rms_normalize_cases() -> list[ExerciseCase]:
    return [
        ExerciseCase("one vector, weight 1", (torch.tensor([[1.0, 2.0, 3.0, 4.0]]), torch.ones(4), 1e-6)),
        ExerciseCase("a learned weight", (randn(1, 2, 4), torch.tensor([0.5, 1.0, 2.0, -1.0]), 1e-6)),
        ExerciseCase("a batch of sequences (2, 3, 8)", (randn(2, 2, 3, 8), randn(3, 8), 1e-5)),
        ExerciseCase("a zero vector: eps keeps it finite", (torch.zeros(1, 4), torch.ones(4), 1e-6)),
        ExerciseCase("large values", (randn(4, 2, 6) * 1e4, torch.ones(6), 1e-6)),
    ]


def rotate_pair_reference(pair: torch.Tensor, frequency: float) -> torch.Tensor:
    # A pair (x, y) is the complex number x + iy; rotating it by an angle multiplies it by e^(i angle).
    angles = torch.arange(pair.shape[0], dtype=torch.float64) * frequency
    rotation = torch.polar(torch.ones_like(angles), angles)
    rotated = torch.view_as_complex(pair.double().contiguous()) * rotation
    return torch.view_as_real(rotated).to(pair.dtype)


def rotate_pair_cases() -> list[ExerciseCase]:
    return [
        ExerciseCase("position 0 is not rotated", (torch.tensor([[0.6, -0.8]]), 0.3)),
        ExerciseCase("a quarter turn per position", (torch.tensor([[1.0, 0.0]] * 4), math.pi / 2)),
        ExerciseCase("5 positions, frequency 0.1", (randn(1, 5, 2), 0.1)),
        ExerciseCase("frequency 0: no rotation", (randn(2, 3, 2), 0.0)),
        ExerciseCase("64 positions, frequency 1 (large angles)", (randn(3, 64, 2), 1.0)),
    ]


def expand_kv_heads_reference(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    return torch.repeat_interleave(x, n_rep, dim=1)


def expand_kv_heads_cases() -> list[ExerciseCase]:
    return [
        ExerciseCase("2 key/value heads, each used by 2 query heads", (randn(1, 1, 2, 3, 2), 2)),
        ExerciseCase("n_rep 1: unchanged", (randn(2, 1, 3, 2, 2), 1)),
        ExerciseCase("a batch of 2, 2 heads repeated 3 times", (randn(3, 2, 2, 4, 3), 3)),
        ExerciseCase("one key/value head for all (multi-query attention)", (randn(4, 1, 1, 3, 2), 4)),
    ]


def swiglu_feed_forward_reference(
    x: torch.Tensor, w_gate: torch.Tensor, w_up: torch.Tensor, w_down: torch.Tensor
) -> torch.Tensor:
    return F.linear(F.silu(F.linear(x, w_gate)) * F.linear(x, w_up), w_down)


def swiglu_feed_forward_cases() -> list[ExerciseCase]:
    def case(label: str, seed: int, x_shape: tuple[int, ...], hidden: int) -> ExerciseCase:
        emb = x_shape[-1]
        return ExerciseCase(label, (randn(seed, *x_shape), randn(seed + 1, hidden, emb), randn(seed + 2, hidden, emb),
                                    randn(seed + 3, emb, hidden)))

    zero = case("a zero input gives zero", 13, (1, 4), 6)
    return [
        case("one vector, width 4, hidden 6", 1, (1, 4), 6),
        case("a batch of sequences (2, 3, 4)", 5, (2, 3, 4), 6),
        case("hidden width equal to the width", 9, (2, 5), 5),
        ExerciseCase(zero.label, (torch.zeros(1, 4), *zero.args[1:])),
    ]


EXERCISES = (
    Exercise(
        id="8.1",
        title="RMSNorm",
        function="rms_normalize",
        task=(
            "Llama replaces LayerNorm by RMSNorm: no mean is subtracted and there is no shift. Write "
            "`rms_normalize(x, weight, eps)`: divide each vector of `x` (..., emb) by the square root of "
            "(the mean of its squared elements + `eps`), then multiply elementwise by `weight` (emb,). "
            "Return the same shape as `x`."
        ),
        stub='''import torch


def rms_normalize(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """(..., emb) -> (..., emb): x / sqrt(mean(x ** 2) + eps) * weight, over the last dimension."""
    # YOUR CODE HERE
    raise NotImplementedError()
''',
        reference=rms_normalize_reference,
        cases=rms_normalize_cases,
    ),
    Exercise(
        id="8.2",
        title="Rotary embedding of one pair of dimensions",
        function="rotate_pair",
        task=(
            "Rotary position embeddings (RoPE) rotate each pair of dimensions of a query or key by an angle "
            "proportional to its position. Write `rotate_pair(pair, frequency)` for one pair: `pair` (seq, 2) "
            "holds the two dimensions `(x, y)` at positions 0, 1, ..., seq - 1; the vector at position `m` is "
            "rotated counter-clockwise by the angle `m * frequency` (radians): it becomes "
            "`(x cos(a) - y sin(a), x sin(a) + y cos(a))` with `a = m * frequency`. Return (seq, 2).\n\n"
            "Why does the dot product of a rotated query and a rotated key depend only on their distance?"
        ),
        stub='''import math

import torch


def rotate_pair(pair: torch.Tensor, frequency: float) -> torch.Tensor:
    """(seq, 2) -> (seq, 2): the vector at position m rotated by the angle m * frequency."""
    # YOUR CODE HERE
    raise NotImplementedError()
''',
        reference=rotate_pair_reference,
        cases=rotate_pair_cases,
    ),
    Exercise(
        id="8.3",
        title="Repeat the key/value heads (grouped-query attention)",
        function="expand_kv_heads",
        task=(
            "In grouped-query attention, several query heads share one key/value head: with `num_heads` query "
            "heads and `kv_heads` key/value heads, each key/value head serves `n_rep = num_heads // kv_heads` "
            "consecutive query heads. Write `expand_kv_heads(x, n_rep)`: from keys or values `x` (batch, "
            "kv_heads, seq, head_dim), return (batch, kv_heads * n_rep, seq, head_dim) in which head `h` is "
            "key/value head `h // n_rep`."
        ),
        stub='''import torch


def expand_kv_heads(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(batch, kv_heads, seq, head_dim) -> (batch, kv_heads * n_rep, seq, head_dim); head h is kv head h // n_rep."""
    # YOUR CODE HERE
    raise NotImplementedError()
''',
        reference=expand_kv_heads_reference,
        cases=expand_kv_heads_cases,
    ),
    Exercise(
        id="8.4",
        title="The SwiGLU feed-forward network",
        function="swiglu_feed_forward",
        task=(
            "Llama's feed-forward network has three weight matrices and no biases. Write "
            "`swiglu_feed_forward(x, w_gate, w_up, w_down)`: with `x` (..., emb), `w_gate` and `w_up` "
            "(hidden, emb) and `w_down` (emb, hidden), compute `silu(x @ w_gate.T) * (x @ w_up.T)` elementwise, "
            "where `silu(z) = z * sigmoid(z)`, and project it back with `w_down`. Return (..., emb)."
        ),
        stub='''import torch
import torch.nn.functional as F


def swiglu_feed_forward(
    x: torch.Tensor, w_gate: torch.Tensor, w_up: torch.Tensor, w_down: torch.Tensor
) -> torch.Tensor:
    """(..., emb) -> (..., emb): (silu(x W_gate^T) * (x W_up^T)) W_down^T."""
    # YOUR CODE HERE
    raise NotImplementedError()
''',
        reference=swiglu_feed_forward_reference,
        cases=swiglu_feed_forward_cases,
    ),
)
