"""Chapter 1: word-level tokenizers built from a text's own vocabulary."""

from __future__ import annotations

import re

__all__ = ["ENDOFTEXT", "UNKNOWN", "SPECIAL_TOKENS", "split_words", "join_words", "build_vocab", "UnknownWordError", "SimpleTokenizerV1", "SimpleTokenizerV2", "encode_text"]

CHAPTER = 1

ENDOFTEXT = "<|endoftext|>"
UNKNOWN = "<|unk|>"
SPECIAL_TOKENS = (ENDOFTEXT, UNKNOWN)

# A special token such as <|endoftext|>, a double dash, a word (letters, digits, underscores),
# or any other single non-space character (punctuation).
TOKEN_PATTERN = re.compile(r"<\|\w+\|>|--|\w+|[^\w\s]")


def split_words(text: str) -> list[str]:
    """Split text into words, punctuation marks and special tokens; white space is dropped."""
    return TOKEN_PATTERN.findall(text)


def join_words(words: list[str]) -> str:
    """Join tokens with spaces, then remove the space before punctuation that follows a word."""
    text = " ".join(words)
    text = re.sub(r" ([,.:;?!)\]])", r"\1", text)
    return re.sub(r"([(\[]) ", r"\1", text)


def build_vocab(text: str, special_tokens: tuple[str, ...] = ()) -> dict[str, int]:
    """Map every distinct token of `text`, in sorted order, to an id; `special_tokens` get the last ids."""
    words = sorted(set(split_words(text)) - set(special_tokens))
    return {token: token_id for token_id, token in enumerate([*words, *special_tokens])}


class UnknownWordError(KeyError):
    """A word outside a tokenizer's vocabulary. A KeyError, but its message prints without quotes."""

    def __str__(self) -> str:
        return str(self.args[0])


class SimpleTokenizerV1:
    """Encode text with a fixed vocabulary; a word outside the vocabulary is an error."""

    def __init__(self, vocab: dict[str, int]):
        self.str_to_int = dict(vocab)
        self.int_to_str = {token_id: token for token, token_id in vocab.items()}

    def encode(self, text: str) -> list[int]:
        ids = []
        for word in split_words(text):
            if word not in self.str_to_int:
                raise UnknownWordError(
                    f"{word!r} is not in the vocabulary. Build the vocabulary from a text that contains it, "
                    f"or use SimpleTokenizerV2, which maps unknown words to {UNKNOWN}."
                )
            ids.append(self.str_to_int[word])
        return ids

    def decode(self, ids: list[int]) -> str:
        ids = [int(token_id) for token_id in ids]  # also accepts a 1-D tensor of ids
        unknown = [token_id for token_id in ids if token_id not in self.int_to_str]
        if unknown:
            raise ValueError(f"token ids {unknown[:5]} are outside the vocabulary of {len(self.int_to_str)} tokens")
        return join_words([self.int_to_str[token_id] for token_id in ids])


class SimpleTokenizerV2(SimpleTokenizerV1):
    """Like V1, but words outside the vocabulary become `<|unk|>`; the vocabulary must contain it."""

    def __init__(self, vocab: dict[str, int]):
        if UNKNOWN not in vocab:
            raise ValueError(f"SimpleTokenizerV2 needs {UNKNOWN} in the vocabulary: build_vocab(text, SPECIAL_TOKENS)")
        super().__init__(vocab)

    def encode(self, text: str) -> list[int]:
        unknown_id = self.str_to_int[UNKNOWN]
        return [self.str_to_int.get(word, unknown_id) for word in split_words(text)]


def encode_text(tokenizer, text: str) -> list[int]:
    """Token ids of `text` for any of the course's tokenizers or a tiktoken Encoding.

    Byte-pair encodings (tiktoken's Encoding, BPETokenizer) treat special tokens apart and refuse them unless
    allowed: the course's own texts may hold `<|endoftext|>`, so it is allowed here.
    """
    if ENDOFTEXT in getattr(tokenizer, "special_tokens_set", ()):
        return tokenizer.encode(text, allowed_special={ENDOFTEXT})
    return tokenizer.encode(text)
