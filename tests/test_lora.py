"""Chapter 6: LoRA from scratch: the wrapped layer, adding and merging it in a GPTModel, which parameters
train, and agreement with Hugging Face's peft (a test-only reference)."""

import copy
import math

import pytest
import torch
from torch import nn

from llm_course import (
    LORA_TARGETS,
    GPTConfig,
    GPTModel,
    LoRALinear,
    add_lora,
    classification_loss,
    collate_classification,
    count_trainable_parameters,
    load_checkpoint,
    make_classifier,
    merge_lora,
    save_checkpoint,
    to_hf_gpt2,
)

EMB, LAYERS, RANK, ALPHA = 16, 2, 4, 8
CFG = GPTConfig(vocab_size=64, context_length=12, emb_dim=EMB, n_heads=2, n_layers=LAYERS, drop_rate=0.0)


def base_classifier(seed: int = 0) -> GPTModel:
    torch.manual_seed(seed)
    return make_classifier(GPTModel(CFG), 3).eval()


def batch(seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    examples = [(torch.randint(0, 64, (n,), generator=generator).tolist(), n % 3) for n in (3, 12, 7, 5)]
    return collate_classification(examples)


def train_a_little(model: GPTModel, steps: int = 5) -> None:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for step in range(steps):
        optimizer.zero_grad()
        classification_loss(model, batch(step)).backward()
        optimizer.step()
    model.eval()


# --- LoRALinear -------------------------------------------------------------------------------------------------


def test_lora_linear_starts_as_the_wrapped_layer():
    torch.manual_seed(0)
    linear = nn.Linear(64, 48)
    lora = LoRALinear(linear, rank=8, alpha=16)
    x = torch.randn(5, 7, 64)
    assert torch.equal(lora(x), linear(x))
    assert torch.equal(lora.lora_B, torch.zeros(48, 8)) and lora.lora_A.shape == (8, 64)
    # Kaiming-uniform with a = sqrt(5), as nn.Linear: bound = sqrt(6 / ((1 + 5) * fan_in)) = 1 / sqrt(fan_in).
    bound = 1 / math.sqrt(64)
    assert 0.9 * bound < lora.lora_A.abs().max().item() <= bound
    assert not linear.weight.requires_grad and not linear.bias.requires_grad


def test_lora_linear_adds_the_scaled_low_rank_update():
    torch.manual_seed(0)
    linear = nn.Linear(10, 6)
    lora = LoRALinear(linear, rank=2, alpha=3)
    with torch.no_grad():
        lora.lora_B.normal_()
    x = torch.randn(4, 10)
    # The same layer with the update folded into one weight matrix: W + (alpha / rank) * B A.
    weight = linear.weight + 1.5 * lora.lora_B @ lora.lora_A
    assert torch.allclose(lora(x), x @ weight.T + linear.bias, atol=1e-6)


@pytest.mark.parametrize("rank, alpha, message", [(0, 1, "rank must be"), (7, 1, "rank must be"), (2, 0, "alpha"), (2, True, "alpha")])
def test_lora_linear_bad_arguments(rank, alpha, message):
    with pytest.raises(ValueError, match=message):
        LoRALinear(nn.Linear(6, 4), rank, alpha)
    with pytest.raises(TypeError, match="wraps an nn.Linear"):
        LoRALinear(nn.Conv1d(2, 2, 1), 1, 1)


# --- add_lora and merge_lora ----------------------------------------------------------------------------------


def test_add_lora_starts_exactly_at_the_base_model():
    base = base_classifier()
    lora = add_lora(copy.deepcopy(base), RANK, ALPHA)
    ids = batch().input_ids
    with torch.no_grad():
        assert torch.equal(lora(ids), base(ids))
    wrapped = [name for name, module in lora.named_modules() if isinstance(module, LoRALinear)]
    assert wrapped == [f"blocks.{i}.{target}" for i in range(LAYERS) for target in LORA_TARGETS]


def test_only_lora_matrices_and_the_head_get_gradients():
    model = add_lora(base_classifier(), RANK, ALPHA)
    classification_loss(model, batch()).backward()
    with_grad = {name for name, p in model.named_parameters() if p.grad is not None}
    expected = {f"blocks.{i}.{t}.lora_{m}" for i in range(LAYERS) for t in LORA_TARGETS for m in "AB"} | {"out_head.weight"}
    assert with_grad == expected
    assert {name for name, p in model.named_parameters() if p.requires_grad} == expected
    # rank * (in + out) per layer: W_qkv e -> 3e, out_proj e -> e, feed-forward e -> 4e and 4e -> e; head 3e.
    assert count_trainable_parameters(model) == LAYERS * RANK * (4 + 2 + 5 + 5) * EMB + 3 * EMB


def test_train_head_false_freezes_the_head():
    model = add_lora(base_classifier(), RANK, ALPHA, train_head=False)
    assert not model.out_head.weight.requires_grad
    assert count_trainable_parameters(model) == LAYERS * RANK * 16 * EMB


def test_merged_model_computes_what_the_trained_lora_model_did(tmp_path):
    base = base_classifier()
    model = add_lora(copy.deepcopy(base), RANK, ALPHA)
    train_a_little(model)
    assert model.blocks[0].att.W_qkv.lora_B.abs().sum() > 0  # training moved B away from zero
    assert torch.equal(model.blocks[0].att.W_qkv.linear.weight, base.blocks[0].att.W_qkv.weight)  # frozen
    ids = batch(seed=9).input_ids
    with torch.no_grad():
        unmerged = model(ids)
        merge_lora(model)
        merged = model(ids)
    assert torch.allclose(merged, unmerged, atol=1e-5, rtol=0)
    assert not any(isinstance(module, LoRALinear) for module in model.modules())
    assert model.state_dict().keys() == base.state_dict().keys()
    loaded, _ = load_checkpoint(save_checkpoint(tmp_path / "lora.pt", model))
    with torch.no_grad():
        assert torch.equal(loaded(ids), merged)


def test_custom_targets():
    model = add_lora(base_classifier(), RANK, ALPHA, targets=("att.W_qkv",))
    wrapped = [name for name, module in model.named_modules() if isinstance(module, LoRALinear)]
    assert wrapped == [f"blocks.{i}.att.W_qkv" for i in range(LAYERS)]


def test_add_lora_bad_input():
    with pytest.raises(ValueError, match="LoRA targets must name linear layers of a block \\(att.W_qkv"):
        add_lora(base_classifier(), RANK, ALPHA, targets=("att.W_query",))
    model = add_lora(base_classifier(), RANK, ALPHA)
    with pytest.raises(ValueError, match="already has LoRA layers"):
        add_lora(model, RANK, ALPHA)
    with pytest.raises(TypeError, match="add_lora expects a GPTModel"):
        add_lora(nn.Linear(2, 2), RANK, ALPHA)


# --- agreement with peft ----------------------------------------------------------------------------------------


def random_lora_update(model: nn.Module) -> None:
    """Give every LoRA B matrix random values, so that the comparison sees the update and not only zeros."""
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.1)


