"""Chapter 1 benchmark: the course's byte-pair encoding (pure Python) against tiktoken's (Rust), on the corpus.

Measured on the whole corpus, load_corpus("full") (12.2 MB, 2.39 M GPT-2 tokens):
- training the course tokenizer (BPETokenizer.train, 4,096 ids), and with --sizes, other vocabulary sizes;
- encoding throughput of BPETokenizer.from_gpt2() against tiktoken's gpt2 Encoding, and of the course
  tokenizer against the same table run by tiktoken (BPETokenizer.to_tiktoken()). BPETokenizer is timed twice:
  with an empty chunk cache ("cold", every distinct chunk merged once) and again with it filled ("warm");
- that the ids are identical, and how many tokens each vocabulary needs for the corpus.

Why tiktoken is faster: both cut the text with the same regular expression, then merge each chunk. tiktoken
does both in compiled Rust; BPETokenizer runs the regex in C (the `regex` package) but everything else in
Python: one dictionary look-up per cached chunk and list operations per merge. The chunk cache is what keeps
it within a small factor: the corpus has 2.3 M chunks but only 35 k distinct ones, so a warm cache skips
almost every merge and what remains is the regex and the look-ups. tiktoken needs no cache (its merge loop is
cheap) and encodes in several threads with encode_batch, which this benchmark does not use.

Usage: python benchmarks/tokenizer.py [--sizes 1024 2048 4096 8192] [--repeats 1]
Prints tables and writes benchmarks/results/tokenizer.json.
"""

from __future__ import annotations

import argparse
import time

from common import machine, median, print_table, write_json
from llm_course import BPETokenizer, course_tokenizer, encode_text, gpt2_tokenizer, load_corpus


def seconds(fn, repeats: int) -> tuple[float, object]:
    """(median seconds over `repeats` calls, the last result)."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="*", default=[4096], help="vocabulary sizes to train")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs of each encoding (median)")
    args = parser.parse_args()

    text = load_corpus("full")
    megabytes = len(text.encode("utf-8")) / 1e6
    gpt2_ids = gpt2_tokenizer().encode(text, allowed_special={"<|endoftext|>"})

    training = []
    for size in args.sizes:
        elapsed, trained = seconds(lambda: BPETokenizer.train(text, size), 1)
        tokens = len(trained.to_tiktoken().encode(text))
        used = len(set(trained.to_tiktoken().encode(text))) / trained.n_vocab
        training.append(
            {"vocab_size": size, "train_s": elapsed, "tokens": tokens, "bytes_per_token": megabytes * 1e6 / tokens,
             "vocab_used": used}
        )
    training.append({"vocab_size": 50257, "train_s": None, "tokens": len(gpt2_ids),
                     "bytes_per_token": megabytes * 1e6 / len(gpt2_ids), "vocab_used": len(set(gpt2_ids)) / 50257})

    encoding, same_ids = [], {}
    for label, make_ours in (("gpt2", BPETokenizer.from_gpt2), ("course-bpe-4096", course_tokenizer)):
        ours = make_ours()
        reference = ours.to_tiktoken() if label != "gpt2" else gpt2_tokenizer()
        cold, ids_cold = seconds(lambda: encode_text(ours, text), 1)  # a fresh tokenizer: empty cache
        warm, ids_warm = seconds(lambda: encode_text(ours, text), args.repeats)
        fast, ids_reference = seconds(lambda: encode_text(reference, text), max(args.repeats, 3))
        same_ids[label] = ids_cold == ids_reference and ids_warm == ids_reference
        for variant, elapsed in (("BPETokenizer, cold cache", cold), ("BPETokenizer, warm cache", warm),
                                 ("tiktoken", fast)):
            encoding.append({"vocabulary": label, "encoder": variant, "s": elapsed, "MB_per_s": megabytes / elapsed,
                             "tokens_per_s": len(ids_reference) / elapsed})
        encoding[-3]["x_tiktoken"] = cold / fast
        encoding[-2]["x_tiktoken"] = warm / fast

    print(f"corpus: {megabytes:.1f} MB, {len(gpt2_ids):,} GPT-2 tokens\n")
    print_table(
        ["vocabulary", "train s", "tokens", "bytes/token", "ids used"],
        [[row["vocab_size"], "-" if row["train_s"] is None else row["train_s"], f"{row['tokens']:,}",
          row["bytes_per_token"], f"{row['vocab_used']:.0%}"] for row in training],
    )
    print()
    print_table(
        ["vocabulary", "encoder", "s", "MB/s", "k tokens/s", "time / tiktoken's"],
        [[row["vocabulary"], row["encoder"], row["s"], row["MB_per_s"], row["tokens_per_s"] / 1e3,
          row.get("x_tiktoken", 1.0)] for row in encoding],
    )
    print(f"\nids identical to tiktoken's on the whole corpus: {same_ids}")
    write_json("tokenizer", {"machine": machine(), "corpus_mb": megabytes, "training": training,
                             "encoding": encoding, "same_ids_as_tiktoken": same_ids})
    if not all(same_ids.values()):
        raise SystemExit("BPETokenizer's ids differ from tiktoken's")


if __name__ == "__main__":
    main()
