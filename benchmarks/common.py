"""Shared parts of the chapter 4 benchmarks: the course's GPTModel against transformers' GPT2LMHeadModel.

Both models get the same architecture (GPT-2: tied output head, bias in the query/key/value projections,
the same dropout) and the very same weights, so any difference in speed or memory is the implementation's.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import torch

from llm_course import GPTConfig, GPTModel, from_hf_gpt2, reuse_freed_memory

RESULTS_DIR = Path(__file__).parent / "results"

# The course's model with GPT-2's choices (tied head, qkv bias), and GPT-2 small (124 M parameters).
CONFIGS = {
    "course": GPTConfig(qkv_bias=True, tie_weights=True),
    "gpt2-124m": GPTConfig.gpt2_small(tie_weights=True),
}


def setup(threads: int, seed: int = 0, reuse_memory: bool = True) -> None:
    torch.set_num_threads(threads)
    if reuse_memory:
        reuse_freed_memory()  # as train_model does; for both models alike
    torch.manual_seed(seed)
    import transformers

    transformers.logging.set_verbosity_error()


def hf_gpt2(cfg: GPTConfig):
    """A randomly initialised transformers GPT2LMHeadModel (sdpa attention) with `cfg`'s architecture."""
    import transformers

    hf_cfg = transformers.GPT2Config(
        vocab_size=cfg.vocab_size,
        n_positions=cfg.context_length,
        n_embd=cfg.emb_dim,
        n_layer=cfg.n_layers,
        n_head=cfg.n_heads,
        resid_pdrop=cfg.drop_rate,
        embd_pdrop=cfg.drop_rate,
        attn_pdrop=cfg.drop_rate,
        tie_word_embeddings=cfg.tie_weights,
        attn_implementation="sdpa",
    )
    return transformers.GPT2LMHeadModel(hf_cfg)


def model_pair(cfg: GPTConfig) -> tuple[GPTModel, torch.nn.Module]:
    """(ours, transformers') with identical weights, both in training mode."""
    if not cfg.qkv_bias:
        raise ValueError("GPT-2 has query/key/value biases: benchmark a config with qkv_bias=True")
    hf = hf_gpt2(cfg)
    ours = from_hf_gpt2(hf.state_dict(), cfg)
    return ours.train(), hf.train()


def logits_of(model: torch.nn.Module, token_ids: torch.Tensor) -> torch.Tensor:
    out = model(token_ids)
    return out if isinstance(out, torch.Tensor) else out.logits


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median(values: list[float]) -> float:
    return statistics.median(values)


def machine() -> dict:
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }


def print_table(headers: list[str], rows: list[list]) -> None:
    cells = [[str(h) for h in headers]] + [
        [f"{c:,.2f}" if isinstance(c, float) else str(c) for c in row] for row in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for j, row in enumerate(cells):
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if j == 0:
            print("  ".join("-" * w for w in widths))


def write_json(name: str, report: dict) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")
    return path
