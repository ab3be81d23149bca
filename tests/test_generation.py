"""Chapter 4: text generation: greedy decoding, temperature, top-k, top-p, eos, cropping and reproducibility."""

import pytest
import torch

from llm_course import (
    GPTConfig,
    GPTModel,
    generate,
    gpt2_tokenizer,
    next_token_probs,
    next_token_table,
    sample_next_token,
    text_to_token_ids,
    token_ids_to_text,
)

VOCAB = 97
CONTEXT = 16


@pytest.fixture(scope="module")
def model() -> GPTModel:
    torch.manual_seed(0)
    return GPTModel(GPTConfig(vocab_size=VOCAB, context_length=CONTEXT, emb_dim=32, n_heads=4, n_layers=2))


@pytest.fixture(scope="module")
def tokenizer():
    return gpt2_tokenizer()


def prompt(batch: int = 1, seq: int = 5, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(seed))


def reference_greedy(model, idx, steps):
    """Greedy decoding written out directly: the most likely next token, appended, repeated."""
    model.eval()
    with torch.no_grad():
        for _ in range(steps):
            logits = model(idx[:, -CONTEXT:])[:, -1]
            idx = torch.cat([idx, logits.argmax(-1, keepdim=True)], dim=1)
    return idx


# --- the shape of the output and greedy decoding ---------------------------------------------------------


def test_generate_appends_max_new_tokens(model):
    idx = prompt(batch=3)
    out = generate(model, idx, max_new_tokens=7)
    assert out.shape == (3, 12) and out.dtype == torch.long
    assert torch.equal(out[:, :5], idx)
    assert torch.equal(generate(model, idx, max_new_tokens=0), idx)


def test_greedy_picks_the_most_likely_token(model):
    idx = prompt(batch=2)
    assert torch.equal(generate(model, idx, 6), reference_greedy(model, idx, 6))


def test_greedy_equals_top_k_1_equals_tiny_top_p(model):
    idx = prompt(batch=2, seed=3)
    greedy = generate(model, idx, 8)
    gen = torch.Generator().manual_seed(0)
    top_k_1 = generate(model, idx, 8, temperature=1.5, top_k=1, generator=gen)
    tiny_top_p = generate(model, idx, 8, temperature=1.5, top_p=1e-6, generator=gen)
    assert torch.equal(greedy, top_k_1)
    assert torch.equal(greedy, tiny_top_p)


def test_generate_runs_in_eval_mode_and_restores_the_mode():
    torch.manual_seed(0)
    noisy = GPTModel(GPTConfig(vocab_size=VOCAB, context_length=CONTEXT, emb_dim=32, n_heads=4, n_layers=2, drop_rate=0.5))
    noisy.train()
    idx = prompt()
    first, second = generate(noisy, idx, 6), generate(noisy, idx, 6)
    assert torch.equal(first, second)  # no dropout while generating
    assert noisy.training


# --- sampling --------------------------------------------------------------------------------------------


def test_seeded_sampling_reproduces(model):
    idx = prompt(batch=2)
    runs = [
        generate(model, idx, 10, temperature=1.0, top_k=20, top_p=0.9, generator=torch.Generator().manual_seed(seed))
        for seed in (42, 42, 7)
    ]
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


def test_global_seed_also_reproduces(model):
    idx = prompt()
    torch.manual_seed(5)
    first = generate(model, idx, 10, temperature=1.0)
    torch.manual_seed(5)
    assert torch.equal(first, generate(model, idx, 10, temperature=1.0))


def test_temperature_sharpens_or_flattens_the_distribution():
    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0]])
    base = next_token_probs(logits, temperature=1.0)
    cold = next_token_probs(logits, temperature=0.5)
    hot = next_token_probs(logits, temperature=5.0)
    torch.testing.assert_close(base, torch.softmax(logits, -1))
    torch.testing.assert_close(cold, torch.softmax(logits / 0.5, -1))
    assert cold[0, 0] > base[0, 0] > hot[0, 0]
    entropy = lambda p: -(p * p.log()).sum().item()  # noqa: E731
    assert entropy(cold) < entropy(base) < entropy(hot)
    # temperature 0 is greedy: all the mass on the argmax
    assert torch.equal(next_token_probs(logits, temperature=0.0), torch.tensor([[1.0, 0.0, 0.0, 0.0]]))


