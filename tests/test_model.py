"""Chapter 4: the GPT model's building blocks, its shapes and sizes, weight tying, causality and learning."""

import math
import copy
import io

import pytest
import torch
import torch.nn.functional as F

from llm_course import (
    GELU,
    FeedForward,
    GPTConfig,
    GPTModel,
    LayerNorm,
    TransformerBlock,
    model_summary,
)

TINY = dict(vocab_size=97, context_length=16, emb_dim=32, n_heads=4, n_layers=2)


def tiny_model(seed: int = 0, **overrides) -> GPTModel:
    torch.manual_seed(seed)
    return GPTModel(GPTConfig(**{**TINY, **overrides}))


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def meta_model(cfg: GPTConfig) -> GPTModel:
    # The meta device has shapes but no data: building GPT-2 small there costs no memory or time.
    with torch.device("meta"):
        return GPTModel(cfg)


# --- configuration ---------------------------------------------------------------------------------------


def test_config_defaults_are_the_course_model():
    cfg = GPTConfig()
    assert (cfg.vocab_size, cfg.context_length, cfg.emb_dim, cfg.n_heads, cfg.n_layers) == (50257, 64, 256, 4, 2)
    assert (cfg.drop_rate, cfg.qkv_bias, cfg.tie_weights) == (0.1, False, False)


def test_gpt2_small_preset_and_overrides():
    cfg = GPTConfig.gpt2_small(drop_rate=0.0, tie_weights=True)
    assert (cfg.context_length, cfg.emb_dim, cfg.n_heads, cfg.n_layers, cfg.qkv_bias) == (1024, 768, 12, 12, True)
    assert cfg.drop_rate == 0.0 and cfg.tie_weights


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("emb_dim", 30, "divisible by n_heads"),
        ("n_layers", 0, "an integer >= 1"),
        ("vocab_size", -5, "an integer >= 1"),
        ("context_length", 2.5, "an integer >= 1"),
        ("drop_rate", 1.0, r"\[0, 1\)"),
        ("drop_rate", -0.1, r"\[0, 1\)"),
    ],
)
def test_config_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        GPTConfig(**{**TINY, field: value})


def test_model_needs_a_config():
    with pytest.raises(TypeError, match="GPTConfig"):
        GPTModel(dict(TINY))


# --- building blocks -------------------------------------------------------------------------------------


def test_layer_norm_matches_pytorch():
    torch.manual_seed(0)
    norm = LayerNorm(8)
    with torch.no_grad():
        norm.scale.normal_()
        norm.shift.normal_()
    x = torch.randn(3, 5, 8) * 4 + 2
    expected = F.layer_norm(x, (8,), norm.scale, norm.shift, eps=1e-5)
    torch.testing.assert_close(norm(x), expected)
    # the formula written out: biased variance (divide by emb_dim), eps inside the square root
    mean, var = x.mean(-1, keepdim=True), x.var(-1, keepdim=True, unbiased=False)
    torch.testing.assert_close(norm(x), norm.scale * (x - mean) / torch.sqrt(var + 1e-5) + norm.shift)
    plain = LayerNorm(8)(x)
    torch.testing.assert_close(plain.mean(-1), torch.zeros(3, 5), atol=1e-5, rtol=0)
    torch.testing.assert_close(plain.var(-1, unbiased=False), torch.ones(3, 5), atol=1e-3, rtol=0)


def test_gelu_is_the_tanh_approximation():
    x = torch.linspace(-6, 6, 241)
    torch.testing.assert_close(GELU()(x), F.gelu(x, approximate="tanh"))
    formula = 0.5 * x * (1 + torch.tanh((2 / torch.pi) ** 0.5 * (x + 0.044715 * x**3)))
    torch.testing.assert_close(GELU()(x), formula)
    # ...which is close to, but not the same as, the exact GELU
    assert 0 < (GELU()(x) - F.gelu(x)).abs().max() < 1e-3


