"""Chapter 5 benchmark: what gradient checkpointing saves in a GPT-2 124M training step, and what it costs.

The same model (GPT-2 small, tied head, dropout 0.1, fp32) takes AdamW steps on batch x seq 256 tokens,
once as usual and once with `model.gradient_checkpointing = True`, each in its own fresh Python process
so that neither inherits the other's memory. A first step creates AdamW's state; then the resident-memory
high-water mark is reset (through /proc/self/clear_refs, Linux only) and the measured step runs:
- `step peak`: the high-water mark during that step (weights, gradients, AdamW state and activations);
- `activations`: the step peak minus the memory in use just before it;
- `process peak`: getrusage's ru_maxrss over the whole run.
Checkpointing keeps only each block's input for the backward pass and recomputes the rest there, so the
activation memory should drop and the step should take about a third longer.

Usage: python benchmarks/grad_checkpointing.py [--threads 2] [--batch 2] [--seq 256]
Prints a table and writes benchmarks/results/grad_checkpointing.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path


def rss_mib(field: str) -> float:
    """A memory field of /proc/self/status (VmRSS: now, VmHWM: the high-water mark), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def worker(checkpointing: bool, threads: int, batch: int, seq: int) -> dict:
    import torch

    from common import CONFIGS
    from llm_course import GPTModel, next_token_loss

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = GPTModel(CONFIGS["gpt2-124m"]).train()
    model.gradient_checkpointing = checkpointing
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.01)
    tokens = torch.randint(0, model.cfg.vocab_size, (batch, seq + 1))

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = next_token_loss(model, (tokens[:, :-1], tokens[:, 1:]))
        loss.backward()
        optimizer.step()
        return loss.item()

    step()  # creates AdamW's state
    before_step = rss_mib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark to the current RSS
    started = time.perf_counter()
    loss = step()
    seconds = time.perf_counter() - started
    step_peak = rss_mib("VmHWM")
    return {
        "gradient_checkpointing": checkpointing,
        "parameters": sum(p.numel() for p in model.parameters()),
        "before_step_mib": before_step,
        "step_peak_mib": step_peak,
        "activations_mib": step_peak - before_step,
        "process_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KiB on Linux
        "step_s": seconds,
        "loss": loss,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--worker", choices=["plain", "checkpointing"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker == "checkpointing", args.threads, args.batch, args.seq)))
        return

    from common import machine, print_table, setup, write_json

    results = {}
    for mode in ("plain", "checkpointing"):
        command = [sys.executable, __file__, "--worker", mode]
        command += ["--threads", str(args.threads), "--batch", str(args.batch), "--seq", str(args.seq)]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        results[mode] = json.loads(out.strip().splitlines()[-1])
    setup(args.threads)
    info = machine()
    plain, ckpt = results["plain"], results["checkpointing"]
    print(
        f"GPT-2 124M training step (AdamW, batch {args.batch} x seq {args.seq}, fp32), one process each, "
        f"{info['threads']} threads, load {info['load_average_1_5_15']}"
    )
    print_table(
        ["mode", "step peak MiB", "activations MiB", "process peak MiB", "step s", "loss"],
        [
            [mode, r["step_peak_mib"], r["activations_mib"], r["process_peak_mib"], r["step_s"], r["loss"]]
            for mode, r in results.items()
        ],
    )
    saved = plain["step_peak_mib"] - ckpt["step_peak_mib"]
    print(
        f"gradient checkpointing: step peak {saved:,.0f} MiB lower ({saved / plain['step_peak_mib']:.1%}), "
        f"activations x{ckpt['activations_mib'] / plain['activations_mib']:.2f}, "
        f"step time x{ckpt['step_s'] / plain['step_s']:.2f}"
    )
    write_json(
        "grad_checkpointing",
        {
            "benchmark": "gradient checkpointing: peak memory and time of a GPT-2 124M training step",
            "machine": info,
            "batch": args.batch,
            "seq": args.seq,
            "results": results,
            "step_peak_saved_mib": saved,
        },
    )


if __name__ == "__main__":
    main()
