"""Chapter 8 benchmark: training-step throughput, the course's Llama-style GPTModel against transformers'
LlamaForCausalLM with the same configuration and the very same weights.

One step = zero the gradients, forward, cross-entropy over every position, backward, fused AdamW update
(as in benchmarks/train_step.py), fp32, sdpa attention, no dropout (Llama has none). The two models
alternate step by step, and who goes first alternates too, so that a change of machine load affects both
alike. Reported per case: tokens/s of each model's median step, and the median over the pairs of steps of
the ratio of their times (each pair ran back to back, so it is the figure least disturbed by the load).

Usage: python benchmarks/llama_train_step.py [--threads 2] [--scale 1.0] [--device cpu]
Prints a table and writes benchmarks/results/llama_train_step.json. Target: ours >= 1.0x transformers.
"""

from __future__ import annotations

import argparse
import dataclasses

import torch

from common import machine, median, print_table, setup, timed, write_json
from llm_course import GPTConfig, GPTModel, from_hf_llama
from train_step import make_step

# (name, config, batch, seq, timed steps per model): the chapter's preset, and a Llama of GPT-2 small's size
# (12 blocks of width 768, 12 heads sharing 4 key/value heads) at a longer sequence.
CASES = [
    ("course-llama", GPTConfig.llama_style(drop_rate=0.0), 8, 32, 40),
    ("llama-124m", dataclasses.replace(GPTConfig.gpt2_small(drop_rate=0.0).to_llama(), n_kv_heads=4), 2, 256, 10),
]


def hf_llama(cfg: GPTConfig):
    """A randomly initialised transformers LlamaForCausalLM (sdpa attention) with `cfg`'s architecture."""
    import transformers

    hf_cfg = transformers.LlamaConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.emb_dim,
        intermediate_size=cfg.ff_dim,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_kv_heads,
        max_position_embeddings=cfg.context_length,
        rope_theta=cfg.rope_theta,
        rms_norm_eps=cfg.norm_eps,
        tie_word_embeddings=cfg.tie_weights,
        attention_bias=cfg.bias,
        mlp_bias=cfg.bias,
        attention_dropout=cfg.drop_rate,
        attn_implementation="sdpa",
    )
    return transformers.LlamaForCausalLM(hf_cfg)


def llama_pair(cfg: GPTConfig, device: torch.device) -> tuple[GPTModel, torch.nn.Module]:
    """(ours, transformers') with identical weights, both in training mode on `device`."""
    hf = hf_llama(cfg)
    ours = from_hf_llama(hf, cfg)
    return ours.to(device).train(), hf.to(device).train()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies the number of timed steps")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cases", nargs="*", default=[case[0] for case in CASES])
    args = parser.parse_args()
    setup(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    results, rows = {}, []
    for name, cfg, batch, seq, steps in CASES:
        if name not in args.cases:
            continue
        ours, hf = llama_pair(cfg, device)
        generator = torch.Generator().manual_seed(1)
        tokens = [torch.randint(0, cfg.vocab_size, (batch, seq + 1), generator=generator).to(device) for _ in range(4)]
        batches = [(t[:, :-1], t[:, 1:]) for t in tokens]
        steps_of = {"ours": make_step(ours, batches), "transformers": make_step(hf, batches)}
        first_losses = {key: step() for key, step in steps_of.items()}  # same weights, same batch: same loss
        for step in steps_of.values():
            for _ in range(args.warmup):
                step()
        times = {key: [] for key in steps_of}
        for i in range(max(1, round(steps * args.scale))):
            for key in sorted(steps_of, reverse=i % 2 == 1):
                sync()
                times[key].append(timed(lambda: (steps_of[key](), sync())))
        tokens_per_s = {key: batch * seq / median(t) for key, t in times.items()}
        paired = median([theirs / mine for mine, theirs in zip(times["ours"], times["transformers"])])
        results[name] = {
            "config": dataclasses.asdict(cfg),
            "parameters": sum(p.numel() for p in ours.parameters()),
            "batch": batch,
            "seq": seq,
            "device": str(device),
            "first_step_loss": first_losses,
            "steps_timed": len(times["ours"]),
            "step_s": times,
            "tokens_per_s_median": tokens_per_s,
            "ours_over_transformers_median_tokens_per_s": tokens_per_s["ours"] / tokens_per_s["transformers"],
            "ours_over_transformers_paired_median": paired,
        }
        rows.append([name, f"{batch}x{seq}", tokens_per_s["ours"], tokens_per_s["transformers"],
                     f"{tokens_per_s['ours'] / tokens_per_s['transformers']:.2f}x", f"{paired:.2f}x",
                     f"{first_losses['ours']:.4f} / {first_losses['transformers']:.4f}"])  # fmt: skip
        del ours, hf, steps_of

    info = machine()
    print(f"Llama training step (forward, backward, AdamW), fp32, {device}, {info['threads']} threads, "
          f"load {info['load_average_1_5_15']}")  # fmt: skip
    headers = ["model", "batch x seq", "ours tok/s", "transformers tok/s", "ratio of medians", "paired median",
               "first loss (ours / theirs)"]  # fmt: skip
    print_table(headers, rows)
    write_json("llama_train_step", {"benchmark": "Llama training step tokens/s", "machine": info, "results": results})


if __name__ == "__main__":
    main()
