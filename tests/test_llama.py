"""Chapter 8: the Llama-style options of the course's model, checked against transformers' Llama, and every
other part of the course (cache, checkpoints, CLI, LoRA, bf16, gradient checkpointing, DDP) with them."""

import copy
import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from llm_course import (
    GPTConfig,
    GPTModel,
    KVCache,
    MultiHeadCausalAttention,
    RMSNorm,
    SwiGLU,
    add_lora,
    apply_rope,
    from_hf_llama,
    generate,
    load_checkpoint,
    merge_lora,
    model_summary,
    rope_cos_sin,
    save_checkpoint,
)
from llm_course.cli import main
from test_distributed import needs_gloo, torchrun

transformers = pytest.importorskip("transformers")

TINY = dict(vocab_size=97, context_length=24, emb_dim=32, n_heads=4, n_layers=2, drop_rate=0.0)


def tiny_llama(seed: int = 0, **overrides) -> GPTModel:
    torch.manual_seed(seed)
    model = GPTModel(dataclasses.replace(GPTConfig(**TINY).to_llama(), **overrides))
    with torch.no_grad():  # larger weights than the initialisation: confident, varied predictions
        for parameter in model.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    return model.eval()


def hf_llama(seed: int = 0, **overrides):
    torch.manual_seed(seed)
    settings = dict(vocab_size=101, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=8,
                    num_key_value_heads=2, max_position_embeddings=40, rope_theta=500000.0, rms_norm_eps=1e-6,
                    tie_word_embeddings=False)  # fmt: skip
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**{**settings, **overrides}))
    with torch.no_grad():  # weights of a trained model's size, so that rotations matter in the logits
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.2) if parameter.dim() > 1 else parameter.uniform_(0.5, 1.5)
    return model.eval()


# --- configuration -------------------------------------------------------------------------------------


def test_the_preset_is_a_llama_of_about_the_course_models_size():
    cfg = GPTConfig.llama_style()
    assert (cfg.norm, cfg.positions, cfg.feed_forward, cfg.bias, cfg.n_kv_heads) == ("rmsnorm", "rope", "swiglu", False, 2)
    assert (cfg.emb_dim, cfg.n_heads, cfg.n_layers, cfg.context_length) == (256, 4, 2, 64)
    with torch.device("meta"):
        gpt, llama = model_summary(GPTModel(GPTConfig())).total, model_summary(GPTModel(cfg)).total
    assert abs(llama - gpt) / gpt < 0.01
    assert cfg.ff_dim == 704  # 8/3 * 256 rounded up to a multiple of 64
    assert GPTConfig.llama_style(n_kv_heads=1).n_kv_heads == 1


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(n_kv_heads=3), "must divide n_heads"),
        (dict(norm="batchnorm"), "GPTConfig.norm must be one of"),
        (dict(positions="alibi"), "GPTConfig.positions must be one of"),
        (dict(feed_forward="relu"), "GPTConfig.feed_forward must be one of"),
        (dict(positions="rope", emb_dim=12, n_heads=4), "even head width"),
        (dict(rope_theta=0), "rope_theta"),
        (dict(ff_hidden_dim=0), "ff_hidden_dim"),
    ],
)
def test_bad_options_are_clear_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        GPTConfig(**{**TINY, **overrides})


def test_biases_off_leave_no_bias_in_the_blocks():
    model = GPTModel(GPTConfig(**TINY, bias=False, qkv_bias=False))
    assert not [name for name, _ in model.named_parameters() if name.endswith("bias")]
    assert any(name.endswith("bias") for name, _ in GPTModel(GPTConfig(**TINY)).named_parameters())


# --- the pieces ------------------------------------------------------------------------------------------


def test_rmsnorm_agrees_with_torch():
    torch.manual_seed(0)
    ours, reference = RMSNorm(16, eps=1e-6), torch.nn.RMSNorm(16, eps=1e-6)
    with torch.no_grad():
        ours.scale.normal_()
        reference.weight.copy_(ours.scale)
    x = torch.randn(3, 5, 16) * 4
    torch.testing.assert_close(ours(x), reference(x), rtol=0, atol=1e-6)
    assert not torch.allclose(ours(x), x)


