"""Chapter 4 benchmark: peak memory of a GPT-2 124M training step, the course's GPTModel against transformers'.

Each model is measured in its own fresh Python process (so neither inherits the other's memory), built
with the same architecture (tied head, qkv bias, dropout 0.1, fp32), fused AdamW, batch 2 x seq 256:
- `step peak`: the resident-memory high-water mark during one training step after a first step has
  created AdamW's state (the mark is reset through /proc/self/clear_refs, Linux only);
- `process peak - imports`: getrusage's ru_maxrss over the whole run, minus the memory in use once the
  libraries were imported (transformers imports more code than the course, which is not the model's cost).

Usage: python benchmarks/memory.py [--threads 2]
Prints a table and writes benchmarks/results/memory.json. Target: ours no higher than transformers'.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

BATCH, SEQ = 2, 256


def rss_mib(field: str) -> float:
    """A memory field of /proc/self/status (VmRSS: now, VmHWM: the high-water mark), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def worker(kind: str, threads: int) -> dict:
    import torch
    import torch.nn.functional as F

    from common import CONFIGS, hf_gpt2, logits_of
    from llm_course import GPTModel

    if kind == "transformers":
        import transformers  # noqa: F401  (imported before the baseline is taken)
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    after_imports = rss_mib("VmRSS")
    cfg = CONFIGS["gpt2-124m"]
    model = (GPTModel(cfg) if kind == "ours" else hf_gpt2(cfg)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.01, fused=True)
    tokens = torch.randint(0, cfg.vocab_size, (BATCH, SEQ + 1))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(logits_of(model, tokens[:, :-1]).flatten(0, 1), tokens[:, 1:].flatten())
        loss.backward()
        optimizer.step()

    step()  # creates AdamW's state
    before_step = rss_mib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark to the current RSS
    step()
    step_peak = rss_mib("VmHWM")
    process_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {
        "after_imports_mib": after_imports,
        "before_step_mib": before_step,
        "step_peak_mib": step_peak,
        "step_increase_mib": step_peak - before_step,
        "process_peak_mib": process_peak,
        "process_peak_minus_imports_mib": process_peak - after_imports,
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", choices=["ours", "transformers"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.threads)))
        return

    from common import machine, print_table, setup, write_json

    results = {}
    for kind in ("ours", "transformers"):
        command = [sys.executable, __file__, "--worker", kind, "--threads", str(args.threads)]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        results[kind] = json.loads(out.strip().splitlines()[-1])
    setup(args.threads)
    info = machine()
    ratio = {
        key: results["ours"][key] / results["transformers"][key]
        for key in ("step_peak_mib", "process_peak_minus_imports_mib")
    }
    print(
        f"GPT-2 124M training step (AdamW, batch {BATCH} x seq {SEQ}, fp32), one process each, load {info['load_average_1_5_15']}"
    )
    print_table(
        [
            "model",
            "parameters",
            "after imports MiB",
            "step peak MiB",
            "step increase MiB",
            "process peak - imports MiB",
        ],
        [
            [
                kind,
                f"{r['parameters']:,}",
                r["after_imports_mib"],
                r["step_peak_mib"],
                r["step_increase_mib"],
                r["process_peak_minus_imports_mib"],
            ]
            for kind, r in results.items()
        ],
    )
    print(
        f"ours / transformers: step peak {ratio['step_peak_mib']:.3f}, process peak - imports {ratio['process_peak_minus_imports_mib']:.3f}"
    )
    write_json(
        "memory",
        {
            "benchmark": "peak memory of a GPT-2 124M training step",
            "machine": info,
            "batch": BATCH,
            "seq": SEQ,
            "results": results,
            "ours_over_transformers": ratio,
        },
    )


if __name__ == "__main__":
    main()