def test_feed_forward_expands_four_times_and_keeps_the_shape():
    cfg = GPTConfig(**TINY)
    ff = FeedForward(cfg)
    hidden = ff.layers[0](torch.randn(2, 5, cfg.emb_dim))
    assert hidden.shape == (2, 5, 4 * cfg.emb_dim)
    assert ff(torch.randn(2, 5, cfg.emb_dim)).shape == (2, 5, cfg.emb_dim)


def test_transformer_block_keeps_the_shape_and_has_the_agreed_parts():
    cfg = GPTConfig(**TINY)
    block = TransformerBlock(cfg)
    assert [name for name, _ in block.named_children()] == ["norm1", "att", "norm2", "ff", "drop_resid"]
    assert block(torch.randn(2, 7, cfg.emb_dim)).shape == (2, 7, cfg.emb_dim)


def test_transformer_block_is_residual():
    # With the sublayers' output projections zeroed, each sublayer adds nothing: the block is the identity.
    cfg = GPTConfig(**TINY, drop_rate=0.0)
    block = TransformerBlock(cfg)
    with torch.no_grad():
        for linear in (block.att.out_proj, block.ff.layers[2]):
            linear.weight.zero_()
            linear.bias.zero_()
    x = torch.randn(2, 7, cfg.emb_dim)
    torch.testing.assert_close(block(x), x)


# --- the model -------------------------------------------------------------------------------------------


def test_model_output_shape():
    model = tiny_model()
    ids = torch.randint(0, TINY["vocab_size"], (3, 11))
    assert model(ids).shape == (3, 11, TINY["vocab_size"])


def test_default_model_shape_and_untrained_loss():
    torch.manual_seed(0)
    model = GPTModel(GPTConfig()).eval()
    ids = torch.randint(0, 50257, (2, 64))
    with torch.no_grad():
        logits = model(ids)
    assert logits.shape == (2, 64, 50257)
    # Small initial weights: near-uniform predictions, so the loss is close to ln(vocab_size).
    loss = F.cross_entropy(logits.flatten(0, 1), ids.roll(-1, dims=1).flatten())
    assert abs(loss.item() - torch.log(torch.tensor(50257.0)).item()) < 0.1


def test_too_long_sequence_is_a_clear_error():
    model = tiny_model()
    with pytest.raises(ValueError, match="exceeds the context length 16"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_default_parameter_count():
    assert n_params(meta_model(GPTConfig())) == 27_326_464


def test_gpt2_small_parameter_counts_untied_and_tied():
    assert n_params(meta_model(GPTConfig.gpt2_small())) == 163_037_184
    assert n_params(meta_model(GPTConfig.gpt2_small(tie_weights=True))) == 124_439_808


def test_meta_count_equals_a_real_model_count():
    cfg = GPTConfig(**TINY, qkv_bias=True)
    assert n_params(meta_model(cfg)) == n_params(GPTModel(cfg))


def test_tied_weights_are_one_tensor():
    model = tiny_model(tie_weights=True)
    assert model.out_head.weight is model.embedding.token_embedding.weight
    untied = tiny_model(tie_weights=False)
    assert n_params(untied) - n_params(model) == TINY["vocab_size"] * TINY["emb_dim"]
    # One tensor, so one gradient collects both uses
    model(torch.randint(0, TINY["vocab_size"], (2, 5))).sum().backward()
    assert model.embedding.token_embedding.weight.grad is model.out_head.weight.grad


def test_tied_weights_stay_shared_after_to_and_state_dict_round_trip():
    model = tiny_model(tie_weights=True).to(torch.float64).to("cpu")
    assert model.out_head.weight is model.embedding.token_embedding.weight
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    restored = tiny_model(seed=1, tie_weights=True).to(torch.float64)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert restored.out_head.weight is restored.embedding.token_embedding.weight
    torch.testing.assert_close(restored.out_head.weight, model.embedding.token_embedding.weight)
    with torch.no_grad():
        restored.out_head.weight[0, 0] = 123.0
    assert restored.embedding.token_embedding.weight[0, 0].item() == 123.0


def test_model_is_causal():
    model = tiny_model().eval()
    ids = torch.randint(0, TINY["vocab_size"], (2, 12))
    changed = ids.clone()
    changed[:, 8:] = (changed[:, 8:] + 1) % TINY["vocab_size"]
    with torch.no_grad():
        before, after = model(ids), model(changed)
    torch.testing.assert_close(before[:, :8], after[:, :8])
    assert not torch.allclose(before[:, 8:], after[:, 8:])


def test_eval_mode_is_deterministic_and_train_mode_uses_dropout():
    model = tiny_model(drop_rate=0.5)
    ids = torch.randint(0, TINY["vocab_size"], (2, 10))
    model.eval()
    torch.testing.assert_close(model(ids), model(ids))
    model.train()
    assert not torch.allclose(model(ids), model(ids))


def test_tiny_model_overfits_one_batch():
    torch.manual_seed(0)
    model = GPTModel(GPTConfig(**TINY, drop_rate=0.0))
    ids = torch.randint(0, TINY["vocab_size"], (4, 17))
    inputs, targets = ids[:, :-1], ids[:, 1:]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)

    def loss_fn():
        return F.cross_entropy(model(inputs).flatten(0, 1), targets.flatten())

    initial = loss_fn().item()
    for _ in range(60):
        optimizer.zero_grad()
        loss = loss_fn()
        loss.backward()
        optimizer.step()
    # From about ln(97) = 4.57 (a uniform guess) to memorized: every next token known.
    assert initial > 4.0
    assert loss_fn().item() < 0.5


