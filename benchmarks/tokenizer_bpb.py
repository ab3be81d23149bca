"""Chapter 5 benchmark: GPT-2's tokenizer against the course's, at the same CPU time, in bits per byte.

The question `llm-course train --preset base` had to answer: with a fixed CPU budget, which vocabulary gives
the better model? GPT-2's 50,257 tokens cover the text in fewer tokens; the course's 4,096 tokens need about
20% more of them, but make the output layer (and the embedding) 12 times smaller, so a step costs less and
the budget buys more steps. Losses per token do not compare across tokenizers; bits per byte of the same
validation text do.

For each tokenizer: the preset's model shape (MODEL_SIZES["base"]: 4 blocks, width 256, context 128, tied
embeddings) with that tokenizer's vocabulary, the preset's batches (16 x 128) and schedule (warmup, cosine
decay, clipping), trained on the first 90% of the full corpus (split at a paragraph, so that both
tokenizers see the same characters) for as many steps as `--seconds` buys: a few calibration steps measure
the step time, and the schedule is laid out over the steps that fit. Then the bits per byte of both models
on the same validation text (the first --val-chars characters after the split), and a sample of each.

Usage: python benchmarks/tokenizer_bpb.py [--seconds 300] [--threads 2] [--val-chars 200000]
Prints a table and the samples, and writes benchmarks/results/tokenizer_bpb.json. Run it on an otherwise
idle machine: the steps each model gets depend on the step time measured at its start.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch
import torch.nn.functional as F

from common import machine, median, print_table, write_json
from llm_course import (
    GPTModel,
    TrainingConfig,
    bits_per_byte,
    configure_optimizer,
    create_dataloader,
    generate,
    load_corpus,
    next_token_loss,
    set_seed,
    text_to_token_ids,
    token_ids_to_text,
    train_model,
)
from llm_course.pipeline import MODEL_SIZES, PRESETS, tokenizer_named

TOKENIZERS = ("gpt2", "course-bpe-4096")
PROMPT = "Fellow-Citizens of the Senate and House of Representatives:"


def split_text(text: str, train_ratio: float = 0.9) -> tuple[str, str]:
    """(training text, validation text), cut at the first paragraph break after train_ratio of the characters."""
    cut = text.index("\n\n", int(train_ratio * len(text))) + 2
    return text[:cut], text[cut:]


def step_seconds(model: torch.nn.Module, loader, config: TrainingConfig, steps: int = 6) -> float:
    """Median seconds of a training step (forward, loss, backward, AdamW), measured on a throwaway copy."""
    optimizer = configure_optimizer(model, config)
    times = []
    for i, batch in enumerate(loader):
        if i == steps + 2:
            break
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        next_token_loss(model, batch).backward()
        optimizer.step()
        if i >= 2:  # the first steps allocate memory and warm the caches
            times.append(time.perf_counter() - start)
    return median(times)


def validation_bpb(model: torch.nn.Module, ids: list[int], tokenizer, context: int) -> float:
    """Bits per byte of the model on `ids`, in windows of `context` tokens side by side (each target once)."""
    model.eval()
    total_nats, targets = 0.0, []
    with torch.no_grad():
        for start in range(0, len(ids) - 1, context):
            window = torch.tensor(ids[start : start + context + 1])
            inputs, window_targets = window[:-1].unsqueeze(0), window[1:]
            logits = model(inputs)[0]  # (seq, vocab)
            total_nats += F.cross_entropy(logits, window_targets, reduction="sum").item()
            targets += window_targets.tolist()
    num_bytes = len(tokenizer.decode(targets).encode("utf-8"))
    return bits_per_byte(total_nats / len(targets), len(targets), num_bytes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=300.0, help="training time of each model")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--val-chars", type=int, default=200_000, help="characters of validation text scored")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    train_text, val_text = split_text(load_corpus("full"))
    val_text = val_text[: val_text.index("\n\n", args.val_chars) if len(val_text) > args.val_chars else None]
    preset = PRESETS["base"]["training"]
    config_base = TrainingConfig(**{k: v for k, v in preset.items() if k not in ("num_epochs", "max_steps")},
                                 num_epochs=100, start_context=None)
    results, rows = {}, []
    for name in TOKENIZERS:
        tokenizer = tokenizer_named(name)
        fast = tokenizer.to_tiktoken() if hasattr(tokenizer, "to_tiktoken") else tokenizer  # the same ids
        train_ids = fast.encode(train_text, allowed_special={"<|endoftext|>"})
        val_ids = fast.encode(val_text, allowed_special={"<|endoftext|>"})
        model_cfg = dataclasses.replace(MODEL_SIZES["base"][1](), vocab_size=tokenizer.n_vocab)
        loader = create_dataloader(train_ids, batch_size=config_base.batch_size, max_length=config_base.max_length,
                                   stride=config_base.max_length)
        set_seed(0)
        per_step = step_seconds(GPTModel(model_cfg), loader, config_base)
        steps = max(10, int(args.seconds / per_step))
        config = dataclasses.replace(config_base, max_steps=steps, warmup_steps=min(config_base.warmup_steps, steps // 10),
                                     eval_freq=steps, eval_iter=1)
        set_seed(config.seed)
        model = GPTModel(model_cfg)
        val_loader = create_dataloader(val_ids, batch_size=8, max_length=config.max_length,
                                       stride=config.max_length, shuffle=False, drop_last=False)
        started = time.perf_counter()
        train_model(model, loader, val_loader, configure_optimizer(model, config), config, progress=False)
        seconds = time.perf_counter() - started
        bpb = validation_bpb(model, val_ids, tokenizer, config.max_length)
        sample = token_ids_to_text(
            generate(model, text_to_token_ids(PROMPT, tokenizer), 60, temperature=0.8, top_k=40,
                     generator=torch.Generator().manual_seed(123)),
            tokenizer,
        )
        results[name] = {
            "vocab_size": tokenizer.n_vocab, "parameters": sum(p.numel() for p in model.parameters()),
            "step_s": per_step, "steps": steps, "train_s": seconds, "tokens": steps * config.batch_size * config.max_length,
            "bytes_per_token": len(train_text.encode("utf-8")) / len(train_ids), "val_bpb": bpb, "sample": sample,
        }  # fmt: skip
        r = results[name]
        rows.append([name, f"{r['vocab_size']:,}", f"{r['parameters'] / 1e6:.2f} M", r["step_s"], f"{steps:,}",
                     r["train_s"], f"{r['tokens'] * r['bytes_per_token'] / 1e6:.1f} MB", f"{bpb:.3f}"])
        print(f"{name}: {steps} steps in {seconds:.0f} s, validation {bpb:.3f} bits per byte", flush=True)

    print(f"\nsame CPU time (about {args.seconds:.0f} s each, {args.threads} threads); "
          f"validation: {len(val_text.encode('utf-8')):,} bytes after the training text\n")
    print_table(["tokenizer", "vocabulary", "parameters", "s/step", "steps", "train s", "text seen", "val bits/byte"], rows)
    for name, r in results.items():
        print(f"\n--- {name}\n{r['sample']}")
    write_json("tokenizer_bpb", {"machine": machine(), "seconds": args.seconds, "results": results})


if __name__ == "__main__":
    main()
