"""Shared by the trainer tests: a character tokenizer and a tiny model configuration, so that a model
trains in milliseconds on a slice of the corpus."""

from llm_course import GPTConfig, load_corpus


class CharTokenizer:
    """One token per character (ASCII), so that test models can have a 128-token vocabulary."""

    def encode(self, text):
        return [min(ord(char), 127) for char in text]

    def decode(self, ids):
        return "".join(chr(i) for i in ids)


TOKENIZER = CharTokenizer()
TINY_CFG = GPTConfig(vocab_size=128, context_length=16, emb_dim=16, n_heads=2, n_layers=1)
TINY_TEXT = load_corpus("tiny")[:300]  # 270 training characters: 8 batches of 4 windows of 8 tokens
