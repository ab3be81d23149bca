"""Chapter 5: generation with a key/value cache gives exactly what re-reading the whole window gives; the cache
lives inside the attention module's own forward."""

import copy

import pytest
import torch

from llm_course import GPTConfig, GPTModel, KVCache, MultiHeadCausalAttention, generate, generate_stream

VOCAB = 89
CONTEXT = 12
TOL = 1e-4


@pytest.fixture(scope="module")
def model() -> GPTModel:
    torch.manual_seed(0)
    model = GPTModel(
        GPTConfig(vocab_size=VOCAB, context_length=CONTEXT, emb_dim=32, n_heads=4, n_layers=3, qkv_bias=True)
    )
    with torch.no_grad():  # larger weights than GPT-2's initialisation: confident, varied predictions
        for parameter in model.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    return model.eval()


def prompt(batch: int, seq: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(seed))


class Recorder:
    """Forward hooks that record what the model reads (token counts) and its last-position logits per call."""

    def __init__(self, model: GPTModel):
        self.tokens_read, self.logits = [], []
        self.handles = [
            model.embedding.register_forward_hook(lambda m, args, out: self.tokens_read.append(args[0].shape[1])),
            model.out_head.register_forward_hook(lambda m, args, out: self.logits.append(out[:, -1].clone())),
        ]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()


def run(model, idx, steps, **kwargs):
    with Recorder(model) as recorder:
        out = generate(model, idx, steps, **kwargs)
    return out, recorder


# --- the cache inside the model -----------------------------------------------------------------------


@pytest.mark.parametrize("chunks", [[12], [1] * 12, [5, 1, 1, 1, 4], [3, 3, 3, 3], [11, 1]])
def test_feeding_a_sequence_in_pieces_gives_the_same_logits(model, chunks):
    ids = prompt(2, CONTEXT, seed=len(chunks))
    with torch.no_grad():
        full = model(ids)
        cache = [KVCache(CONTEXT) for _ in model.blocks]
        pieces, start = [], 0
        for size in chunks:
            pieces.append(model(ids[:, start : start + size], kv_cache=cache))
            start += size
    assert all(layer.length == CONTEXT for layer in cache)
    assert (torch.cat(pieces, dim=1) - full).abs().max().item() <= TOL


def test_cache_stores_keys_and_values_per_head():
    cache = KVCache(max_length=6)
    k, v = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)
    keys, values = cache.append(k, v)
    assert keys.shape == (2, 3, 4, 5) and cache.length == 4
    k2, v2 = torch.randn(2, 3, 1, 5), torch.randn(2, 3, 1, 5)
    keys, values = cache.append(k2, v2)
    assert torch.equal(keys, torch.cat([k, k2], dim=2)) and torch.equal(values, torch.cat([v, v2], dim=2))
    with pytest.raises(ValueError, match="cannot take 2 more.*window must slide"):
        cache.append(torch.randn(2, 3, 2, 5), torch.randn(2, 3, 2, 5))
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="max_length"):
            KVCache(bad)


def test_a_full_cache_refuses_more_tokens(model):
    cache = [KVCache(CONTEXT) for _ in model.blocks]
    with torch.no_grad():
        model(prompt(1, CONTEXT), kv_cache=cache)
        with pytest.raises(ValueError, match="context length"):
            model(prompt(1, 1), kv_cache=cache)


# --- generation: the cached path equals the uncached one ----------------------------------------------------


@pytest.mark.parametrize("prompt_len", [1, 2, 5, CONTEXT - 1, CONTEXT, CONTEXT + 7])
@pytest.mark.parametrize("context_size", [None, 5])
def test_greedy_with_cache_is_token_identical_and_logits_agree(model, prompt_len, context_size):
    idx = prompt(2, prompt_len, seed=prompt_len)
    steps = 2 * CONTEXT + 3  # far past the window: it slides many times
    cached, with_cache = run(model, idx, steps, context_size=context_size)
    uncached, without = run(model, idx, steps, context_size=context_size, use_cache=False)
    assert torch.equal(cached, uncached)
    assert len(with_cache.logits) == len(without.logits) == steps
    for a, b in zip(with_cache.logits, without.logits):
        assert (a - b).abs().max().item() <= TOL
    # The generated tokens are not one repeated token, so the comparison means something.
    assert len(set(cached[:, prompt_len:].flatten().tolist())) >= 2


