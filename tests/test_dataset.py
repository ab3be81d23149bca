"""Chapter 1 datasets: sliding (input, target) windows over a tokenized text, and the dataloader."""

import pytest
import torch

from llm_course import SPECIAL_TOKENS, GPTDatasetV1, SimpleTokenizerV2, build_vocab, create_dataloader, gpt2_tokenizer, load_corpus


class CountingTokenizer:
    """Encodes "t0 t1 t2 ..." as [0, 1, 2, ...], so token ids equal positions and windows are easy to check."""

    def encode(self, text):
        return [int(word[1:]) for word in text.split()]


def numbers(n):
    return " ".join(f"t{i}" for i in range(n))


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
    dataset = GPTDatasetV1(numbers(n_tokens), CountingTokenizer(), max_length, stride)
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
    dataset = GPTDatasetV1(numbers(21), CountingTokenizer(), max_length=4, stride=4)
    assert len(dataset) == 5
    assert dataset[4][1].tolist() == [17, 18, 19, 20]
    # One token fewer and that window no longer fits.
    assert len(GPTDatasetV1(numbers(20), CountingTokenizer(), max_length=4, stride=4)) == 4


def test_gpt2_windows_match_the_encoded_text():
    text = load_corpus("tiny")
    ids = gpt2_tokenizer().encode(text)
    dataset = GPTDatasetV1(text, gpt2_tokenizer(), max_length=64, stride=32)
    assert len(dataset) == (len(ids) - 64 - 1) // 32 + 1
    inputs, targets = dataset[3]
    assert inputs.tolist() == ids[96:160]
    assert targets.tolist() == ids[97:161]


def test_works_with_a_word_level_tokenizer():
    text = load_corpus("tiny")
    tokenizer = SimpleTokenizerV2(build_vocab(text, SPECIAL_TOKENS))
    dataset = GPTDatasetV1(text, tokenizer, max_length=8, stride=8)
    assert len(dataset) == (len(tokenizer.encode(text)) - 9) // 8 + 1
    assert dataset[0][0].tolist() == tokenizer.encode(text)[:8]


@pytest.mark.parametrize("n_tokens, max_length", [(4, 4), (0, 1), (1, 1)])
def test_too_short_text_is_a_clear_error(n_tokens, max_length):
    with pytest.raises(ValueError, match=f"has {n_tokens} tokens.*max_length \\+ 1 = {max_length + 1}"):
        GPTDatasetV1(numbers(n_tokens), CountingTokenizer(), max_length, 1)


@pytest.mark.parametrize("max_length, stride", [(0, 1), (4, 0), (-1, 2), (4, -3)])
def test_max_length_and_stride_must_be_positive(max_length, stride):
    with pytest.raises(ValueError, match="at least 1"):
        GPTDatasetV1(numbers(50), CountingTokenizer(), max_length, stride)


TEXT = load_corpus("tiny")


@pytest.mark.parametrize("batch_size, max_length, stride", [(8, 4, 4), (2, 16, 8), (1, 256, 128)])
def test_dataloader_batch_shapes(batch_size, max_length, stride):
    torch.manual_seed(123)
    loader = create_dataloader(TEXT, batch_size=batch_size, max_length=max_length, stride=stride)
    windows = (len(gpt2_tokenizer().encode(TEXT)) - max_length - 1) // stride + 1
    batches = list(loader)
    assert len(batches) == windows // batch_size  # drop_last=True
    for inputs, targets in batches:
        assert inputs.shape == targets.shape == (batch_size, max_length)
        assert torch.equal(inputs[:, 1:], targets[:, :-1])


def test_dataloader_default_tokenizer_is_gpt2():
    loader = create_dataloader(TEXT, batch_size=2, max_length=8, stride=8, shuffle=False)
    inputs, targets = next(iter(loader))
    ids = gpt2_tokenizer().encode(TEXT)
    assert inputs.tolist() == [ids[0:8], ids[8:16]]
    assert targets.tolist() == [ids[1:9], ids[9:17]]


def test_dataloader_shuffle_is_seeded():
    def first_batch():
        torch.manual_seed(123)
        return next(iter(create_dataloader(TEXT, batch_size=4, max_length=8, stride=8)))[0]

    assert torch.equal(first_batch(), first_batch())
    unshuffled = next(iter(create_dataloader(TEXT, batch_size=4, max_length=8, stride=8, shuffle=False)))[0]
    assert not torch.equal(first_batch(), unshuffled)


def test_dataloader_keeps_a_short_last_batch_without_drop_last():
    windows = (len(gpt2_tokenizer().encode(TEXT)) - 65) // 64 + 1
    loader = create_dataloader(TEXT, batch_size=3, max_length=64, stride=64, shuffle=False, drop_last=False)
    sizes = [inputs.shape[0] for inputs, _ in loader]
    assert windows % 3  # so that the last batch is short
    assert sizes == [3] * (windows // 3) + [windows % 3]


def test_too_few_windows_for_one_batch_is_a_clear_error():
    with pytest.raises(ValueError, match=r"only 4 windows, fewer than batch_size=5.*drop_last"):
        create_dataloader(numbers(20), batch_size=5, max_length=4, stride=4, tokenizer=CountingTokenizer())
    loader = create_dataloader(numbers(20), batch_size=5, max_length=4, stride=4, drop_last=False, tokenizer=CountingTokenizer())
    assert [inputs.shape[0] for inputs, _ in loader] == [4]


def test_batch_size_must_be_positive():
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        create_dataloader(TEXT, batch_size=0)