def test_swiglu_is_down_of_silu_gate_times_up():
    torch.manual_seed(0)
    ff = SwiGLU(GPTConfig(**TINY, feed_forward="swiglu", ff_hidden_dim=20))
    x = torch.randn(2, 3, 32)
    expected = ff.down(F.silu(ff.gate(x)) * ff.up(x))
    assert ff.gate.weight.shape == (20, 32) and ff.down.weight.shape == (32, 20)
    torch.testing.assert_close(ff(x), expected)


def test_rope_rotates_pairs_and_scores_depend_on_the_distance_only():
    cos, sin = rope_cos_sin(8, 32, theta=100.0)
    assert cos.shape == sin.shape == (32, 8)
    torch.manual_seed(0)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)

    def at(x, position):
        return apply_rope(x, cos[position : position + 1], sin[position : position + 1])

    torch.testing.assert_close(at(q, 0), q)  # position 0 is not turned
    assert torch.allclose(at(q, 5).norm(), q.norm())  # rotations keep lengths
    first, second = (at(q, 3) @ at(k, 1).transpose(-1, -2)), (at(q, 12) @ at(k, 10).transpose(-1, -2))
    torch.testing.assert_close(first, second, rtol=0, atol=1e-5)  # both 2 apart
    assert not torch.allclose(first, at(q, 3) @ at(k, 2).transpose(-1, -2))
    # Pair i of a head is (i, i + 4); pair 0 turns by one radian per position.
    torch.testing.assert_close(cos[1, [0, 4]], torch.tensor([math.cos(1.0)] * 2))


def test_the_cache_stores_only_the_key_value_heads():
    torch.manual_seed(0)
    att = MultiHeadCausalAttention(32, 32, 16, 0.0, num_heads=8, num_kv_heads=2, rope_theta=10000.0).eval()
    assert att.W_qkv.weight.shape == (32 + 2 * 8, 32)
    x = torch.randn(2, 10, 32)
    cache = KVCache(16)
    first = att(x[:, :6], cache)
    rest = att(x[:, 6:], cache)
    assert cache.keys.shape == cache.values.shape == (2, 2, 16, 4)
    torch.testing.assert_close(torch.cat([first, rest], dim=1), att(x), rtol=0, atol=1e-5)
    output, weights = att(x, return_weights=True)
    assert weights.shape == (2, 8, 10, 10)
    torch.testing.assert_close(output, att(x), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="must divide num_heads"):
        MultiHeadCausalAttention(32, 32, 16, 0.0, num_heads=8, num_kv_heads=3)


# --- checked against transformers' Llama -----------------------------------------------------------------


@pytest.mark.parametrize("tied", [False, True])
def test_logits_agree_with_transformers_llama(tied):
    reference = hf_llama(tie_word_embeddings=tied)
    assert reference.config.num_key_value_heads < reference.config.num_attention_heads
    model = from_hf_llama(reference)
    assert model.cfg.rope_theta == 500000.0 and model.cfg.n_kv_heads == 2 and model.cfg.tie_weights == tied
    for seq in (1, 5, 17, 40):
        ids = torch.randint(0, 101, (2, seq), generator=torch.Generator().manual_seed(seq))
        with torch.no_grad():
            expected, ours = reference(ids).logits, model(ids)
        assert expected.abs().max() > 1.0  # logits large enough for the comparison to mean something
        torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5)


def test_a_state_dict_needs_a_config_and_unknown_weights_are_refused():
    reference = hf_llama()
    model = from_hf_llama(reference)
    state = reference.state_dict()
    with pytest.raises(ValueError, match="does not say how many heads"):
        from_hf_llama(state)
    again = from_hf_llama(state, model.cfg)
    ids = torch.randint(0, 101, (1, 9))
    torch.testing.assert_close(again(ids), model(ids))
    with pytest.raises(ValueError, match="no place for"):
        from_hf_llama({**state, "model.layers.0.extra.weight": torch.zeros(2)}, model.cfg)
    with pytest.raises(ValueError, match="2 layers but the config has n_layers=3"):
        from_hf_llama(state, dataclasses.replace(model.cfg, n_layers=3))


def test_unsupported_llama_settings_are_named():
    with pytest.raises(ValueError, match="hidden_act"):
        from_hf_llama(hf_llama(hidden_act="gelu"))


