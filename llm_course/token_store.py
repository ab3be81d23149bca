"""Chapter 5: larger corpora as a token file on disk, tokenized once and read back window by window.

A list of token ids in memory is fine for a few thousand tokens. The
full corpus has about 2.4 million, and a Python list of them takes around 100 MB (a tensor of int64, 20 MB).
Here the text is tokenized once, a chunk at a time, into a file of 2-byte token ids (GPT-2's ids are all
below 65,536, so uint16 is enough). The file is memory-mapped: a window reads only its own few bytes, and
the operating system keeps the pages that are in use in its cache. The file is reused by later runs, and
rebuilt when its text or tokenizer changed. `TokenFile.tokens()` is a NumPy array that `GPTDataset` (and so
`create_train_val_loaders`) takes like any other sequence of ids.

File layout: a HEADER_BYTES-long header (a magic line, then JSON with the tokenizer's name, the number of
tokens, the SHA-256 of the source text and the SHA-256 of the ids, padded with spaces), then the ids as
little-endian uint16. The ids' hash lets a cache tell a damaged file (a bad disk block, a stray write) from
a good one before reusing it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from .data import CORPUS_SIZES, DEFAULT_CACHE_DIR, load_corpus
from .gpt2_bpe import gpt2_tokenizer
from .tokenizers import encode_text

__all__ = [
    "TokenFile",
    "TokenFileError",
    "cached_token_file",
    "corpus_token_file",
    "read_token_file",
    "text_sha256",
    "write_token_file",
]

CHAPTER = 5

MAGIC = b"llm-course token file\n"
HEADER_BYTES = 1024  # the ids start here; even, so every id is 2-byte aligned
TOKEN_DTYPE = np.dtype("<u2")  # uint16, little-endian on every machine
MAX_TOKEN_IDS = 65536  # uint16 holds the ids 0 ... 65,535
FORMAT_VERSION = 2  # 2: the header records the SHA-256 of the ids

# A chunk may end just before a space or newline that follows a non-space character: GPT-2's pre-tokenizer
# never joins such a pair into one piece (a space only ever starts a piece or belongs to a run of spaces),
# so tokenizing the chunks one by one gives exactly the ids of the whole text.
_CHUNK_END = re.compile(r"(?<=\S)[ \n]")


class TokenFileError(ValueError):
    """A token file that is missing, truncated, corrupt or of another format."""


@dataclass(frozen=True)
class TokenFile:
    """A token file on disk: where it is, how many token ids it holds, and what made them."""

    path: Path
    num_tokens: int
    tokenizer: str  # the tokenizer's name, e.g. "gpt2"
    source_sha256: str  # SHA-256 of the UTF-8 text the ids came from
    ids_sha256: str  # SHA-256 of the ids as stored (little-endian uint16)

    def tokens(self) -> np.ndarray:
        """The token ids as a read-only (num_tokens,) uint16 array, memory-mapped from the file."""
        if self.num_tokens == 0:
            return np.empty(0, dtype=TOKEN_DTYPE)  # mmap cannot map zero bytes
        return np.memmap(self.path, dtype=TOKEN_DTYPE, mode="r", offset=HEADER_BYTES, shape=(self.num_tokens,))


def _text_chunks(text: str, chunk_chars: int) -> Iterator[str]:
    """Consecutive pieces of `text` of about `chunk_chars` characters, cut where tokenization allows."""
    start = 0
    while start < len(text):
        cut = _CHUNK_END.search(text, start + chunk_chars) if start + chunk_chars < len(text) else None
        end = cut.start() if cut else len(text)
        yield text[start:end]
        start = end


def _tokenizer_name(tokenizer, tokenizer_name: str | None) -> str:
    if tokenizer_name is not None:
        return tokenizer_name
    if isinstance(getattr(tokenizer, "name", None), str):  # tiktoken's Encoding and the course's BPETokenizer
        return tokenizer.name
    raise ValueError("pass tokenizer_name: this tokenizer has no name of its own, and the file must record it")


def _check_vocab_size(tokenizer) -> None:
    size = getattr(tokenizer, "n_vocab", None)  # tiktoken's Encoding and BPETokenizer
    if size is None:
        size = len(getattr(tokenizer, "str_to_int", ()))  # the word tokenizers; others are checked id by id
    if size > MAX_TOKEN_IDS:
        raise ValueError(
            f"the tokenizer has {size:,} tokens, but a token file stores ids as uint16, which only holds ids "
            f"below {MAX_TOKEN_IDS:,}: use a tokenizer with a smaller vocabulary, or keep the ids in memory"
            " (GPTDataset takes a list)"
        )


def _header(token_file: TokenFile) -> bytes:
    info = {
        "format": FORMAT_VERSION,
        "dtype": "uint16",
        "tokenizer": token_file.tokenizer,
        "num_tokens": token_file.num_tokens,
        "source_sha256": token_file.source_sha256,
        "ids_sha256": token_file.ids_sha256,
    }
    header = MAGIC + json.dumps(info).encode()
    if len(header) > HEADER_BYTES - 1:
        raise ValueError(f"the tokenizer name {token_file.tokenizer!r} is too long for the file header")
    return header.ljust(HEADER_BYTES - 1) + b"\n"


def text_sha256(text: str) -> str:
    """The SHA-256 of `text` in UTF-8, as hex: the fingerprint a token file records of its source."""
    digest = hashlib.sha256()
    for start in range(0, len(text), 1 << 20):  # a megabyte at a time: no second copy of a long text
        digest.update(text[start : start + (1 << 20)].encode("utf-8"))
    return digest.hexdigest()


def write_token_file(
    path: str | os.PathLike,
    text: str,
    tokenizer=None,
    *,
    tokenizer_name: str | None = None,
    chunk_chars: int = 1 << 20,
) -> TokenFile:
    """Tokenize `text` (GPT-2's BPE when `tokenizer` is None) into a token file at `path` and describe it.

    The text is tokenized `chunk_chars` characters at a time, so memory stays small whatever its length.
    The file appears only when complete (written to a temporary file, then renamed over `path`): a crash or
    Ctrl-C leaves the previous file, if any, untouched. `tokenizer_name` is needed for tokenizers other than
    tiktoken's, whose ids must all be below 65,536.
    """
    if isinstance(chunk_chars, bool) or not isinstance(chunk_chars, int) or chunk_chars < 1:
        raise ValueError(f"chunk_chars must be an integer >= 1, got {chunk_chars!r}")
    tokenizer = gpt2_tokenizer() if tokenizer is None else tokenizer
    name = _tokenizer_name(tokenizer, tokenizer_name)
    _check_vocab_size(tokenizer)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")  # one per process: parallel writers never clash
    num_tokens, ids_digest = 0, hashlib.sha256()
    try:
        with open(partial, "wb") as f:
            f.write(b"\0" * HEADER_BYTES)  # the real header follows once the token count is known
            for chunk in _text_chunks(text, chunk_chars):
                ids = np.asarray(encode_text(tokenizer, chunk), dtype=np.int64)
                if ids.size and (ids.min() < 0 or ids.max() >= MAX_TOKEN_IDS):
                    raise ValueError(
                        f"the tokenizer produced the id {int(ids.max())}, outside the uint16 range 0 ... "
                        f"{MAX_TOKEN_IDS - 1:,} of a token file: keep the ids in memory (GPTDataset takes a list)"
                    )
                stored = ids.astype(TOKEN_DTYPE).tobytes()
                f.write(stored)
                ids_digest.update(stored)
                num_tokens += ids.size
            token_file = TokenFile(path, num_tokens, name, text_sha256(text), ids_digest.hexdigest())
            f.seek(0)
            f.write(_header(token_file))
            f.flush()
            os.fsync(f.fileno())  # on disk before it takes the real name
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return token_file


def read_token_file(path: str | os.PathLike, verify_ids: bool = False) -> TokenFile:
    """Check the token file at `path` (its header, a size that matches it and, with `verify_ids`, the
    SHA-256 of its ids) and describe it.

    Raises TokenFileError, which says what is wrong, for a missing, truncated or corrupt file.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            header = f.read(HEADER_BYTES)
        size = path.stat().st_size
    except FileNotFoundError:
        raise TokenFileError(f"no token file at {path}: write it with write_token_file") from None
    if not header.startswith(MAGIC):
        raise TokenFileError(f"{path} is not a token file (or is an unfinished one): delete it and write it again")
    try:
        info = json.loads(header[len(MAGIC) :])
        token_file = TokenFile(
            path, int(info["num_tokens"]), str(info["tokenizer"]), str(info["source_sha256"]), str(info["ids_sha256"])
        )
        good_format = info["format"] == FORMAT_VERSION and info["dtype"] == "uint16"
    except (ValueError, KeyError, TypeError):
        raise TokenFileError(f"the header of {path} is corrupt: delete the file and write it again") from None
    if not good_format:
        raise TokenFileError(f"{path} has another format ({info['format']}, {info['dtype']}): write it again")
    expected = HEADER_BYTES + token_file.num_tokens * TOKEN_DTYPE.itemsize
    if size != expected:
        raise TokenFileError(
            f"{path} has {size:,} bytes, but its header promises {expected:,} ({token_file.num_tokens:,} tokens): "
            "it is truncated or corrupt; delete it and write it again"
        )
    if verify_ids and _ids_sha256(path) != token_file.ids_sha256:
        raise TokenFileError(f"the token ids in {path} were damaged (their SHA-256 differs from the header's): "
                             "delete it and write it again")  # fmt: skip
    return token_file


def _ids_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(HEADER_BYTES)
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cached_token_file(
    text: str,
    name: str,
    tokenizer=None,
    *,
    tokenizer_name: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> TokenFile:
    """The token file of `text` in the cache, written on first use and rewritten when stale.

    The file is `<cache_dir>/<name>.<tokenizer name>.tokens`; it is reused only when its header records the
    same tokenizer and the SHA-256 of this very text, and its size and the SHA-256 of its ids match. `cache_dir` defaults to
    $LLM_COURSE_CACHE, else ~/.cache/llm_course.
    """
    tokenizer = gpt2_tokenizer() if tokenizer is None else tokenizer
    tok_name = _tokenizer_name(tokenizer, tokenizer_name)
    cache_dir = Path(cache_dir or os.environ.get("LLM_COURSE_CACHE") or DEFAULT_CACHE_DIR)
    path = cache_dir / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.{re.sub(r'[^A-Za-z0-9_.-]', '_', tok_name)}.tokens"
    try:
        cached = read_token_file(path, verify_ids=True)
    except TokenFileError:
        cached = None  # missing or damaged: write it (again)
    if cached is not None and cached.tokenizer == tok_name and cached.source_sha256 == text_sha256(text):
        return cached
    return write_token_file(path, text, tokenizer, tokenizer_name=tok_name)


def corpus_token_file(size: str = "full", cache_dir: str | os.PathLike | None = None) -> TokenFile:
    """The cached GPT-2 token file of the bundled corpus at a named size (see CORPUS_SIZES)."""
    if size not in CORPUS_SIZES:
        raise ValueError(f"unknown corpus size {size!r}; choose one of {', '.join(CORPUS_SIZES)}")
    return cached_token_file(load_corpus(size), f"sotu-{size}", cache_dir=cache_dir)
