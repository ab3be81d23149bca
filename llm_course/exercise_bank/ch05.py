"""Chapter 5 exercises: the learning-rate schedule, a key/value cache, gradient accumulation and clipping.

The references are the package's `lr_at_step` and `KVCache` and, for the gradients, torch itself (a full
batch's backward pass, `torch.nn.utils.clip_grad_norm_`), so the checks stand alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import Exercise, ExerciseCase, KVCache, lr_at_step
from .inputs import randint, randn


def warmup_cosine_lr_cases() -> list[ExerciseCase]:
    settings = (100, 1e-3, 10, 1e-5)  # total_steps, peak_lr, warmup_steps, min_lr
    return [
        ExerciseCase("the first warmup step", (0, *settings)),
        ExerciseCase("the last warmup step: the peak", (9, *settings)),
        ExerciseCase("the first step after the warmup", (10, *settings)),
        ExerciseCase("halfway through the decay", (55, *settings)),
        ExerciseCase("the last step", (99, *settings)),
        ExerciseCase("past the end: min_lr", (150, *settings)),
        ExerciseCase("no warmup: step 0 is at the peak", (0, 50, 3e-4, 0, 0.0)),
        ExerciseCase("no warmup, a quarter of the way", (10, 40, 3e-4, 0, 0.0)),
    ]


def append_to_cache_reference(
    cache_keys: torch.Tensor, cache_values: torch.Tensor, new_keys: torch.Tensor, new_values: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    cache = KVCache(max_length=cache_keys.shape[2] + new_keys.shape[2])
    if cache_keys.shape[2]:
        cache.append(cache_keys, cache_values)
    keys, values = cache.append(new_keys, new_values)
    return keys.clone(), values.clone()


def append_to_cache_cases() -> list[ExerciseCase]:
    def case(label: str, seed: int, batch: int, heads: int, cached: int, new: int, head_dim: int) -> ExerciseCase:
        cache = (randn(seed, batch, heads, cached, head_dim), randn(seed + 1, batch, heads, cached, head_dim))
        new_positions = (randn(seed + 2, batch, heads, new, head_dim), randn(seed + 3, batch, heads, new, head_dim))
        return ExerciseCase(label, (*cache, *new_positions))

    return [
        case("3 cached positions, 1 new", 1, 1, 2, 3, 1, 2),
        case("an empty cache and a 4-token prompt", 5, 1, 2, 0, 4, 2),
        case("a batch of 2 with 3 heads, 2 new positions", 9, 2, 3, 2, 2, 4),
        case("heads of width 1", 13, 1, 1, 5, 1, 1),
    ]


def _linear_model() -> nn.Linear:
    torch.manual_seed(0)  # the cases are built with the caller's RNG state saved and restored
    return nn.Linear(4, 3)


def accumulate_gradients_run(function, args: tuple) -> dict[str, torch.Tensor | None]:
    """Call `function(model, micro_batches)` and return the gradients it left in the model."""
    model, micro_batches = args
    function(model, micro_batches)
    return {f"the gradient of {name}": parameter.grad for name, parameter in model.named_parameters()}


def accumulate_gradients_reference(model: nn.Module, micro_batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    # What one large batch gives: the gradient of the mean loss over all examples at once.
    inputs = torch.cat([x for x, _ in micro_batches])
    targets = torch.cat([y for _, y in micro_batches])
    F.cross_entropy(model(inputs), targets).backward()


def accumulate_gradients_cases() -> list[ExerciseCase]:
    def case(label: str, sizes: tuple[int, ...]) -> ExerciseCase:
        batches = [(randn(10 + i, size, 4), randint(20 + i, 3, size)) for i, size in enumerate(sizes)]
        described = ", ".join(f"({size} example{'s' if size > 1 else ''})" for size in sizes)
        shown = f"model=nn.Linear(4, 3), micro_batches=[{described}]"
        return ExerciseCase(label, (_linear_model(), batches), shown)

    return [
        case("one micro-batch: no accumulation", (4,)),
        case("two micro-batches of 2", (2, 2)),
        case("four micro-batches of 1", (1, 1, 1, 1)),
        case("micro-batches of different sizes", (3, 1)),
    ]


def clip_gradients_reference(grads: list[torch.Tensor], max_norm: float) -> list[torch.Tensor]:
    parameters = [nn.Parameter(torch.zeros_like(grad)) for grad in grads]
    for parameter, grad in zip(parameters, grads):
        parameter.grad = grad.clone()
    torch.nn.utils.clip_grad_norm_(parameters, max_norm)
    return [parameter.grad for parameter in parameters]


def clip_gradients_cases() -> list[ExerciseCase]:
    return [
        ExerciseCase("one gradient of norm 5, max_norm 1", ([torch.tensor([3.0, 4.0])], 1.0)),
        ExerciseCase("a norm below max_norm: unchanged", ([torch.tensor([0.3, -0.4]), torch.tensor([[0.1]])], 1.0)),
        ExerciseCase("several gradients share one total norm", ([randn(1, 3, 2), randn(2, 4), randn(3, 2, 2)], 0.5)),
        ExerciseCase("all gradients zero", ([torch.zeros(2, 2), torch.zeros(3)], 1.0)),
    ]


EXERCISES = (
    Exercise(
        id="5.1",
        title="Warmup and cosine decay",
        function="warmup_cosine_lr",
        task=(
            "Write `warmup_cosine_lr(step, total_steps, peak_lr, warmup_steps, min_lr)`: the learning rate of "
            "optimizer step `step` (counted from 0).\n\n"
            "- Warmup: step `s < warmup_steps` uses `peak_lr * (s + 1) / warmup_steps`, so the last warmup "
            "step reaches the peak.\n"
            "- Then half a cosine from `peak_lr` down to `min_lr`: with `progress = (step - warmup_steps) / "
            "(total_steps - warmup_steps)`, the rate is `min_lr + (peak_lr - min_lr) * (1 + cos(pi * progress)) "
            "/ 2`.\n"
            "- From `total_steps` on, `min_lr`.\n\n"
            "Return a Python float."
        ),
        stub='''import math


def warmup_cosine_lr(step: int, total_steps: int, peak_lr: float, warmup_steps: int, min_lr: float) -> float:
    """The learning rate of step `step` (0-based) under linear warmup, then cosine decay to min_lr."""
    # YOUR CODE HERE
    raise NotImplementedError()
''',
        reference=lr_at_step,
        cases=warmup_cosine_lr_cases,
        rtol=1e-6,
        atol=1e-12,
    ),
    Exercise(
        id="5.2",
        title="Append to a key/value cache",
        function="append_to_cache",
        task=(
            "A key/value cache keeps the keys and values of the positions a model has already read, each "
            "(batch, num_heads, length, head_dim). Write `append_to_cache(cache_keys, cache_values, new_keys, "
            "new_values)`, which puts the new positions' keys and values (batch, num_heads, new, head_dim) after "
            "the cached ones. Return `(keys, values)`, each (batch, num_heads, length + new, "
            "head_dim). An empty cache has length 0."
        ),
        stub='''import torch


def append_to_cache(
    cache_keys: torch.Tensor, cache_values: torch.Tensor, new_keys: torch.Tensor, new_values: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(batch, heads, length, head_dim) + (batch, heads, new, head_dim) -> (batch, heads, length + new, head_dim)."""
    # YOUR CODE HERE
    raise NotImplementedError()