# --- everything else with every option -----------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [dict(), dict(n_kv_heads=1), dict(n_kv_heads=4, positions="learned"), dict(norm="layernorm", feed_forward="gelu")],
)
def test_cached_generation_equals_uncached_token_for_token(overrides):
    model = tiny_llama(**overrides)
    idx = torch.randint(0, 97, (2, 5), generator=torch.Generator().manual_seed(1))
    steps = 2 * TINY["context_length"] + 3  # past the window: it slides
    cached, uncached = generate(model, idx, steps), generate(model, idx, steps, use_cache=False)
    assert torch.equal(cached, uncached)
    assert len(set(cached[:, 5:].flatten().tolist())) >= 2


def test_checkpoints_store_the_options(tmp_path):
    model = tiny_llama(n_kv_heads=1, rope_theta=500.0)
    path = save_checkpoint(tmp_path / "llama.pt", model)
    loaded, checkpoint = load_checkpoint(path)
    assert loaded.cfg == model.cfg and checkpoint["model_config"]["rope_theta"] == 500.0
    ids = torch.randint(0, 97, (1, 9))
    torch.testing.assert_close(loaded(ids), model(ids), rtol=0, atol=0)


def test_lora_wraps_the_swiglu_layers_and_merges():
    model = tiny_llama()
    ids = torch.randint(0, 97, (2, 8))
    before = model(ids)
    add_lora(model, rank=2, alpha=4)
    names = {name for name, p in model.named_parameters() if p.requires_grad}
    assert {"blocks.0.ff.gate.lora_A", "blocks.0.ff.down.lora_B", "blocks.0.att.W_qkv.lora_A"} <= names
    torch.testing.assert_close(model(ids), before)  # B starts at zero
    with torch.no_grad():
        model.blocks[0].ff.up.lora_B.normal_()
    changed = model(ids)
    merge_lora(model)
    torch.testing.assert_close(model(ids), changed, rtol=0, atol=1e-5)


def test_gradient_checkpointing_gives_the_same_gradients():
    model = tiny_llama().train()
    ids = torch.randint(0, 97, (2, 12))
    grads = []
    for checkpointing in (False, True):
        model.zero_grad()
        model.gradient_checkpointing = checkpointing
        F.cross_entropy(model(ids).flatten(0, 1), ids.flatten()).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def test_bf16_autocast_trains_and_a_bf16_model_generates_with_the_cache():
    model = tiny_llama().train()
    ids = torch.randint(0, 97, (2, 12))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = F.cross_entropy(model(ids).flatten(0, 1).float(), ids.flatten())
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters())
    half = copy.deepcopy(model).eval().to(torch.bfloat16)
    out = generate(half, ids[:, :3], 10)
    assert out.shape == (2, 13)


def test_the_cli_trains_and_generates_a_llama(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    run = "train --corpus tiny --model-size tiny --architecture llama --epochs 1 --eval-freq 4 --eval-iter 1"
    assert main((run + " --max-new-tokens 4 --context-length 16 --quiet --output run.pt").split()) == 0
    model, checkpoint = load_checkpoint(tmp_path / "run.pt")
    assert model.cfg.positions == "rope" and model.cfg.norm == "rmsnorm" and model.cfg.feed_forward == "swiglu"
    assert checkpoint["training"]["run"]["architecture"] == "llama"
    assert main(["generate", "--checkpoint", "run.pt", "--prompt", "The", "--max-new-tokens", "3"]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", "run.pt", "--architecture", "gpt2"]) == 1
    assert "--architecture gpt2 differs from the resumed run's llama" in capsys.readouterr().err


@needs_gloo
def test_ddp_trains_a_llama(tmp_path):
    (tmp_path / "text.txt").write_text("The people of the states met in the hall. " * 120, encoding="utf-8")
    args = "-m llm_course train --text text.txt --model-size tiny --architecture llama --epochs 1 --batch-size 4"
    args += " --eval-freq 5 --eval-iter 1 --context-length 16 --max-new-tokens 2 --device cpu --quiet --output out/run.pt"
    result = torchrun(args.split(), tmp_path)
    assert result.stdout.count("Trained for") == 1
    model, checkpoint = load_checkpoint(tmp_path / "out" / "run.pt")
    assert model.cfg.positions == "rope" and checkpoint["training"]["history"]["global_step"] > 0