def test_the_cache_reads_the_prompt_once_then_one_token_per_step(model):
    _, with_cache = run(model, prompt(1, 4), 6)
    assert with_cache.tokens_read == [4, 1, 1, 1, 1, 1]
    _, without = run(model, prompt(1, 4), 6, use_cache=False)
    assert without.tokens_read == [4, 5, 6, 7, 8, 9]


def test_the_window_refills_once_full(model):
    # 10 prompt tokens + 2 fill the 12-token window; from then on the window slides and is read whole.
    _, with_cache = run(model, prompt(1, 10), 5)
    assert with_cache.tokens_read == [10, 1, 1, CONTEXT, CONTEXT]


def test_sampling_with_cache_reproduces_the_uncached_path(model):
    idx = prompt(3, 4)
    kwargs = dict(temperature=1.3, top_k=20, top_p=0.95)
    cached = generate(model, idx, 30, generator=torch.Generator().manual_seed(7), **kwargs)
    uncached = generate(model, idx, 30, generator=torch.Generator().manual_seed(7), use_cache=False, **kwargs)
    assert torch.equal(cached, uncached)


def test_eos_with_cache(model):
    idx = prompt(2, 3)
    full = generate(model, idx, 15, use_cache=False)
    eos = full[0, 6].item()  # the fourth generated token of the first row
    first = 3 + full[0, 3:].tolist().index(eos)  # where the first row generates it first (position 6 or earlier)
    stopped = generate(model, idx, 15, eos_id=eos)
    assert torch.equal(stopped, generate(model, idx, 15, eos_id=eos, use_cache=False))
    assert torch.equal(stopped[0, :first], full[0, :first])
    assert stopped[0, first].item() == eos and (stopped[0, first:] == eos).all()


def test_training_mode_and_gradients_are_untouched(model):
    model.train()
    try:
        generate(model, prompt(1, 3), 4)
        assert model.training
    finally:
        model.eval()
    assert all(p.grad is None for p in model.parameters())


def test_the_attention_module_with_a_cache_gives_the_rows_of_the_whole_sequence():
    torch.manual_seed(0)
    att = MultiHeadCausalAttention(8, 8, context_length=10, dropout=0.0, num_heads=2).eval()
    x = torch.randn(2, 7, 8)
    with torch.no_grad():
        full, full_weights = att(x, return_weights=True)
        cache = KVCache(10)
        first = att(x[:, :5], kv_cache=cache)
        rest, weights = att(x[:, 5:], kv_cache=cache, return_weights=True)
    torch.testing.assert_close(torch.cat([first, rest], dim=1), full)
    assert weights.shape == (2, 2, 2, 7)  # the 2 new queries over all 7 keys
    torch.testing.assert_close(weights, full_weights[:, :, 5:])
    assert cache.length == 7 and cache.keys.shape == (2, 2, 10, 4)


def test_generation_streams_one_token_per_step(model):
    idx = prompt(2, 3)
    steps = list(generate_stream(model, idx, 5))
    assert len(steps) == 5 and all(step.shape == (2, 1) for step in steps)
    assert torch.equal(torch.cat([idx, *steps], dim=1), generate(model, idx, 5))
    assert not steps[0].is_inference()  # usable anywhere, e.g. with autograd later
    stream = generate_stream(model.train(), idx, 5)
    next(stream)
    assert not model.training  # generation runs in eval mode...
    stream.close()  # ...and a stream abandoned half-way gives the model its mode back
    assert model.training
    model.eval()


def test_a_bf16_model_generates_with_the_cache(model):
    bf16 = copy.deepcopy(model).to(torch.bfloat16)
    idx = prompt(2, 3)
    cached = generate(bf16, idx, 10)
    assert torch.equal(cached, generate(bf16, idx, 10, use_cache=False))
    sampled = generate(bf16, idx, 10, temperature=1.0, top_k=5, generator=torch.Generator().manual_seed(0))
    assert sampled.shape == (2, 13) and sampled.dtype == torch.long
