"""Chapter 5 benchmark: bf16 autocast training against fp32, at the course's configuration.

Two copies of the same model (tied head, qkv bias, dropout 0.1) train side by side for 50 AdamW steps on
the same batches of the default corpus (batch 8, seq 64): one in fp32, one under
`torch.autocast(device, dtype=torch.bfloat16)`, which runs the matrix products in bf16 and keeps the
weights, gradients and optimizer state in fp32. Both use the fused AdamW that `llm-course train` uses.
Both steps see the same dropout masks (the random state is replayed), so only the precision differs.
Afterwards both models are evaluated in fp32 on the same validation batches. Reported: the median step
and the best step (the least disturbed by other processes).

Like the `llm-course` command and the notebooks, the benchmark lets each step reuse the memory the previous one freed
(`llm_course.reuse_freed_memory`); `--malloc-defaults` measures without it.

Usage: python benchmarks/bf16.py [--threads 2] [--steps 50] [--malloc-defaults]
Prints a table and writes benchmarks/results/bf16.json (bf16-malloc-defaults.json with --malloc-defaults).
Targets: bf16 at least 1.5x fp32 steps/s; validation loss within 2% of fp32 after 50 steps.
"""

from __future__ import annotations

import argparse
import copy
from contextlib import nullcontext

import torch

from common import CONFIGS, machine, median, print_table, setup, timed, write_json
from llm_course import GPTModel, TrainingConfig, create_train_val_loaders, gpt2_tokenizer, load_corpus, next_token_loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=3, help="steps left out of the timing")
    parser.add_argument("--eval-batches", type=int, default=10)
    parser.add_argument(
        "--malloc-defaults",
        action="store_true",
        help="leave malloc's defaults instead of reuse_freed_memory(), which llm-course applies (shows its effect)",
    )
    args = parser.parse_args()
    setup(args.threads, reuse_memory=not args.malloc_defaults)

    course = TrainingConfig()
    train_loader, val_loader = create_train_val_loaders(
        gpt2_tokenizer().encode(load_corpus("small")),
        batch_size=course.batch_size,
        max_length=course.max_length,
        stride=course.stride,
    )
    batches = []
    while len(batches) < args.steps:
        batches += list(train_loader)
    batches = batches[: args.steps]

    fp32_model = GPTModel(CONFIGS["course"]).train()
    models = {"fp32": fp32_model, "bf16": copy.deepcopy(fp32_model)}
    optimizers = {
        key: torch.optim.AdamW(m.parameters(), lr=course.lr, weight_decay=course.weight_decay, fused=True)
        for key, m in models.items()
    }
    contexts = {"fp32": nullcontext, "bf16": lambda: torch.autocast("cpu", dtype=torch.bfloat16)}
    times = {key: [] for key in models}
    losses = {key: [] for key in models}

    def step(key: str, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        optimizers[key].zero_grad(set_to_none=True)
        with contexts[key]():
            loss = next_token_loss(models[key], (inputs, targets))
        loss.backward()
        optimizers[key].step()
        losses[key].append(loss.item())

    for i, (inputs, targets) in enumerate(batches):
        rng = torch.get_rng_state()
        for key in models:
            torch.set_rng_state(rng)  # the same dropout masks for both
            seconds = timed(lambda: step(key, inputs, targets))
            if i >= args.warmup:
                times[key].append(seconds)

    val_batches = list(val_loader)[: args.eval_batches]
    val_loss = {}
    with torch.no_grad():
        for key, model in models.items():
            model.eval()
            val_loss[key] = sum(calc_loss_batch(x, y, model, "cpu").item() for x, y in val_batches) / len(val_batches)
    steps_per_s = {key: 1 / median(t) for key, t in times.items()}
    speedup = steps_per_s["bf16"] / steps_per_s["fp32"]
    best_speedup = min(times["fp32"]) / min(times["bf16"])
    loss_diff = abs(val_loss["bf16"] - val_loss["fp32"]) / val_loss["fp32"]
    last = {key: sum(v[-10:]) / len(v[-10:]) for key, v in losses.items()}

    info = machine()
    tokens = course.batch_size * course.max_length
    print(
        f"course model (tied, qkv bias), batch {course.batch_size} x seq {course.max_length}, {args.steps} AdamW steps, "
        f"{info['threads']} threads, load {info['load_average_1_5_15']}, "
        + ("malloc defaults" if args.malloc_defaults else "freed memory reused")
    )
    print_table(
        ["precision", "median step ms", "tokens/s", "train loss (last 10)", f"val loss ({len(val_batches)} batches)"],
        [[key, 1000 * median(times[key]), tokens * steps_per_s[key], last[key], val_loss[key]] for key in models],
    )
    print(
        f"bf16 / fp32 speed: {speedup:.2f}x (median step), {best_speedup:.2f}x (best step)   "
        f"validation loss difference: {100 * loss_diff:.3f}%"
    )
    write_json(
        "bf16-malloc-defaults" if args.malloc_defaults else "bf16",
        {
            "benchmark": "bf16 autocast vs fp32 training, course config",
            "machine": info,
            "freed_memory_reused": not args.malloc_defaults,
            "batch": course.batch_size,
            "seq": course.max_length,
            "steps": args.steps,
            "median_step_s": {key: median(t) for key, t in times.items()},
            "tokens_per_s": {key: tokens * s for key, s in steps_per_s.items()},
            "best_step_s": {key: min(t) for key, t in times.items()},
            "bf16_over_fp32": speedup,
            "bf16_over_fp32_best_step": best_speedup,
            "train_loss_last10": last,
            "val_loss": val_loss,
            "val_loss_relative_difference": loss_diff,
            "train_losses": losses,
        },
    )


if __name__ == "__main__":
    main()