def test_lora_linear_agrees_with_peft():
    peft = pytest.importorskip("peft", reason="peft is the test-only reference (requirements-dev.txt)")
    torch.manual_seed(0)
    ours = LoRALinear(nn.Linear(20, 12), rank=4, alpha=6)
    random_lora_update(ours)
    reference = peft.get_peft_model(
        nn.Sequential(copy.deepcopy(ours.linear).requires_grad_(True)),
        peft.LoraConfig(r=4, lora_alpha=6, target_modules=["0"], lora_dropout=0.0),
    )
    layer = reference.base_model.model[0]
    assert layer.scaling["default"] == 6 / 4
    with torch.no_grad():
        layer.lora_A["default"].weight.copy_(ours.lora_A)
        layer.lora_B["default"].weight.copy_(ours.lora_B)
    x = torch.randn(3, 5, 20)
    with torch.no_grad():
        assert torch.allclose(ours(x), reference(x), atol=1e-6, rtol=0)


def test_lora_gpt_agrees_with_peft_on_transformers_gpt2():
    peft = pytest.importorskip("peft", reason="peft is the test-only reference (requirements-dev.txt)")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    ours = GPTModel(CFG).eval()  # a language model: to_hf_gpt2 exports the vocabulary head
    hf = transformers.GPT2LMHeadModel(
        transformers.GPT2Config(
            vocab_size=64, n_positions=12, n_embd=EMB, n_layer=LAYERS, n_head=2, tie_word_embeddings=False,
            bos_token_id=0, eos_token_id=0, attn_implementation="sdpa",
        )
    ).eval()
    hf.load_state_dict(to_hf_gpt2(ours))
    ids = torch.randint(0, 64, (2, 12))
    with torch.no_grad():
        base_logits = ours(ids)
    add_lora(ours, RANK, ALPHA, train_head=False)
    random_lora_update(ours)
    # GPT-2's Conv1D layers store their weights transposed (fan_in_fan_out); peft's A and B have our shapes.
    config = peft.LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=["c_attn", "c_proj", "c_fc"], lora_dropout=0.0, fan_in_fan_out=True)
    reference = peft.get_peft_model(hf, config).eval()
    hf_names = {"att.W_qkv": "attn.c_attn", "att.out_proj": "attn.c_proj", "ff.layers.0": "mlp.c_fc", "ff.layers.2": "mlp.c_proj"}
    with torch.no_grad():
        for i, block in enumerate(ours.blocks):
            for target, hf_name in hf_names.items():
                layer = reference.base_model.model.transformer.h[i].get_submodule(hf_name)
                layer.lora_A["default"].weight.copy_(block.get_submodule(target).lora_A)
                layer.lora_B["default"].weight.copy_(block.get_submodule(target).lora_B)
    with torch.no_grad():
        logits = ours(ids)
        assert torch.allclose(logits, reference(ids).logits, atol=1e-5, rtol=0)
    assert (logits - base_logits).abs().max() > 1e-3  # the LoRA update changes the outputs: the check is not vacuous