''',
        reference=append_to_cache_reference,
        cases=append_to_cache_cases,
        returns=("keys", "values"),
    ),
    Exercise(
        id="5.3",
        title="Gradient accumulation",
        function="accumulate_gradients",
        task=(
            "When a batch does not fit in memory, it is split into micro-batches whose gradients add up in "
            "each parameter's `.grad`. Write `accumulate_gradients(model, micro_batches)`: for each "
            "`(inputs, targets)` pair, compute `F.cross_entropy(model(inputs), targets)` and call `backward()` on "
            "it, scaled so that in the end every parameter's `.grad` equals the gradient of the **mean loss over "
            "all examples of all micro-batches**, exactly what one big batch would give.\n\n"
            "The gradients start empty (`None`); do not call an optimizer. Micro-batches may differ in size."
        ),
        stub='''import torch
import torch.nn.functional as F
from torch import nn


def accumulate_gradients(model: nn.Module, micro_batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Leave in each parameter's .grad the gradient of the mean cross-entropy over all micro-batches' examples."""
    # YOUR CODE HERE
    raise NotImplementedError()
''',
        reference=accumulate_gradients_reference,
        cases=accumulate_gradients_cases,
        run=accumulate_gradients_run,
        atol=1e-6,
    ),
    Exercise(
        id="5.4",
        title="Gradient clipping by the total norm",
        function="clip_gradients",
        task=(
            "Write `clip_gradients(grads, max_norm)`, what `torch.nn.utils.clip_grad_norm_` does: the total "
            "norm of a list of gradient tensors is the square root of the sum of the squares of **all** their "
            "elements. If it exceeds `max_norm`, return every gradient multiplied by `max_norm / total_norm`; "
            "otherwise return them unchanged. Return a new list of tensors with the same shapes."
        ),
        stub='''import torch


def clip_gradients(grads: list[torch.Tensor], max_norm: float) -> list[torch.Tensor]:
    """The gradients scaled down together so that their total norm is at most max_norm."""
    # YOUR CODE HERE
    raise NotImplementedError()
''',
        reference=clip_gradients_reference,
        cases=clip_gradients_cases,
    ),
)
