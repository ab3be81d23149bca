"""Chapter 1: turning a sequence of token ids into (input, target) windows for next-token prediction.

The ids may be a Python list, a tensor or a NumPy array, including a memory-mapped token file on disk
(chapter 5's larger corpora): a window reads only its own ids, so memory does not grow with the corpus.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .utils import check_int

__all__ = ["GPTDataset", "create_dataloader"]

CHAPTER = 1


class GPTDataset(Dataset):
    """Sliding windows over a 1-D sequence of token ids.

    Item i is `(input_ids, target_ids)`, two LongTensors of shape (max_length,): the window starts at
    token i * stride, and the targets are the inputs shifted by one position (each target is the token
    that follows its input).
    """

    def __init__(self, token_ids: Sequence[int] | torch.Tensor | np.ndarray, max_length: int, stride: int):
        check_int("max_length", max_length)
        check_int("stride", stride)
        if not isinstance(token_ids, np.ndarray):  # a NumPy array may be a file on disk: leave it there
            token_ids = torch.as_tensor(token_ids, dtype=torch.long)
        if token_ids.ndim != 1:
            raise ValueError(f"expected a 1-D sequence of token ids, got shape {tuple(token_ids.shape)}")
        if len(token_ids) < max_length + 1:
            raise ValueError(
                f"the text has {len(token_ids)} tokens, but one window needs max_length + 1 = {max_length + 1}: "
                "use a longer text or a smaller max_length"
            )
        self.token_ids = token_ids
        self.max_length = max_length
        self.stride = stride

    def __len__(self) -> int:
        # Windows start at 0, stride, 2*stride, ... while start + max_length + 1 <= number of tokens.
        return (len(self.token_ids) - self.max_length - 1) // self.stride + 1

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"window {index} does not exist; the dataset has {len(self)} windows")
        start = (index % len(self)) * self.stride
        window = self.token_ids[start : start + self.max_length + 1]  # max_length + 1 ids
        if isinstance(window, np.ndarray):  # read from disk: copy just this window into a tensor
            window = torch.from_numpy(window.astype(np.int64))
        return window[:-1], window[1:]


def create_dataloader(
    token_ids: Sequence[int] | torch.Tensor | np.ndarray,
    batch_size: int = 4,
    max_length: int = 256,
    stride: int = 128,
    shuffle: bool = True,
    drop_last: bool = True,
    num_workers: int = 0,
) -> DataLoader:
    """A DataLoader of (inputs, targets) batches of GPTDataset windows, each of shape (batch_size, max_length).

    Shuffling draws from torch's global generator, so `torch.manual_seed` makes the order reproducible.
    """
    check_int("batch_size", batch_size)
    dataset = GPTDataset(token_ids, max_length, stride)
    if drop_last and len(dataset) < batch_size:
        raise ValueError(
            f"the text gives only {len(dataset)} windows, fewer than batch_size={batch_size}, so drop_last=True "
            "would leave no batch: use a smaller batch_size, a smaller stride or more text"
        )
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, num_workers=num_workers)