def test_temperature_changes_what_is_sampled():
    # Counted over many draws: a low temperature almost always takes the top token, a high one often does not.
    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0]]).expand(4000, 4)
    gen = torch.Generator().manual_seed(0)
    cold = (sample_next_token(logits, temperature=0.2, generator=gen) == 0).float().mean().item()
    hot = (sample_next_token(logits, temperature=3.0, generator=gen) == 0).float().mean().item()
    assert cold > 0.95 and hot < 0.5


def test_top_k_keeps_the_k_most_likely():
    logits = torch.tensor([[0.1, 3.0, -2.0, 2.0, 1.0]])
    probs = next_token_probs(logits, temperature=1.0, top_k=2)
    assert (probs[0] > 0).tolist() == [False, True, False, True, False]
    torch.testing.assert_close(probs[0, [1, 3]], torch.softmax(torch.tensor([3.0, 2.0]), -1))
    # k beyond the vocabulary keeps everything
    torch.testing.assert_close(next_token_probs(logits, top_k=50), torch.softmax(logits, -1))


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.tensor([[0.05, 0.5, 0.3, 0.15]])
    logits = probs.log()
    # 0.5 < 0.6, 0.5 + 0.3 = 0.8 >= 0.6: keep the two most likely tokens
    kept = next_token_probs(logits, top_p=0.6)
    assert (kept[0] > 0).tolist() == [False, True, True, False]
    torch.testing.assert_close(kept[0, [1, 2]], torch.tensor([0.5, 0.3]) / 0.8)
    # exactly reaching p is enough: 0.5 >= 0.5 keeps one token
    assert (next_token_probs(logits, top_p=0.5)[0] > 0).sum() == 1
    # p = 0.9 needs three tokens; p = 1 keeps all
    assert (next_token_probs(logits, top_p=0.9)[0] > 0).tolist() == [False, True, True, True]
    torch.testing.assert_close(next_token_probs(logits, top_p=1.0), probs)


def test_top_p_works_row_by_row():
    logits = torch.tensor([[0.5, 0.3, 0.2], [0.2, 0.3, 0.5]]).log()
    kept = next_token_probs(logits, top_p=0.7) > 0
    assert kept.tolist() == [[True, True, False], [False, True, True]]


def test_sampling_never_picks_a_filtered_token(model):
    idx = prompt(batch=4)
    with torch.no_grad():
        logits = model.eval()(idx)[:, -1]
    allowed = torch.topk(logits, 3).indices
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        choice = sample_next_token(logits, temperature=2.0, top_k=3, generator=gen)
        assert (allowed == choice).any(dim=1).all()


# --- stopping and cropping -------------------------------------------------------------------------------


def test_eos_stops_a_single_sequence(model):
    idx = prompt(seed=4)
    full = generate(model, idx, 10)
    eos = full[0, 5 + 3].item()  # the 4th generated token becomes the end-of-sequence token
    first = (full[0, 5:] == eos).nonzero()[0].item()
    stopped = generate(model, idx, 10, eos_id=eos)
    assert stopped.shape[1] == 5 + first + 1
    assert stopped[0, -1].item() == eos
    assert torch.equal(stopped, full[:, : stopped.shape[1]])


class CountingModel(torch.nn.Module):
    """A stand-in model whose most likely next token is always the last token plus one."""

    def __init__(self):
        super().__init__()
        self.cfg = GPTConfig(vocab_size=VOCAB, context_length=CONTEXT, emb_dim=4, n_heads=1, n_layers=1)
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, token_ids):
        return torch.nn.functional.one_hot((token_ids + 1) % VOCAB, VOCAB).float() * 10 + self.dummy


