"""Chapter 4: the course's GPTModel is GPT-2: Hugging Face GPT-2 weights load into it and give the same logits.

The reference models are randomly initialised `transformers.GPT2LMHeadModel`s built locally (no download);
their weights get random noise on top of GPT-2's initialisation so that no bias is zero and no layer norm
is the identity, which would hide a weight loaded into the wrong place.
"""

import json
import subprocess
import sys

import pytest
import torch

import safetensors.torch as safetensors_torch  # test dependencies (requirements-dev.txt)
import transformers

from llm_course import (
    GPTConfig,
    GPTModel,
    download_gpt2_weights,
    from_hf_gpt2,
    generate,
    load_openai_gpt2,
    to_hf_gpt2,
)

transformers.logging.set_verbosity_error()
TOL = 1e-4


def hf_gpt2(seed: int = 0, attn: str = "sdpa", **config) -> "transformers.GPT2LMHeadModel":
    """A random GPT-2 in eval mode with every weight perturbed; `config` overrides GPT2Config's fields."""
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(attn_implementation=attn, **config)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return model


def tiny_hf(**overrides):
    settings = dict(vocab_size=101, n_positions=24, n_embd=128, n_layer=3, n_head=2)
    return hf_gpt2(**{**settings, **overrides})


def max_logit_diff(ours: GPTModel, hf, ids: torch.Tensor) -> float:
    with torch.no_grad():
        return (ours(ids) - hf(ids).logits).abs().max().item()


