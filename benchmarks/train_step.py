"""Chapter 4 benchmark: training-step throughput, the course's GPTModel against transformers' GPT-2.

One step = zero the gradients, forward, cross-entropy over every position, backward, AdamW update, for
each model with identical weights and architecture (tied head, qkv bias, dropout 0.1, fp32, sdpa), and
the fused AdamW that `llm-course train` uses.
The two models alternate step by step (who goes first alternates too), so that a change of machine load
affects both alike. Reported: tokens/s of the median step and of the best step (the best is the least
disturbed by other processes, as `timeit` recommends).

Usage: python benchmarks/train_step.py [--threads 2] [--scale 1.0]
Prints a table and writes benchmarks/results/train_step.json. Target: ours >= 1.0x transformers.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from common import CONFIGS, logits_of, machine, median, model_pair, print_table, setup, timed, write_json

# (name, config, batch, seq, timed steps per model): the course's setting and GPT-2 small at a longer sequence.
CASES = [("course", "course", 8, 32, 40), ("gpt2-124m", "gpt2-124m", 2, 256, 10)]


def make_step(model: torch.nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]):
    # fused=True: one pass over all parameters, as `llm-course train` uses on a CPU.
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.01, fused=True)
    position = 0

    def step() -> float:
        nonlocal position
        inputs, targets = batches[position % len(batches)]
        position += 1
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(logits_of(model, inputs).flatten(0, 1), targets.flatten())
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies the number of timed steps")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--cases", nargs="*", default=[case[0] for case in CASES])
    args = parser.parse_args()
    setup(args.threads)

    results, rows = {}, []
    for name, config, batch, seq, steps in CASES:
        if name not in args.cases:
            continue
        cfg = CONFIGS[config]
        ours, hf = model_pair(cfg)
        generator = torch.Generator().manual_seed(1)
        tokens = [torch.randint(0, cfg.vocab_size, (batch, seq + 1), generator=generator) for _ in range(4)]
        batches = [(t[:, :-1], t[:, 1:]) for t in tokens]
        steps_of = {"ours": make_step(ours, batches), "transformers": make_step(hf, batches)}
        for step in steps_of.values():
            for _ in range(args.warmup):
                step()
        times = {key: [] for key in steps_of}
        for i in range(max(1, round(steps * args.scale))):
            for key in sorted(steps_of, reverse=i % 2 == 1):
                times[key].append(timed(steps_of[key]))
        tokens_per_s = {key: batch * seq / median(t) for key, t in times.items()}
        best_tokens_per_s = {key: batch * seq / min(t) for key, t in times.items()}
        ratio = tokens_per_s["ours"] / tokens_per_s["transformers"]
        best_ratio = best_tokens_per_s["ours"] / best_tokens_per_s["transformers"]
        results[name] = {
            "batch": batch,
            "seq": seq,
            "steps_timed": len(times["ours"]),
            "step_s": times,
            "tokens_per_s_median": tokens_per_s,
            "tokens_per_s_best": best_tokens_per_s,
            "ours_over_transformers_median": ratio,
            "ours_over_transformers_best": best_ratio,
        }
        rows.append(
            [
                name,
                f"{batch}x{seq}",
                tokens_per_s["ours"],
                tokens_per_s["transformers"],
                f"{ratio:.2f}x",
                best_tokens_per_s["ours"],
                best_tokens_per_s["transformers"],
                f"{best_ratio:.2f}x",
            ]
        )
        del ours, hf, steps_of

    info = machine()
    print(
        f"training step (forward, backward, AdamW), fp32, {info['threads']} threads, load {info['load_average_1_5_15']}"
    )
    headers = ["model", "batch x seq", "ours tok/s", "transformers tok/s", "ours / transformers"]
    print_table(headers + ["best: ours", "best: transformers", "best: ratio"], rows)
    write_json("train_step", {"benchmark": "training step tokens/s", "machine": info, "results": results})


if __name__ == "__main__":
    main()
