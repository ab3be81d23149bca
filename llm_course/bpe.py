"""Chapter 1: byte-pair encoding from scratch, identical to GPT-2's, and a tokenizer of the course's own.

A byte-level BPE tokenizer is a ranked table of byte strings. It starts with the 256 single bytes, so that
every text can be encoded, and training appends one token at a time: the most frequent pair of adjacent
tokens, joined. Encoding replays that history on new text: it keeps joining the adjacent pair whose joined
bytes were learned first, until no pair is in the table. Decoding is just concatenating bytes.

Before any of that, a regular expression cuts the text into chunks (words with their leading space,
numbers, punctuation, white space), and merges never cross a chunk's border: " dog", " dog." and " dog!"
share the token " dog" instead of learning three.

`BPETokenizer.from_gpt2()` reads OpenAI's own GPT-2 tables and then gives exactly tiktoken's ids;
`course_tokenizer()` is a 4,096-token vocabulary trained on the course's corpus.
"""

from __future__ import annotations

import heapq
import importlib.resources
import json
import math
import os
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import regex  # like `re`, but knows Unicode classes such as \p{L} (any letter); tiktoken uses it too
import tiktoken

from .gpt2_bpe import FIX_HINT, gpt2_table_file
from .tokenizers import ENDOFTEXT

__all__ = [
    "GPT2_PATTERN",
    "COURSE_TOKENIZER_FILE",
    "MergeStep",
    "PairCounts",
    "BPETokenizer",
    "TokenizerFileError",
    "merge_pair",
    "gpt2_byte_alphabet",
    "course_tokenizer",
]

CHAPTER = 1

# GPT-2's pre-tokenisation pattern, as tiktoken writes it. Each alternative is one kind of chunk:
#   '(?:[sdmt]|ll|ve|re)   the ends of English contractions: 's 'd 'm 't 'll 've 're
#    ?\p{L}++              a run of letters, with the space before it (" dog")
#    ?\p{N}++              a run of digits, with the space before it
#    ?[^\s\p{L}\p{N}]++    a run of other symbols (punctuation), with the space before it
#   \s++$                  white space at the very end of the text
#   \s+(?!\S)              white space, leaving its last space to the word that follows
#   \s                     one white-space character (a newline before a word)
# `++` is possessive: once matched, the run is never given back to a later alternative.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""

COURSE_TOKENIZER_FILE = "course-bpe-4096.json"
FILE_FORMAT = "llm-course-bpe"
FILE_VERSION = 1
CACHE_SIZE = 100_000  # chunks remembered by encode: the whole corpus has 35 k distinct ones


class TokenizerFileError(ValueError):
    """A tokenizer file that cannot be read: not JSON, another format, or an inconsistent table."""


@dataclass(frozen=True)
class MergeStep:
    """One step of training: `left` and `right` occurred `count` times side by side and became `token_id`."""

    left: bytes
    right: bytes
    token_id: int
    count: int