def hub_layout(hf) -> dict[str, torch.Tensor]:
    """The layout of OpenAI's model.safetensors on the Hub: no `transformer.` prefix, no lm_head (tied), and
    a causal-mask buffer `attn.bias` per block."""
    n = hf.config.n_positions
    weights = {k.removeprefix("transformer."): v.clone() for k, v in hf.state_dict().items() if k != "lm_head.weight"}
    for i in range(hf.config.n_layer):
        weights[f"h.{i}.attn.bias"] = torch.tril(torch.ones(1, 1, n, n))
        weights[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    return weights


# --- loading: the same logits as transformers -----------------------------------------------------------


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_tiny_gpt2_logits_match(attn):
    hf = tiny_hf(attn=attn)
    ours = from_hf_gpt2(hf)
    assert not ours.training
    for seq in (1, 2, 9, 24):
        ids = torch.randint(0, 101, (3, seq), generator=torch.Generator().manual_seed(seq))
        assert max_logit_diff(ours, hf, ids) <= TOL, seq


def test_124m_gpt2_logits_match():
    hf = hf_gpt2(seed=1)  # GPT2Config's defaults are the 124 M model
    ours = from_hf_gpt2(hf)
    assert ours.cfg == GPTConfig.gpt2_small(tie_weights=True, drop_rate=0.0)
    assert sum(p.numel() for p in ours.parameters()) == 124_439_808
    for seq in (1, 17, 128):
        ids = torch.randint(0, 50257, (2, seq), generator=torch.Generator().manual_seed(seq))
        assert max_logit_diff(ours, hf, ids) <= TOL, seq


def test_config_is_inferred_from_the_weights():
    hf = tiny_hf()
    cfg = from_hf_gpt2(hf).cfg
    assert cfg == GPTConfig(
        vocab_size=101,
        context_length=24,
        emb_dim=128,
        n_heads=2,
        n_layers=3,
        drop_rate=0.0,
        qkv_bias=True,
        tie_weights=True,
    )


def test_given_config_is_used():
    hf = tiny_hf(n_embd=32, n_head=4)  # 8-dimensional heads: not GPT-2's 64, so n_heads must be given
    cfg = GPTConfig(
        vocab_size=101, context_length=24, emb_dim=32, n_heads=4, n_layers=3, qkv_bias=True, tie_weights=True
    )
    ours = from_hf_gpt2(hf.state_dict(), cfg)
    assert ours.cfg is cfg
    assert max_logit_diff(ours, hf, torch.randint(0, 101, (2, 24))) <= TOL


def test_tied_head_is_one_tensor_and_untied_head_is_loaded():
    tied = from_hf_gpt2(tiny_hf())
    assert tied.out_head.weight is tied.embedding.token_embedding.weight
    hf = tiny_hf(tie_word_embeddings=False)
    assert not torch.equal(hf.lm_head.weight, hf.transformer.wte.weight)
    untied = from_hf_gpt2(hf)
    assert not untied.cfg.tie_weights
    assert untied.out_head.weight is not untied.embedding.token_embedding.weight
    assert max_logit_diff(untied, hf, torch.randint(0, 101, (2, 10))) <= TOL


# --- exporting -------------------------------------------------------------------------------------------


def test_export_is_gpt2_state_dict_exactly():
    hf = tiny_hf()
    exported = to_hf_gpt2(from_hf_gpt2(hf))
    expected = hf.state_dict()
    assert set(exported) == set(expected)
    for key, value in expected.items():
        assert torch.equal(exported[key], value), key
        assert exported[key].is_contiguous()


def test_export_then_reimport_is_exact():
    torch.manual_seed(3)
    cfg = GPTConfig(vocab_size=101, context_length=24, emb_dim=128, n_heads=2, n_layers=2, qkv_bias=True, drop_rate=0.0)
    ours = GPTModel(cfg)
    with torch.no_grad():
        for parameter in ours.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    back = from_hf_gpt2(to_hf_gpt2(ours), cfg)
    assert back.cfg == cfg
    original, reloaded = ours.state_dict(), back.state_dict()
    assert set(original) == set(reloaded)
    for key in original:
        assert torch.equal(original[key], reloaded[key]), key


def test_exported_course_model_runs_in_transformers():
    # The course's default has no qkv bias and an untied head: exported with zero biases, it is still GPT-2.
    torch.manual_seed(4)
    cfg = GPTConfig(vocab_size=101, context_length=24, emb_dim=64, n_heads=4, n_layers=2)
    ours = GPTModel(cfg).eval()
    hf = transformers.GPT2LMHeadModel(
        transformers.GPT2Config(
            vocab_size=101,
            n_positions=24,
            n_embd=64,
            n_layer=2,
            n_head=4,
            tie_word_embeddings=False,
            attn_implementation="sdpa",
        )
    ).eval()
    hf.load_state_dict(to_hf_gpt2(ours))
    assert max_logit_diff(ours, hf, torch.randint(0, 101, (2, 24))) <= TOL
    assert from_hf_gpt2(to_hf_gpt2(ours), cfg).cfg == cfg  # zero biases load into a model without biases


def test_export_does_not_share_memory_with_the_model():
    ours = from_hf_gpt2(tiny_hf())
    exported = to_hf_gpt2(ours)
    exported["transformer.wte.weight"].zero_()
    assert ours.embedding.token_embedding.weight.abs().sum() > 0


# --- files and the download path ---------------------------------------------------------------------------


def test_safetensors_file_in_the_hub_layout(tmp_path):
    hf = tiny_hf()
    path = tmp_path / "model.safetensors"
    safetensors_torch.save_file(hub_layout(hf), str(path))
    (tmp_path / "config.json").write_text(json.dumps(hf.config.to_dict()))
    ours = from_hf_gpt2(path)
    assert ours.cfg.tie_weights and ours.cfg.n_layers == 3
    assert max_logit_diff(ours, hf, torch.randint(0, 101, (2, 24))) <= TOL
    assert from_hf_gpt2(str(path)).cfg == ours.cfg


def test_config_json_beside_the_file_gives_the_heads(tmp_path):
    hf = tiny_hf(n_embd=32, n_head=4)
    safetensors_torch.save_file(hub_layout(hf), str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match="do not say how many heads their width 32 is split into"):
        from_hf_gpt2(tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps(hf.config.to_dict()))
    ours = from_hf_gpt2(tmp_path / "model.safetensors")
    assert ours.cfg.n_heads == 4
    assert max_logit_diff(ours, hf, torch.randint(0, 101, (2, 24))) <= TOL


def test_load_openai_gpt2_downloads_through_the_hub_client(tmp_path, monkeypatch):
    import huggingface_hub

    # A small stand-in for OpenAI's file: 12 heads like GPT-2 124M, but 24 dimensions wide.
    hf = hf_gpt2(vocab_size=101, n_positions=32, n_embd=24, n_layer=2, n_head=12)
    path = tmp_path / "model.safetensors"
    safetensors_torch.save_file(hub_layout(hf), str(path))
    calls = []

    def fake_download(repo_id, filename, cache_dir=None, **kwargs):
        calls.append((repo_id, filename, cache_dir))
        return str(path)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    model = load_openai_gpt2(cache_dir=tmp_path)
    assert calls == [("openai-community/gpt2", "model.safetensors", tmp_path)]
    assert model.cfg.n_heads == 12 and model.cfg.emb_dim == 24
    ids = torch.randint(0, 101, (1, 6))
    assert max_logit_diff(model, hf, ids) <= TOL
    # ... and it generates what transformers' own greedy decoding gives.
    with torch.no_grad():
        expected = hf.generate(ids, max_new_tokens=10, do_sample=False, pad_token_id=0)
    assert torch.equal(generate(model, ids, 10), expected)


def test_download_failure_is_a_clear_error(monkeypatch):
    import huggingface_hub

    def offline(**kwargs):
        raise OSError("no network")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(RuntimeError, match="could not download openai-community/gpt2-medium.*from_hf_gpt2"):
        download_gpt2_weights("gpt2-medium")
    with pytest.raises(ValueError, match="unknown GPT-2 model"):
        download_gpt2_weights("gpt-5")


def test_importing_the_course_loads_no_optional_dependency():
    code = "import sys, llm_course; print(sorted(m for m in ('safetensors', 'transformers', 'huggingface_hub') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --- clear errors ------------------------------------------------------------------------------------------


def test_a_state_dict_that_is_not_gpt2_is_refused():
    with pytest.raises(ValueError, match="not a GPT-2 state dict"):
        from_hf_gpt2(
            GPTModel(GPTConfig(vocab_size=50, context_length=8, emb_dim=16, n_heads=2, n_layers=1)).state_dict()
        )
    with pytest.raises(TypeError, match="state dict"):
        from_hf_gpt2([1, 2, 3])
    with pytest.raises(FileNotFoundError, match="no GPT-2 weights file"):
        from_hf_gpt2("does/not/exist.safetensors")


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(emb_dim=64), "shape mismatch"),
        (dict(vocab_size=100), "shape mismatch"),
        (dict(context_length=32), "shape mismatch"),
        (dict(n_layers=4), "have 3 blocks but the config has n_layers=4"),
        (dict(n_layers=2), "have 3 blocks but the config has n_layers=2"),
        (dict(qkv_bias=False), "qkv_bias=False"),
        (dict(tie_weights=False), "lacks weights|shape"),
    ],
)
def test_mismatching_config_is_a_clear_error(overrides, message):
    hf = tiny_hf()
    weights = {k: v for k, v in hf.state_dict().items() if k != "lm_head.weight"}
    if overrides.get("tie_weights") is False:
        weights["lm_head.weight"] = torch.zeros(7, 128)  # a head of the wrong shape
    settings = dict(
        vocab_size=101, context_length=24, emb_dim=128, n_heads=2, n_layers=3, qkv_bias=True, tie_weights=True
    )
    with pytest.raises(ValueError, match=message):
        from_hf_gpt2(weights, GPTConfig(**{**settings, **overrides}))


