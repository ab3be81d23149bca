"""Chapter 1 datasets: sliding (input, target) windows over a sequence of token ids, and the dataloader."""

import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from llm_course import SPECIAL_TOKENS, GPTDataset, SimpleTokenizerV2, build_vocab, create_dataloader, gpt2_tokenizer, load_corpus


def numbers(n):
    """Token ids equal to their positions, so windows are easy to check."""
    return list(range(n))


@pytest.mark.parametrize(
    "n_tokens, max_length, stride",
    [
        (20, 4, 1),  # maximal overlap
        (20, 4, 4),  # no overlap, no gap
        (20, 4, 2),
        (20, 3, 5),  # stride > max_length: tokens between windows are skipped
        (21, 4, 4),  # the last window fits exactly: 4 * 4 + 4 + 1 = 21 tokens
        (5, 4, 3),  # exactly one window
        (9, 8, 100),
    ],
)
def test_window_count_and_target_shift(n_tokens, max_length, stride):
    dataset = GPTDataset(numbers(n_tokens), max_length, stride)
    starts = list(range(0, n_tokens - max_length, stride))  # every start whose target window still fits
    assert len(dataset) == len(starts)
    for index, start in enumerate(starts):
        inputs, targets = dataset[index]
        assert inputs.dtype == targets.dtype == torch.long
        assert inputs.tolist() == list(range(start, start + max_length))
        assert targets.tolist() == list(range(start + 1, start + max_length + 1))
    with pytest.raises(IndexError, match=f"has {len(starts)} windows"):
        dataset[len(starts)]
    assert dataset[-1][0].tolist() == dataset[len(starts) - 1][0].tolist()


def test_last_window_ends_at_the_last_token():
    dataset = GPTDataset(numbers(21), max_length=4, stride=4)
    assert len(dataset) == 5
    assert dataset[4][1].tolist() == [17, 18, 19, 20]
    # One token fewer and that window no longer fits.
    assert len(GPTDataset(numbers(20), max_length=4, stride=4)) == 4


@pytest.mark.parametrize("kind", ["list", "tensor", "numpy", "memmap"])
def test_any_sequence_of_ids_gives_the_same_windows(kind):
    ids = gpt2_tokenizer().encode(load_corpus("tiny"))
    with tempfile.TemporaryDirectory() as folder:
        if kind == "tensor":
            source = torch.tensor(ids)
        elif kind == "numpy":
            source = np.array(ids, dtype=np.uint16)
        elif kind == "memmap":  # a token file on disk: only the windows read are loaded
            path = Path(folder) / "ids.bin"
            np.array(ids, dtype="<u2").tofile(path)
            source = np.memmap(path, dtype="<u2", mode="r")
        else:
            source = ids
        dataset = GPTDataset(source, max_length=64, stride=32)
        assert len(dataset) == (len(ids) - 64 - 1) // 32 + 1
        inputs, targets = dataset[3]
        assert inputs.dtype == torch.long
        assert inputs.tolist() == ids[96:160]
        assert targets.tolist() == ids[97:161]
        del dataset, source


def test_works_with_a_word_level_tokenizer():
    text = load_corpus("tiny")
    tokenizer = SimpleTokenizerV2(build_vocab(text, SPECIAL_TOKENS))
    dataset = GPTDataset(tokenizer.encode(text), max_length=8, stride=8)
    assert len(dataset) == (len(tokenizer.encode(text)) - 9) // 8 + 1
    assert dataset[0][0].tolist() == tokenizer.encode(text)[:8]


@pytest.mark.parametrize("n_tokens, max_length", [(4, 4), (0, 1), (1, 1)])
def test_too_short_text_is_a_clear_error(n_tokens, max_length):
    with pytest.raises(ValueError, match=f"has {n_tokens} tokens.*max_length \\+ 1 = {max_length + 1}"):
        GPTDataset(numbers(n_tokens), max_length, 1)


@pytest.mark.parametrize("max_length, stride", [(0, 1), (4, 0), (-1, 2), (4, -3), (4.0, 2)])
def test_max_length_and_stride_must_be_positive_integers(max_length, stride):
    with pytest.raises(ValueError, match="must be an integer >= 1"):
        GPTDataset(numbers(50), max_length, stride)


def test_ids_must_be_one_dimensional():
    with pytest.raises(ValueError, match="1-D sequence of token ids, got shape \\(2, 10\\)"):
        GPTDataset(torch.zeros(2, 10, dtype=torch.long), 4, 4)


IDS = gpt2_tokenizer().encode(load_corpus("tiny"))


@pytest.mark.parametrize("batch_size, max_length, stride", [(8, 4, 4), (2, 16, 8), (1, 256, 128)])
def test_dataloader_batch_shapes(batch_size, max_length, stride):
    torch.manual_seed(123)
    loader = create_dataloader(IDS, batch_size=batch_size, max_length=max_length, stride=stride)
    windows = (len(IDS) - max_length - 1) // stride + 1
    batches = list(loader)
    assert len(batches) == windows // batch_size  # drop_last=True
    for inputs, targets in batches:
        assert inputs.shape == targets.shape == (batch_size, max_length)
        assert torch.equal(inputs[:, 1:], targets[:, :-1])


def test_dataloader_without_shuffling_reads_the_windows_in_order():
    loader = create_dataloader(IDS, batch_size=2, max_length=8, stride=8, shuffle=False)
    inputs, targets = next(iter(loader))
    assert inputs.tolist() == [IDS[0:8], IDS[8:16]]
    assert targets.tolist() == [IDS[1:9], IDS[9:17]]


def test_dataloader_shuffle_is_seeded():
    def first_batch():
        torch.manual_seed(123)
        return next(iter(create_dataloader(IDS, batch_size=4, max_length=8, stride=8)))[0]

    assert torch.equal(first_batch(), first_batch())
    unshuffled = next(iter(create_dataloader(IDS, batch_size=4, max_length=8, stride=8, shuffle=False)))[0]
    assert not torch.equal(first_batch(), unshuffled)


def test_dataloader_keeps_a_short_last_batch_without_drop_last():
    windows = (len(IDS) - 65) // 64 + 1
    loader = create_dataloader(IDS, batch_size=3, max_length=64, stride=64, shuffle=False, drop_last=False)
    sizes = [inputs.shape[0] for inputs, _ in loader]
    assert windows % 3  # so that the last batch is short
    assert sizes == [3] * (windows // 3) + [windows % 3]


def test_too_few_windows_for_one_batch_is_a_clear_error():
    with pytest.raises(ValueError, match=r"only 4 windows, fewer than batch_size=5.*drop_last"):
        create_dataloader(numbers(20), batch_size=5, max_length=4, stride=4)
    loader = create_dataloader(numbers(20), batch_size=5, max_length=4, stride=4, drop_last=False)
    assert [inputs.shape[0] for inputs, _ in loader] == [4]


def test_batch_size_must_be_positive():
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        create_dataloader(IDS, batch_size=0)
