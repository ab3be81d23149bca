"""Regenerate the course tokenizer, llm_course/assets/course-bpe-4096.json, from the whole corpus.

4,096 ids: the 256 bytes, 3,839 merges and <|endoftext|>. Training is deterministic (among equally frequent
pairs, the one with the smallest ids merges first), so running this again writes the same file byte for byte.

Usage: python scripts/train_course_tokenizer.py [--check]
--check trains and compares with the shipped file instead of writing it (exit code 1 when they differ).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from llm_course import BPETokenizer, load_corpus
from llm_course.bpe import COURSE_TOKENIZER_FILE

VOCAB_SIZE = 4096
NAME = "course-bpe-4096"
TARGET = Path(__file__).resolve().parent.parent / "llm_course" / "assets" / COURSE_TOKENIZER_FILE


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare with the shipped file instead of writing it")
    args = parser.parse_args()

    text = load_corpus("full")
    start = time.perf_counter()
    tokenizer = BPETokenizer.train(text, VOCAB_SIZE, name=NAME)
    print(f"trained {tokenizer} on {len(text.encode('utf-8')) / 1e6:.1f} MB in {time.perf_counter() - start:.1f} s")
    if not args.check:
        print(f"wrote {tokenizer.save(TARGET)}")
        return 0
    with tempfile.TemporaryDirectory() as folder:
        fresh = tokenizer.save(Path(folder) / COURSE_TOKENIZER_FILE).read_bytes()
    if fresh != TARGET.read_bytes():
        print(f"{TARGET} differs from a fresh training: run this script without --check to regenerate it")
        return 1
    print(f"{TARGET} is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
