"""Chapter 1 benchmark: the course's byte-pair encoding (pure Python) against tiktoken's (Rust), on the corpus.

Measured on the whole corpus, load_corpus("full") (12.2 MB, 2.39 M GPT-2 tokens), in CPU seconds:
- training BPETokenizer.train with --sizes ids (the course tokenizer has 4,096), and how many tokens each
  vocabulary, and GPT-2's, needs for the corpus and which share of its ids occur at all;
- encoding with BPETokenizer.from_gpt2() against tiktoken's gpt2 Encoding, and with the course tokenizer
  against the same table run by tiktoken (BPETokenizer.to_tiktoken()). BPETokenizer is timed three ways:
  without its chunk cache ("no cache"), with an empty cache ("cold": each distinct chunk merged once), and
  again with the cache filled ("warm");
- that the ids are identical to tiktoken's.

Why tiktoken is faster, and why not by much: both cut the text with the same regular expression, then merge
each chunk. tiktoken does both in compiled Rust. BPETokenizer runs the regular expression in C (the `regex`
package), which is most of its time once the cache is warm, and everything else in Python: merging one
chunk takes tens of microseconds of list operations, about a hundred times Rust's. Two shortcuts avoid most merges: a chunk
that is itself a token is looked up whole (tiktoken does this too; most of the corpus's chunks are whole
GPT-2 tokens), and the cache remembers every chunk's ids, so that the 2.3 M chunks of the corpus cost only
35 k merges. Without the cache, the course tokenizer, whose 4,096 tokens cover fewer words whole, is
several times slower. tiktoken also encodes in several threads with encode_batch, not used here.

Usage: python benchmarks/tokenizer.py [--sizes 1024 2048 4096 8192] [--repeats 3]
Prints tables and writes benchmarks/results/tokenizer.json. Check: the ids are identical (exit code 1 if not).
"""

from __future__ import annotations

import argparse
import time

import regex

import llm_course.bpe

from common import machine, median, print_table, write_json
from llm_course import GPT2_PATTERN, BPETokenizer, course_tokenizer, encode_text, gpt2_tokenizer, load_corpus


def seconds(fn, repeats: int) -> tuple[float, object]:
    """(median CPU seconds of this process over `repeats` calls, the last result).

    Everything timed here runs in one thread (tiktoken's encode too; only its encode_batch uses threads), so
    CPU time measures the work itself, also on a machine that other jobs keep busy, where wall time would not.
    """
    times, result = [], None
    for _ in range(repeats):
        start = time.process_time()
        result = fn()
        times.append(time.process_time() - start)
    return median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="*", default=[4096], help="vocabulary sizes to train")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs of each warm encoding (median)")
    args = parser.parse_args()

    text = load_corpus("full")
    n_bytes = len(text.encode("utf-8"))
    gpt2_ids = gpt2_tokenizer().encode(text, allowed_special={"<|endoftext|>"})

    def vocabulary_row(size: int, train_s: float | None, ids: list[int]) -> dict:
        return {"vocab_size": size, "train_s": train_s, "tokens": len(ids), "bytes_per_token": n_bytes / len(ids),
                "ids_used": len(set(ids)) / size}

    training = []
    for size in args.sizes:
        train_s, trained = seconds(lambda: BPETokenizer.train(text, size), 1)
        training.append(vocabulary_row(size, train_s, encode_text(trained.to_tiktoken(), text)))
    training.append(vocabulary_row(50257, None, gpt2_ids))

    split_s, _ = seconds(lambda: regex.findall(GPT2_PATTERN, text), 3)  # the regex alone, as every encode runs it
    encoding, same_ids, cache_size = [], {}, llm_course.bpe.CACHE_SIZE
    for label, ours, reference in (
        ("gpt2", BPETokenizer.from_gpt2(), gpt2_tokenizer()),
        ("course-bpe-4096", course_tokenizer(), course_tokenizer().to_tiktoken()),
    ):
        llm_course.bpe.CACHE_SIZE = 0  # encode looks it up at every chunk: nothing is remembered
        uncached_s, uncached_ids = seconds(lambda: encode_text(ours, text), 1)
        llm_course.bpe.CACHE_SIZE = cache_size
        cold_s, cold_ids = seconds(lambda: encode_text(ours, text), 1)  # the cache starts empty
        warm_s, warm_ids = seconds(lambda: encode_text(ours, text), args.repeats)
        tiktoken_s, reference_ids = seconds(lambda: encode_text(reference, text), max(args.repeats, 3))
        same_ids[label] = uncached_ids == cold_ids == warm_ids == reference_ids
        for encoder, elapsed in (
            ("BPETokenizer, no cache", uncached_s),
            ("BPETokenizer, cold cache", cold_s),
            ("BPETokenizer, warm cache", warm_s),
            ("tiktoken", tiktoken_s),
        ):
            encoding.append({"vocabulary": label, "encoder": encoder, "s": elapsed, "MB_per_s": n_bytes / 1e6 / elapsed,
                             "tokens_per_s": len(reference_ids) / elapsed, "x_tiktoken": elapsed / tiktoken_s})

    print(f"corpus: {n_bytes / 1e6:.1f} MB, {len(gpt2_ids):,} GPT-2 tokens\n")
    print_table(
        ["vocabulary", "train CPU s", "tokens", "bytes/token", "ids used"],
        [[row["vocab_size"], "-" if row["train_s"] is None else row["train_s"], f"{row['tokens']:,}",
          row["bytes_per_token"], f"{row['ids_used']:.0%}"] for row in training],
    )
    print()
    print_table(
        ["vocabulary", "encoder", "CPU s", "MB/s", "k tokens/s", "time / tiktoken's"],
        [[row["vocabulary"], row["encoder"], row["s"], row["MB_per_s"], row["tokens_per_s"] / 1e3, row["x_tiktoken"]]
         for row in encoding],
    )
    print(f"\npre-tokenisation alone (regex.findall with GPT-2's pattern): {split_s:.2f} CPU s")
    print(f"ids identical to tiktoken's on the whole corpus: {same_ids}")
    write_json("tokenizer", {"machine": machine(), "corpus_bytes": n_bytes, "training": training,
                             "pretokenisation_s": split_s, "encoding": encoding, "same_ids_as_tiktoken": same_ids})
    if not all(same_ids.values()):
        raise SystemExit("BPETokenizer's ids differ from tiktoken's")


if __name__ == "__main__":
    main()
