"""Chapter 1 embeddings: token plus absolute position embeddings, and the checks on token ids."""

import pytest
import torch

from llm_course import GPTEmbedding, check_token_ids, create_dataloader, gpt2_tokenizer, load_corpus

VOCAB, EMB, CONTEXT = 50, 8, 6


@pytest.fixture
def embedding():
    torch.manual_seed(123)
    return GPTEmbedding(VOCAB, EMB, CONTEXT)


def test_shape_on_a_real_batch():
    torch.manual_seed(123)
    loader = create_dataloader(gpt2_tokenizer().encode(load_corpus("tiny")), batch_size=8, max_length=4, stride=4)
    inputs, _ = next(iter(loader))
    assert inputs.shape == (8, 4)
    layer = GPTEmbedding(50257, 256, context_length=4)
    assert layer(inputs).shape == (8, 4, 256)


def test_output_is_token_plus_position_embedding(embedding):
    ids = torch.tensor([[3, 7, 7, 0], [49, 1, 2, 3]])
    out = embedding(ids)
    assert out.shape == (2, 4, EMB)
    for b in range(2):
        for t in range(4):
            expected = embedding.token_embedding.weight[ids[b, t]] + embedding.position_embedding.weight[t]
            assert torch.equal(out[b, t], expected)
    # The same token at two positions gets two different vectors; the same position in two sequences
    # gets the same position vector.
    assert not torch.equal(out[0, 1], out[0, 2])
    assert torch.allclose(out[0, 3] - embedding.token_embedding.weight[0], out[1, 3] - embedding.token_embedding.weight[3])


def test_parameters_are_two_tables(embedding):
    shapes = sorted(tuple(p.shape) for p in embedding.parameters())
    assert shapes == [(CONTEXT, EMB), (VOCAB, EMB)]


def test_start_pos_uses_the_later_positions(embedding):
    ids = torch.tensor([[1, 2, 3, 4, 5, 6]])
    whole = embedding(ids)
    assert torch.equal(embedding(ids[:, 4:], start_pos=4), whole[:, 4:])
    assert torch.equal(embedding(ids[:, 5:], start_pos=5), whole[:, 5:])


def test_int32_ids_are_accepted(embedding):
    ids = torch.tensor([[1, 2, 3]])
    assert torch.equal(embedding(ids.int()), embedding(ids))


def test_gradients_reach_only_the_used_rows(embedding):
    embedding(torch.tensor([[2, 2, 5]])).sum().backward()
    used = embedding.token_embedding.weight.grad.abs().sum(dim=1).nonzero().flatten().tolist()
    assert used == [2, 5]
    assert embedding.position_embedding.weight.grad[3:].abs().sum() == 0


def test_sequence_longer_than_context_is_a_clear_error(embedding):
    with pytest.raises(ValueError, match=f"sequence length 7 exceeds the context length {CONTEXT}.*ids\\[:, -{CONTEXT}:\\]"):
        embedding(torch.zeros(1, CONTEXT + 1, dtype=torch.long))


@pytest.mark.parametrize("start_pos, seq", [(4, 3), (6, 1), (-1, 2)])
def test_positions_beyond_the_context_are_a_clear_error(embedding, start_pos, seq):
    with pytest.raises(ValueError, match=f"positions {start_pos} to {start_pos + seq - 1} do not fit the context length {CONTEXT}"):
        embedding(torch.zeros(1, seq, dtype=torch.long), start_pos=start_pos)


@pytest.mark.parametrize("bad_id", [VOCAB, -1, 10_000])
def test_ids_outside_the_vocabulary_are_a_clear_error(embedding, bad_id):
    ids = torch.tensor([[0, bad_id, 1]])
    with pytest.raises(ValueError, match=rf"\[0, {VOCAB}\).*different tokenizer"):
        embedding(ids)


@pytest.mark.parametrize(
    "ids, message",
    [
        (torch.tensor([1, 2, 3]), r"got shape \(3,\).*unsqueeze\(0\)"),
        (torch.zeros(2, 3, 4, dtype=torch.long), r"got shape \(2, 3, 4\)"),
        (torch.tensor([[1.0, 2.0]]), r"token ids must be integers \(torch.long\), got dtype torch.float32"),
        (torch.tensor([[1, 2]], dtype=torch.int16), r"token ids must be integers \(torch.long\), got dtype torch.int16"),
        ([[1, 2, 3]], r"got a list.*torch.tensor"),
    ],
)
def test_wrong_rank_dtype_or_type_is_a_clear_error(embedding, ids, message):
    with pytest.raises(ValueError, match=message):
        embedding(ids)


def test_check_token_ids_accepts_good_input():
    check_token_ids(torch.tensor([[0, 49]]), vocab_size=50, context_length=2)
    check_token_ids(torch.zeros(3, 0, dtype=torch.long), vocab_size=50, context_length=2)  # empty is fine
    with pytest.raises(ValueError):
        check_token_ids(torch.tensor([[0, 50]]), vocab_size=50, context_length=2)
