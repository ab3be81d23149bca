"""Chapter 3 benchmark: forward + backward time of each multi-head attention variant.

Variants, all causal, same shapes (GPT-2 small's attention by default: width 768, 12 heads of 64):
  wrapper   MultiHeadAttentionWrapper, 12 CausalAttention heads of width 64 (each on the fused kernel)
  explicit  MultiHeadCausalAttention(..., return_weights=True): masked softmax, (seq, seq) weights stored
  fast      MultiHeadCausalAttention default path: F.scaled_dot_product_attention

Usage: python benchmarks/attention.py [--device cuda] [--threads 2] [--repeats 20]
Prints a table and the ratio fast / explicit, and writes benchmarks/results/attention.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from llm_course import MultiHeadAttentionWrapper, MultiHeadCausalAttention, get_device

RESULTS = Path(__file__).parent / "results" / "attention.json"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def time_forward_backward(module, x: torch.Tensor, return_weights: bool, warmup: int, repeats: int) -> list[float]:
    """Seconds per forward + backward pass, one entry per repeat, after `warmup` untimed passes."""

    def step() -> None:
        module.zero_grad(set_to_none=True)
        x.grad = None
        output = module(x, return_weights=True)[0] if return_weights else module(x)
        output.square().mean().backward()

    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        synchronize(x.device)
        start = time.perf_counter()
        step()
        synchronize(x.device)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--width", type=int, default=768, help="d_in = d_out")
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (CI has 2 cores)")
    parser.add_argument("--device", default=None, help="cpu, cuda or mps; default: llm_course.get_device()")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.width % args.heads:
        parser.error(f"--width ({args.width}) must be divisible by --heads ({args.heads})")

    torch.set_num_threads(args.threads)
    device = get_device(args.device)
    torch.manual_seed(0)
    head_dim = args.width // args.heads
    wrapper = MultiHeadAttentionWrapper(args.width, head_dim, args.seq, 0.0, args.heads)
    efficient = MultiHeadCausalAttention(args.width, args.width, args.seq, 0.0, args.heads)
    variants = {
        "wrapper": (wrapper.to(device), False),
        "explicit": (efficient.to(device), True),
        "fast": (efficient, False),
    }
    x = torch.randn(args.batch, args.seq, args.width, device=device, requires_grad=True)

    print(
        f"forward + backward, batch {args.batch}, seq {args.seq}, width {args.width}, {args.heads} heads, "
        f"device {device}, {torch.get_num_threads()} threads, median of {args.repeats} after {args.warmup} warm-up"
    )
    print(f"{'variant':<10} {'median ms':>10} {'min ms':>10} {'peak MiB':>10}")
    results = {}
    for name, (module, return_weights) in variants.items():
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        times = time_forward_backward(module, x, return_weights, args.warmup, args.repeats)
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
        results[name] = {
            "median_ms": 1000 * statistics.median(times),
            "min_ms": 1000 * min(times),
            "peak_memory_mib": peak,
        }
        peak_text = f"{peak:10.0f}" if peak is not None else f"{'-':>10}"
        print(f"{name:<10} {results[name]['median_ms']:10.2f} {results[name]['min_ms']:10.2f} {peak_text}")
    ratio = results["fast"]["median_ms"] / results["explicit"]["median_ms"]
    ratio_min = results["fast"]["min_ms"] / results["explicit"]["min_ms"]
    print(f"fast / explicit time ratio: {ratio:.2f} of medians, {ratio_min:.2f} of minima (below 1: fused is faster)")

    report = {
        "benchmark": "attention forward+backward",
        "config": {k: v for k, v in vars(args).items() if k != "output"},
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "results": results,
        "fast_over_explicit": ratio,
        "fast_over_explicit_min": ratio_min,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
