"""Chapter 1: token embeddings plus learned absolute position embeddings. Chapter 8: token embeddings alone,
for models whose attention encodes positions itself (rotary embeddings)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["GPTEmbedding", "TokenEmbedding", "check_token_ids"]

CHAPTER = 1
CHAPTERS = {"TokenEmbedding": 8}  # introduced by chapter 8


def check_token_ids(token_ids: torch.Tensor, vocab_size: int, context_length: int) -> None:
    """Raise a clear error unless `token_ids` is a (batch, seq) integer tensor that fits the model."""
    if not isinstance(token_ids, torch.Tensor):
        raise ValueError(
            f"expected a (batch, seq) tensor of integer token ids, got a {type(token_ids).__name__}: "
            "convert it with torch.tensor([ids])"
        )
    if token_ids.dtype not in (torch.int64, torch.int32):
        raise ValueError(
            f"token ids must be integers (torch.long), got dtype {token_ids.dtype}: use ids.long(), or build them "
            "with torch.tensor([ids]) from a list of ints"
        )
    if token_ids.dim() != 2:
        hint = "; add a batch dimension with ids.unsqueeze(0)" if token_ids.dim() == 1 else ""
        raise ValueError(f"expected a (batch, seq) tensor of token ids, got shape {tuple(token_ids.shape)}{hint}")
    if token_ids.shape[1] > context_length:
        raise ValueError(
            f"sequence length {token_ids.shape[1]} exceeds the context length {context_length}: "
            f"keep only the last {context_length} tokens, e.g. ids[:, -{context_length}:]"
        )
    if token_ids.numel() and (token_ids.min() < 0 or token_ids.max() >= vocab_size):
        raise ValueError(
            f"token ids must lie in [0, {vocab_size}); got values from {token_ids.min().item()} to "
            f"{token_ids.max().item()}: was the text encoded with a different tokenizer?"
        )


class GPTEmbedding(nn.Module):
    """Token embedding plus position embedding: (batch, seq) ids -> (batch, seq, emb_dim) vectors."""

    def __init__(self, vocab_size: int, emb_dim: int, context_length: int):
        super().__init__()
        self.vocab_size = vocab_size
        self.context_length = context_length
        self.token_embedding = nn.Embedding(vocab_size, emb_dim)
        self.position_embedding = nn.Embedding(context_length, emb_dim)

    def forward(self, token_ids: torch.Tensor, start_pos: int = 0) -> torch.Tensor:
        """`start_pos` is the position of the first token: 0 for a whole sequence, larger when a
        generator feeds the tokens of one sequence a few at a time (chapter 4's key/value cache)."""
        check_token_ids(token_ids, self.vocab_size, self.context_length)
        end = start_pos + token_ids.shape[1]
        if start_pos < 0 or end > self.context_length:
            raise ValueError(
                f"positions {start_pos} to {end - 1} do not fit the context length {self.context_length}: "
                "start_pos must be at least 0 and start_pos + seq at most context_length"
            )
        positions = torch.arange(start_pos, start_pos + token_ids.shape[1], device=token_ids.device)
        # (batch, seq, emb) + (seq, emb): the same position vectors are added to every sequence of the batch
        return self.token_embedding(token_ids) + self.position_embedding(positions)


class TokenEmbedding(nn.Module):
    """Token embedding only: (batch, seq) ids -> (batch, seq, emb_dim) vectors. With rotary position embeddings
    (chapter 8) attention itself knows the positions, so no position vectors are added."""

    def __init__(self, vocab_size: int, emb_dim: int, context_length: int):
        super().__init__()
        self.vocab_size = vocab_size
        self.context_length = context_length
        self.token_embedding = nn.Embedding(vocab_size, emb_dim)

    def forward(self, token_ids: torch.Tensor, start_pos: int = 0) -> torch.Tensor:
        """`start_pos` as in GPTEmbedding: the position of the first token, checked against the context."""
        check_token_ids(token_ids, self.vocab_size, self.context_length)
        end = start_pos + token_ids.shape[1]
        if start_pos < 0 or end > self.context_length:
            raise ValueError(
                f"positions {start_pos} to {end - 1} do not fit the context length {self.context_length}: "
                "start_pos must be at least 0 and start_pos + seq at most context_length"
            )
        return self.token_embedding(token_ids)