def test_eos_in_a_batch_pads_finished_rows_and_stops_when_all_finish():
    idx = torch.tensor([[10], [5]])
    out = generate(CountingModel(), idx, max_new_tokens=20, eos_id=13)
    # Row 0 reaches 13 after 3 tokens and is padded with 13; row 1 reaches it after 8 tokens, and then it stops.
    assert out.tolist() == [[10, 11, 12, 13, 13, 13, 13, 13, 13], [5, 6, 7, 8, 9, 10, 11, 12, 13]]
    # Without eos_id, or when it never comes, all max_new_tokens are generated.
    assert generate(CountingModel(), idx, max_new_tokens=20).shape == (2, 21)
    assert generate(CountingModel(), idx, max_new_tokens=5, eos_id=13).shape == (2, 6)


def test_long_prompt_is_cropped_to_the_context(model):
    idx = prompt(seq=40)
    out = generate(model, idx, 4)
    assert out.shape == (1, 44)
    # only the last CONTEXT tokens matter
    assert torch.equal(out[:, 40:], generate(model, idx[:, -CONTEXT:], 4)[:, CONTEXT:])
    # a smaller context_size crops further and changes the result's dependence accordingly
    short = generate(model, idx, 4, context_size=4)
    assert torch.equal(short[:, 40:], generate(model, idx[:, -4:], 4, context_size=4)[:, 4:])


# --- argument checks -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(temperature=-0.5), "temperature"),
        (dict(temperature=float("nan")), "temperature"),
        (dict(top_k=0), "top_k"),
        (dict(top_k=2.5), "top_k"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.2), "top_p"),
        (dict(max_new_tokens=-1), "max_new_tokens"),
        (dict(context_size=0), "context_size"),
        (dict(context_size=CONTEXT + 1), "exceeds the model's context_length"),
        (dict(eos_id="end"), "eos_id"),
    ],
)
def test_bad_generate_arguments_are_clear_errors(model, kwargs, message):
    kwargs = {"max_new_tokens": 3, **kwargs}
    with pytest.raises(ValueError, match=message):
        generate(model, prompt(), **kwargs)


@pytest.mark.parametrize(
    "idx",
    [
        torch.tensor([1, 2, 3]),  # no batch dimension
        torch.tensor([[1.0, 2.0]]),  # floats
        torch.zeros(1, 0, dtype=torch.long),  # empty prompt
        [[1, 2, 3]],  # not a tensor
    ],
)
def test_bad_prompts_are_clear_errors(model, idx):
    with pytest.raises(ValueError, match=r"\(batch, seq\) LongTensor"):
        generate(model, idx, 3)


# --- text helpers ----------------------------------------------------------------------------------------


def test_text_round_trip(tokenizer):
    text = "Every effort moves you<|endoftext|> forward."
    ids = text_to_token_ids(text, tokenizer)
    assert ids.shape == (1, len(tokenizer.encode(text, allowed_special="all"))) and ids.dtype == torch.long
    assert token_ids_to_text(ids, tokenizer) == text
    assert token_ids_to_text(ids[0], tokenizer) == text
    assert token_ids_to_text(ids[0].tolist(), tokenizer) == text
    with pytest.raises(ValueError, match="decode each row"):
        token_ids_to_text(ids.repeat(2, 1), tokenizer)


def test_next_token_table(tokenizer):
    torch.manual_seed(0)
    small = GPTModel(GPTConfig(context_length=8, emb_dim=16, n_heads=2, n_layers=1))
    table = next_token_table(small, tokenizer, "The state of the Union is strong and getting stronger", k=5)
    assert len(table) == 5
    probs = [p for _, p in table]
    assert probs == sorted(probs, reverse=True)
    # The table is the softmax of the last position's logits (prompt cropped to the context).
    ids = text_to_token_ids("The state of the Union is strong and getting stronger", tokenizer)[:, -8:]
    with torch.no_grad():
        expected = torch.softmax(small.eval()(ids)[0, -1], -1)
    top = torch.topk(expected, 5)
    assert [token for token, _ in table] == [tokenizer.decode([i]) for i in top.indices.tolist()]
    torch.testing.assert_close(torch.tensor(probs), top.values)
    with pytest.raises(ValueError, match="k must be"):
        next_token_table(small, tokenizer, "Hi", k=0)