# --- model_summary ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("tie", [False, True])
def test_summary_parts_sum_to_the_total(tie):
    model = tiny_model(tie_weights=tie)
    summary = model_summary(model)
    assert summary.total == n_params(model)
    assert sum(summary.parts.values()) == summary.total
    head = [count for part, count in summary.parts.items() if part.startswith("output head")]
    assert head == [0 if tie else TINY["vocab_size"] * TINY["emb_dim"]]


def test_summary_memory_is_parameters_times_bytes():
    summary = model_summary(meta_model(GPTConfig()))
    total = 27_326_464
    # bf16 autocast keeps weights, gradients and AdamW state in fp32; only pure bf16 halves them.
    for way, nbytes in (("fp32", 4), ("bf16 autocast", 4), ("pure bf16", 2)):
        memory = summary.memory[way]
        assert memory["weights"] == memory["gradients"] == total * nbytes
        assert memory["AdamW state"] == 2 * total * nbytes  # two moment estimates per parameter
        assert memory["total"] == 4 * total * nbytes


def test_summary_prints_a_table():
    summary = model_summary(tiny_model(tie_weights=True))
    text = str(summary)
    assert f"{summary.total:,}" in text
    assert "weights tied" in text and "fp32" in text and "bf16 autocast" in text and "pure bf16" in text
    for part in summary.parts:
        assert part in text


def test_summary_rejects_other_models():
    with pytest.raises(TypeError, match="GPTModel"):
        model_summary(torch.nn.Linear(2, 2))


def test_deepcopy_keeps_tying():
    model = copy.deepcopy(tiny_model(tie_weights=True))
    assert model.out_head.weight is model.embedding.token_embedding.weight


def test_residual_projections_start_smaller_as_in_gpt2():
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=100, context_length=8, emb_dim=256, n_heads=4, n_layers=8)
    model = GPTModel(cfg)
    residual = 0.02 / math.sqrt(2 * cfg.n_layers)
    for block in model.blocks:
        for layer in (block.att.out_proj, block.ff.layers[2]):
            assert layer.weight.std().item() == pytest.approx(residual, rel=0.05)
        for layer in (block.att.W_qkv, block.ff.layers[0]):
            assert layer.weight.std().item() == pytest.approx(0.02, rel=0.05)