def test_untied_weights_into_a_tied_config_are_refused():
    hf = tiny_hf(tie_word_embeddings=False)
    cfg = GPTConfig(
        vocab_size=101, context_length=24, emb_dim=128, n_heads=2, n_layers=3, qkv_bias=True, tie_weights=True
    )
    with pytest.raises(ValueError, match="tie_weights=False"):
        from_hf_gpt2(hf.state_dict(), cfg)


def test_missing_weights_are_named():
    weights = tiny_hf().state_dict()
    del weights["transformer.ln_f.bias"], weights["transformer.h.1.mlp.c_fc.weight"]
    cfg = GPTConfig(vocab_size=101, context_length=24, emb_dim=128, n_heads=2, n_layers=3, qkv_bias=True, tie_weights=True)
    with pytest.raises(ValueError, match=r"lacks weights for 2 parameters.*blocks\.1\.ff\.layers\.0\.weight"):
        from_hf_gpt2(weights, cfg)


def test_a_round_trip_keeps_the_heads_or_refuses_to_guess_them():
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=101, context_length=24, emb_dim=128, n_heads=4, n_layers=2, qkv_bias=True, drop_rate=0.0)
    ours = GPTModel(cfg).eval()
    exported = to_hf_gpt2(ours)
    with pytest.raises(ValueError, match="do not say how many heads their width 128 is split into"):
        from_hf_gpt2(exported)  # 4 heads of 32 would come back as 2 heads of 64: refused, not guessed
    back = from_hf_gpt2(exported, cfg)
    ids = torch.randint(0, 101, (2, 24))
    with torch.no_grad():
        assert torch.equal(back(ids), ours(ids))
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=101, n_positions=24, n_embd=128, n_layer=2,
                                                              n_head=4, tie_word_embeddings=False)).eval()  # fmt: skip
    hf.load_state_dict(exported)
    assert from_hf_gpt2(hf).cfg.n_heads == 4  # the model itself knows its heads


def test_weights_the_conversion_would_not_use_are_refused():
    hf = tiny_hf()
    weights = hf.state_dict()
    weights["transformer.h.0.attn.rotary.inv_freq"] = torch.ones(4)  # something GPT-2 has no place for
    with pytest.raises(ValueError, match=r"1 weights the course's model has no place for.*rotary"):
        from_hf_gpt2(weights, from_hf_gpt2(hf).cfg)
