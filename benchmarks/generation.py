"""Chapter 4 benchmark: greedy generation speed with and without the key/value cache, against transformers.

GPT-2 small (124 M parameters, tied head, qkv bias, fp32) with identical weights on both sides; a 10-token
prompt, 200 new tokens, greedy. Compared: our `generate` with its cache (the default), our `generate` with
`use_cache=False` (re-reads the whole sequence at every step, as the book-style loop does), and transformers'
`generate` with its cache. Cached runs alternate with transformers' so that load changes affect both alike.

`--precision bf16` casts both models to bf16 first (weights and computation), for bf16 inference.

Usage: python benchmarks/generation.py [--threads 2] [--repeats 3] [--new-tokens 200] [--precision bf16]
Prints a table and writes benchmarks/results/generation.json (generation-bf16.json with --precision bf16).
Targets: cached >= 5x uncached, cached >= 1.0x transformers.
"""

from __future__ import annotations

import argparse
import torch

from common import CONFIGS, machine, median, model_pair, print_table, setup, timed, write_json
from llm_course import generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each cached variant (uncached runs once)")
    parser.add_argument("--prompt-tokens", type=int, default=10)
    parser.add_argument("--new-tokens", type=int, default=200)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    args = parser.parse_args()
    setup(args.threads)

    cfg = CONFIGS["gpt2-124m"]
    ours, hf = model_pair(cfg)
    if args.precision == "bf16":
        ours, hf = ours.to(torch.bfloat16), hf.to(torch.bfloat16)
    ours.eval(), hf.eval()
    # No early stop at GPT-2's end-of-text token: every run generates exactly --new-tokens tokens.
    hf.generation_config.eos_token_id = None
    hf.generation_config.pad_token_id = 0
    prompt = torch.randint(0, cfg.vocab_size, (1, args.prompt_tokens), generator=torch.Generator().manual_seed(2))
    outputs = {}

    def run_ours(use_cache: bool):
        outputs["ours (cached)" if use_cache else "ours (uncached)"] = generate(
            ours, prompt, args.new_tokens, use_cache=use_cache
        )

    def run_hf():
        with torch.no_grad():
            outputs["transformers"] = hf.generate(
                prompt,
                attention_mask=torch.ones_like(prompt),
                max_new_tokens=args.new_tokens,
                do_sample=False,
                use_cache=True,
            )

    run_ours(True), run_hf()  # warm-up
    times = {"ours (cached)": [], "transformers": [], "ours (uncached)": []}
    for _ in range(args.repeats):
        times["ours (cached)"].append(timed(lambda: run_ours(True)))
        times["transformers"].append(timed(run_hf))
    times["ours (uncached)"].append(timed(lambda: run_ours(False)))

    for key, out in outputs.items():
        assert out.shape == (1, args.prompt_tokens + args.new_tokens), (key, out.shape)
    same_as_uncached = torch.equal(outputs["ours (cached)"], outputs["ours (uncached)"])
    same_as_transformers = torch.equal(outputs["ours (cached)"], outputs["transformers"])
    tokens_per_s = {key: args.new_tokens / median(t) for key, t in times.items()}
    speedup = tokens_per_s["ours (cached)"] / tokens_per_s["ours (uncached)"]
    vs_hf = tokens_per_s["ours (cached)"] / tokens_per_s["transformers"]

    info = machine()
    print(
        f"greedy generation, GPT-2 124M {args.precision}, "
        f"{args.prompt_tokens}-token prompt + {args.new_tokens} new tokens, "
        f"{info['threads']} threads, load {info['load_average_1_5_15']}"
    )
    print_table(
        ["variant", "runs", "median s", "tokens/s"],
        [[key, len(t), median(t), tokens_per_s[key]] for key, t in times.items()],
    )
    print(f"cached / uncached: {speedup:.1f}x   cached / transformers: {vs_hf:.2f}x")
    print(f"same tokens: cached = uncached: {same_as_uncached}, ours = transformers: {same_as_transformers}")
    write_json(
        "generation" if args.precision == "fp32" else f"generation-{args.precision}",
        {
            "precision": args.precision,
            "benchmark": "greedy generation tokens/s, GPT-2 124M",
            "machine": info,
            "prompt_tokens": args.prompt_tokens,
            "new_tokens": args.new_tokens,
            "seconds": times,
            "tokens_per_s": tokens_per_s,
            "cached_over_uncached": speedup,
            "cached_over_transformers": vs_hf,
            "cached_equals_uncached": same_as_uncached,
            "ours_equals_transformers": same_as_transformers,
        },
    )


if __name__ == "__main__":
    main()
