"""Chapter 1: turning a text into (input, target) windows for next-token prediction."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from .gpt2_bpe import gpt2_tokenizer
from .tokenizers import encode_text

__all__ = ["GPTDatasetV1", "create_dataloader"]

CHAPTER = 1


class GPTDatasetV1(Dataset):
    """Sliding windows over a tokenized text.

    Item i is `(input_ids, target_ids)`, two LongTensors of shape (max_length,), where the window starts
    at token i * stride and the targets are the inputs shifted one token to the right.
    """

    def __init__(self, text: str, tokenizer, max_length: int, stride: int):
        if max_length < 1 or stride < 1:
            raise ValueError(f"max_length and stride must be at least 1 (got max_length={max_length}, stride={stride})")
        token_ids = encode_text(tokenizer, text)
        if len(token_ids) < max_length + 1:
            raise ValueError(
                f"the text has {len(token_ids)} tokens, but one window needs max_length + 1 = {max_length + 1}: "
                "use a longer text or a smaller max_length"
            )
        self.token_ids = torch.tensor(token_ids, dtype=torch.long)
        self.max_length = max_length
        self.stride = stride

    def __len__(self) -> int:
        # Windows start at 0, stride, 2*stride, ... while start + max_length + 1 <= number of tokens.
        return (len(self.token_ids) - self.max_length - 1) // self.stride + 1

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"window {index} does not exist; the dataset has {len(self)} windows")
        start = (index % len(self)) * self.stride
        window = self.token_ids[start : start + self.max_length + 1]
        return window[:-1], window[1:]


def create_dataloader(
    text: str,
    batch_size: int = 4,
    max_length: int = 256,
    stride: int = 128,
    shuffle: bool = True,
    drop_last: bool = True,
    num_workers: int = 0,
    tokenizer=None,
) -> DataLoader:
    """A DataLoader of (inputs, targets) batches, each of shape (batch_size, max_length).

    Uses GPT-2's BPE tokenizer when `tokenizer` is None. Shuffling draws from torch's global generator,
    so `torch.manual_seed` makes the order reproducible.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1 (got {batch_size})")
    if tokenizer is None:
        tokenizer = gpt2_tokenizer()
    dataset = GPTDatasetV1(text, tokenizer, max_length, stride)
    if drop_last and len(dataset) < batch_size:
        raise ValueError(
            f"the text gives only {len(dataset)} windows, fewer than batch_size={batch_size}, so drop_last=True "
            "would leave no batch: use a smaller batch_size, a smaller stride or more text"
        )
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, num_workers=num_workers)