def merge_pair(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace every occurrence of `pair` in `ids`, scanning left to right, by `new_id`.

    merge_pair([1, 1, 1, 2], (1, 1), 9) == [9, 1, 2]: an occurrence that overlaps a replaced one stays.
    """
    merged, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            merged.append(new_id)
            i += 2
        else:
            merged.append(ids[i])
            i += 1
    return merged


def _split_at_special_tokens(text: str, special_tokens: Iterable[str]) -> list[str]:
    """[text, special, text, special, ..., text]: the pieces at even positions are ordinary text."""
    special_tokens = sorted(special_tokens, key=len, reverse=True)  # the longest first, if one contains another
    if not special_tokens:
        return [text]
    return regex.split("(" + "|".join(regex.escape(token) for token in special_tokens) + ")", text)


def _valid_unicode(text: str) -> str:
    """Python strings may hold lone surrogates (half of a UTF-16 pair), which UTF-8 cannot encode.
    Like tiktoken, join the pairs and replace each lone half by U+FFFD."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


class PairCounts:
    """How often each pair of adjacent ids occurs in a set of weighted words, kept up to date as words change.

    `holders[pair]` holds (at least) the indices of the words that contain `pair`, so that a merge visits only
    those. The most frequent pair comes from a heap of (-count, pair) rather than a scan of every pair at
    every step; an entry whose count has changed since it was pushed is out of date and skipped.
    """

    def __init__(self):
        self.counts: Counter = Counter()
        self.holders: defaultdict = defaultdict(set)
        self._heap: list[tuple[int, tuple[int, int]]] = []
        self._changed: set[tuple[int, int]] = set()  # pairs whose count the heap does not know yet

    def add(self, index: int, word: list[int], weight: int, sign: int = +1) -> None:
        """Count the pairs of `word` (words[index]), each `weight` times; sign=-1 takes them away."""
        for pair in zip(word, word[1:]):
            self.counts[pair] += sign * weight
            if self.counts[pair] == 0:
                del self.counts[pair]
            elif sign > 0:
                self.holders[pair].add(index)
            self._changed.add(pair)

    def remove(self, index: int, word: list[int], weight: int) -> None:
        self.add(index, word, weight, sign=-1)

    def most_frequent(self) -> tuple[tuple[int, int], int] | None:
        """(pair, count) of the most frequent pair, the smallest ids among equals; None when no pair is left."""
        for pair in self._changed:
            if pair in self.counts:
                heapq.heappush(self._heap, (-self.counts[pair], pair))
        self._changed.clear()
        while self._heap:
            negative_count, pair = heapq.heappop(self._heap)
            if self.counts.get(pair) == -negative_count:
                return pair, -negative_count
        return None


class BPETokenizer:
    """Byte-level byte-pair encoding, usable wherever the course takes a tiktoken Encoding.

    `tokens[i]` holds the bytes of token id i; the first tokens must include the 256 single bytes, and
    every longer token must join two tokens of smaller ids. The id is the token's rank: when encoding,
    the pair whose joined bytes have the smallest id is merged first. `special_tokens` map texts such
    as "<|endoftext|>" to ids after the last token; they are never produced by merges.
    """

    def __init__(
        self,
        tokens: Sequence[bytes],
        special_tokens: Mapping[str, int] | None = None,
        pattern: str = GPT2_PATTERN,
        name: str = "bpe",
    ):
        self.tokens = [bytes(token) for token in tokens]
        self.ranks = {token: token_id for token_id, token in enumerate(self.tokens)}
        self.special_tokens = dict({ENDOFTEXT: len(self.tokens)} if special_tokens is None else special_tokens)
        self.pattern = pattern
        self.name = name
        self._check_table()
        self._chunk_pattern = regex.compile(pattern)
        self._cache: dict[str, list[int]] = {}  # chunk -> its ids: texts repeat their words
        # id -> bytes for decoding; a special token decodes to its own text, as in tiktoken
        self.vocab = dict(enumerate(self.tokens))
        self.vocab.update({token_id: text.encode("utf-8") for text, token_id in self.special_tokens.items()})
        self.training_log: list[MergeStep] = []  # filled by train(): the merges with their pair counts

    def _check_table(self) -> None:
        """Raise ValueError unless the table is one that encode can use and decode can invert."""
        if len(self.ranks) != len(self.tokens):
            duplicate = next(token for token, count in Counter(self.tokens).items() if count > 1)
            raise ValueError(f"token {duplicate!r} occurs twice in the table; every token must be unique")
        if b"" in self.ranks:
            raise ValueError("the table holds an empty token; every token must have at least one byte")
        missing = [byte for byte in range(256) if bytes([byte]) not in self.ranks]
        if missing:
            raise ValueError(f"bytes {missing[:5]} have no token: the table must include all 256 single bytes")
        for token_id, token in enumerate(self.tokens):
            if len(token) > 1 and not any(
                self.ranks.get(token[:i], math.inf) < token_id and self.ranks.get(token[i:], math.inf) < token_id
                for i in range(1, len(token))
            ):
                raise ValueError(f"token {token_id} ({token!r}) does not join two tokens of smaller ids")
        for text, token_id in self.special_tokens.items():
            if not isinstance(text, str) or not text or not isinstance(token_id, int) or token_id < len(self.tokens):
                raise ValueError(
                    f"special token {text!r} -> {token_id!r}: special tokens map non-empty texts to ids from "
                    f"{len(self.tokens)} (the number of ordinary tokens) on"
                )
        if len(set(self.special_tokens.values())) != len(self.special_tokens):
            raise ValueError(f"special tokens {self.special_tokens} share an id; give each its own")
        try:
            regex.compile(self.pattern)
        except (regex.error, TypeError) as err:
            message = f"the pre-tokenisation pattern {self.pattern!r} is not a regular expression: {err}"
            raise ValueError(message) from err

    # --- what tiktoken's Encoding offers ---------------------------------------------------------------

    @property
    def n_vocab(self) -> int:
        """Ids run from 0 to n_vocab - 1 (the size of a model's embedding and output layers)."""
        return max(self.vocab) + 1

    @property
    def eot_token(self) -> int:
        """The id of `<|endoftext|>`, which separates documents."""
        return self.special_tokens[ENDOFTEXT]

    @property
    def special_tokens_set(self) -> set[str]:
        return set(self.special_tokens)

    def __repr__(self) -> str:
        return f"BPETokenizer(name={self.name!r}, n_vocab={self.n_vocab})"

    # --- training ----------------------------------------------------------------------------------------

    @classmethod
    def train(
        cls,
        text: str,
        vocab_size: int,
        *,
        special_tokens: Sequence[str] = (ENDOFTEXT,),
        pattern: str = GPT2_PATTERN,
        name: str | None = None,
    ) -> BPETokenizer:
        """Learn a tokenizer of `vocab_size` ids (256 bytes + merges + special tokens) from `text`.

        Each step merges the most frequent pair of adjacent tokens; among equally frequent pairs, the one
        whose ids are smallest, so that training is deterministic. `training_log` records every step.
        The whole corpus (12 MB) takes 10-20 s for 4,096 ids on a laptop-class CPU.
        """
        n_merges = vocab_size - 256 - len(special_tokens)
        if n_merges < 0:
            raise ValueError(
                f"vocab_size={vocab_size} is too small: it counts the 256 bytes and the {len(special_tokens)} special "
                f"tokens, so it must be at least {256 + len(special_tokens)}"
            )
        # Count each distinct chunk once: " the" occurs 150 k times in the corpus but is merged once, with
        # its count as a weight. Special tokens are cut out first, so that no merge learns them.
        chunk_pattern = regex.compile(pattern)
        chunk_counts = Counter()
        for piece in _split_at_special_tokens(text, special_tokens)[::2]:
            chunk_counts.update(chunk_pattern.findall(piece))
        words = [list(chunk.encode("utf-8")) for chunk in chunk_counts]  # each chunk as byte ids
        weights = list(chunk_counts.values())
        pairs = PairCounts()
        for index, word in enumerate(words):
            pairs.add(index, word, weights[index])

        tokens = [bytes([byte]) for byte in range(256)]
        log = []
        for new_id in range(256, 256 + n_merges):
            best = pairs.most_frequent()
            if best is None:
                raise ValueError(
                    f"the text has no pair of tokens left to merge after {new_id - 256} merges: train on a longer "
                    f"text or ask for vocab_size={new_id + len(special_tokens)} at most"
                )
            pair, count = best
            tokens.append(tokens[pair[0]] + tokens[pair[1]])
            log.append(MergeStep(tokens[pair[0]], tokens[pair[1]], new_id, count))
            # Only the words that hold the pair change: recount their pairs, not the whole text's.
            for index in pairs.holders.pop(pair):
                pairs.remove(index, words[index], weights[index])
                words[index] = merge_pair(words[index], pair, new_id)
                pairs.add(index, words[index], weights[index])

        specials = {special: len(tokens) + i for i, special in enumerate(special_tokens)}
        tokenizer = cls(tokens, specials, pattern, name or f"bpe-{vocab_size}")
        tokenizer.training_log = log
        return tokenizer

    # --- encoding and decoding ---------------------------------------------------------------------------

    def _merge_chunk(self, chunk: bytes) -> list[int]:
        """The byte-pair merges of one chunk: start from single bytes and keep joining the adjacent pair whose
        joined bytes have the smallest id (the earliest learned), the leftmost one if several tie."""
        if chunk in self.ranks:  # tiktoken's shortcut, so our ids stay its ids: a chunk that is a token is one
            return [self.ranks[chunk]]
        parts = [chunk[i : i + 1] for i in range(len(chunk))]
        while len(parts) > 1:
            pair_ranks = [self.ranks.get(left + right, math.inf) for left, right in zip(parts, parts[1:])]
            best = min(pair_ranks)
            if best == math.inf:  # no adjacent pair is a token: done
                break
            i = pair_ranks.index(best)
            parts[i : i + 2] = [parts[i] + parts[i + 1]]
        return [self.ranks[part] for part in parts]

    def encode_ordinary(self, text: str) -> list[int]:
        """Token ids of `text`, reading special tokens such as "<|endoftext|>" as ordinary text."""
        ids = []
        for chunk in self._chunk_pattern.findall(_valid_unicode(text)):
            chunk_ids = self._cache.get(chunk)
            if chunk_ids is None:  # a dictionary look-up is much cheaper than merging the chunk again
                chunk_ids = self._merge_chunk(chunk.encode("utf-8"))
                if len(self._cache) < CACHE_SIZE:
                    self._cache[chunk] = chunk_ids
            ids.extend(chunk_ids)
        return ids

    def encode(
        self, text: str, *, allowed_special: Iterable[str] | str = (), disallowed_special: Iterable[str] | str = "all"
    ) -> list[int]:
        """Token ids of `text`, with the same arguments as tiktoken's Encoding.encode.

        A special token in `allowed_special` ("all" for every one) becomes its own id. One that is disallowed
        (by default, every special token not allowed) raises ValueError: text from users might otherwise
        smuggle in document boundaries. Pass disallowed_special=() to encode it as ordinary text.
        """
        if not isinstance(text, str):
            raise TypeError(f"encode takes a str, got {type(text).__name__}: decode bytes first (data.decode('utf-8'))")
        specials = self.special_tokens_set
        allowed = specials if allowed_special == "all" else specials & set(allowed_special)
        disallowed = specials - allowed if disallowed_special == "all" else set(disallowed_special)
        for special in sorted(disallowed):
            if special in text:
                raise ValueError(
                    f"the text contains the special token {special!r}. To encode it as its id, pass "
                    f"allowed_special={{{special!r}}} (or 'all'); to encode it as plain text, pass "
                    "disallowed_special=()"
                )
        ids = []
        for i, piece in enumerate(_split_at_special_tokens(text, allowed)):
            if i % 2:  # the odd pieces are the allowed special tokens themselves
                ids.append(self.special_tokens[piece])
            else:
                ids.extend(self.encode_ordinary(piece))
        return ids

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The bytes of a sequence of ids (also a 1-D tensor); they need not end on a whole character."""
        try:
            return b"".join(self.vocab[int(token_id)] for token_id in ids)
        except KeyError as err:
            raise ValueError(
                f"token id {err.args[0]} is not in the vocabulary of {self.name} (ids 0 to {self.n_vocab - 1}): "
                "were these ids made by another tokenizer?"
            ) from None

    def decode(self, ids: Iterable[int]) -> str:
        """The text of a sequence of ids. Bytes that are not valid UTF-8 (half a character, when the ids stop
        in the middle of one) become U+FFFD, as in tiktoken."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def decode_single_token_bytes(self, token_id: int) -> bytes:
        return self.decode_bytes([token_id])

    def to_tiktoken(self) -> tiktoken.Encoding:
        """The same tokenizer run by tiktoken's Rust code: the same ids, many times faster."""
        return tiktoken.Encoding(
            self.name, pat_str=self.pattern, mergeable_ranks=self.ranks, special_tokens=self.special_tokens
        )

    # --- GPT-2's own tables ----------------------------------------------------------------------------

    @classmethod
    def from_gpt2(cls) -> BPETokenizer:
        """GPT-2's byte-pair encoding (50,257 ids), read from OpenAI's tables; it gives exactly tiktoken's ids."""
        byte_of = {char: byte for byte, char in gpt2_byte_alphabet().items()}

        def to_bytes(word: str) -> bytes:
            return bytes(byte_of[char] for char in word)

        try:
            # vocab.bpe: a version line, then one merge per line ("Ġ t" joins " " and "t"), in the order learned.
            lines = gpt2_table_file("vocab.bpe").read_text(encoding="utf-8").splitlines()[1:]
            merges = [line.split(" ") for line in lines if line]
            tokens = [bytes([byte]) for byte in byte_of.values()]  # ids 0-255: the bytes, in the alphabet's order
            tokens += [to_bytes(left) + to_bytes(right) for left, right in merges]
            # encoder.json maps every token, written in the same alphabet, to its id: it must agree.
            encoder = json.loads(gpt2_table_file("encoder.json").read_text(encoding="utf-8"))
            special_tokens = {ENDOFTEXT: encoder.pop(ENDOFTEXT)}
            agree = {to_bytes(word): token_id for word, token_id in encoder.items()} == {
                token: token_id for token_id, token in enumerate(tokens)
            }
        except (OSError, ValueError, KeyError) as err:
            raise RuntimeError(f"GPT-2's tables could not be read ({err!r}). {FIX_HINT}") from err
        if not agree:
            raise RuntimeError(f"GPT-2's tables vocab.bpe and encoder.json disagree. {FIX_HINT}")
        return cls(tokens, special_tokens, GPT2_PATTERN, "gpt2")

    # --- saving and loading ------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> Path:
        """Write the tokenizer as JSON text, one token per line (its text, or its byte values when the bytes
        are not valid UTF-8, such as half a character). Written atomically: a crash leaves no half file."""
        path = Path(path)
        fields = {
            "format": FILE_FORMAT,
            "version": FILE_VERSION,
            "name": self.name,
            "pattern": self.pattern,
            "special_tokens": self.special_tokens,
        }
        lines = [f"  {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}," for key, value in fields.items()]
        lines.append('  "tokens": [')
        tokens = (json.dumps(_token_to_json(token), ensure_ascii=False) for token in self.tokens)
        lines.append(",\n".join("    " + token for token in tokens))
        lines.append("  ]")
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        partial.write_text("\n".join(["{", *lines, "}"]) + "\n", encoding="utf-8")
        os.replace(partial, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> BPETokenizer:
        """Read a file written by `save`; raise FileNotFoundError or TokenizerFileError, saying why, otherwise."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no tokenizer file at {path}: check the path, or write one with tokenizer.save()")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise TokenizerFileError(f"{path} is not a tokenizer file: it is not JSON text ({err})") from err
        if not isinstance(data, dict) or data.get("format") != FILE_FORMAT:
            raise TokenizerFileError(f"{path} is not a tokenizer file of llm-course: its format is not {FILE_FORMAT!r}")
        if data.get("version") != FILE_VERSION:
            raise TokenizerFileError(
                f"{path} has version {data.get('version')!r}, but this llm-course reads version {FILE_VERSION}: "
                "install the llm-course that wrote it"
            )
        missing = [key for key in ("name", "pattern", "special_tokens", "tokens") if key not in data]
        if missing:
            raise TokenizerFileError(f"{path} lacks the fields {missing}: it is damaged; save it again")
        try:
            tokens = [_token_from_json(token) for token in data["tokens"]]
            return cls(tokens, data["special_tokens"], data["pattern"], data["name"])
        except (TypeError, ValueError) as err:
            raise TokenizerFileError(f"{path} is damaged: {err}; save it again") from err


def _token_to_json(token: bytes) -> str | list[int]:
    try:
        return token.decode("utf-8")
    except UnicodeDecodeError:
        return list(token)


def _token_from_json(value: object) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, list) and all(isinstance(byte, int) and 0 <= byte < 256 for byte in value):
        return bytes(value)
    raise ValueError(f"token {value!r} is neither a text nor a list of byte values (0 to 255)")


def gpt2_byte_alphabet() -> dict[int, str]:
    """The printable character GPT-2's files write for each byte, so that `vocab.bpe` is a text file.

    Printable Latin-1 characters stand for their own byte; the 68 others (control characters, the space,
    a few more) take the characters from U+0100 on, in order: the space is written "Ġ", a newline "Ċ".
    The order of this table is also the order of GPT-2's ids 0-255.
    """
    printable = [byte for byte in range(256) if chr(byte).isprintable() and byte != ord(" ")]
    others = [byte for byte in range(256) if byte not in printable]
    alphabet = {byte: chr(byte) for byte in printable}
    alphabet.update({byte: chr(256 + n) for n, byte in enumerate(others)})
    return alphabet


def course_tokenizer() -> BPETokenizer:
    """The course's own tokenizer: 4,096 ids (256 bytes, 3,839 merges, `<|endoftext|>`) learned from the
    whole corpus, load_corpus("full"), by scripts/train_course_tokenizer.py."""
    return BPETokenizer.load(Path(str(importlib.resources.files("llm_course") / "assets" / COURSE_TOKENIZER_FILE)))
