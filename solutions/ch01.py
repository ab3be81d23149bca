"""Solutions to the chapter 1 exercises."""

import torch

from llm_course import ENDOFTEXT, UNKNOWN, split_words


def encode_documents(documents: list[str], vocab: dict[str, int]) -> list[int]:
    """The token ids of all documents, with the id of <|endoftext|> between consecutive ones."""
    ids = []
    for index, document in enumerate(documents):
        if index > 0:
            ids.append(vocab[ENDOFTEXT])
        ids.extend(vocab.get(word, vocab[UNKNOWN]) for word in split_words(document))
    return ids


def sliding_windows(token_ids: list[int], max_length: int, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets), each (number_of_windows, max_length) int64; targets are inputs shifted by one."""
    # A window starting at `start` needs tokens start .. start + max_length (its last target).
    starts = range(0, len(token_ids) - max_length, stride)
    inputs = [token_ids[start : start + max_length] for start in starts]
    targets = [token_ids[start + 1 : start + max_length + 1] for start in starts]
    return torch.tensor(inputs, dtype=torch.long), torch.tensor(targets, dtype=torch.long)


def embed_tokens(token_ids: torch.Tensor, token_table: torch.Tensor, position_table: torch.Tensor) -> torch.Tensor:
    """(batch, seq) ids, (vocab, emb) and (context_length, emb) tables -> (batch, seq, emb) vectors."""
    seq = token_ids.shape[1]
    # (batch, seq, emb) + (seq, emb): every sequence of the batch gets the same position vectors.
    return token_table[token_ids] + position_table[:seq]
