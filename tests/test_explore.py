"""Chapter 4 exploration widgets: the sliders and the attention viewer show what the plain functions compute."""

import matplotlib

matplotlib.use("Agg")

import pytest
import torch

from llm_course import (
    AttentionViewer,
    GPTConfig,
    GPTModel,
    SamplingExplorer,
    collect_attention,
    next_token_choices,
    next_token_probs,
    next_token_table,
    prompt_logits,
    set_seed,
    text_to_token_ids,
)
from tiny_setup import TOKENIZER


CFG = GPTConfig(vocab_size=128, context_length=16, emb_dim=16, n_heads=2, n_layers=2)
PROMPT = "The Union"


@pytest.fixture(scope="module")
def model():
    set_seed(0)
    model = GPTModel(CFG)
    with torch.no_grad():
        model.out_head.weight.mul_(200)  # a peaked next-token distribution, so the filters change it
    return model


def bar_heights(figure):
    return [patch.get_width() for patch in figure.axes[0].patches]


def test_prompt_logits_are_the_models_last_position(model):
    model.train()
    logits = prompt_logits(model, TOKENIZER, PROMPT)
    assert model.training  # put back in its mode
    model.eval()
    with torch.no_grad():
        expected = model(text_to_token_ids(PROMPT, TOKENIZER))[:, -1, :]
    assert logits.shape == (1, CFG.vocab_size) and torch.equal(logits, expected)


def test_choices_are_next_token_probs_and_match_the_table_without_filters(model):
    logits = prompt_logits(model, TOKENIZER, PROMPT)
    probs = next_token_probs(logits, 0.7, 5, 0.9)[0]
    choices = next_token_choices(logits, TOKENIZER, 0.7, 5, 0.9, k=8)
    kept = int((probs > 0).sum())
    assert 1 <= kept <= 5 and len(choices) == kept  # tokens the filters ruled out are no candidates
    assert [p for _, p in choices] == torch.sort(probs, descending=True).values[:kept].tolist()
    assert len(next_token_choices(logits, TOKENIZER, temperature=0.0, k=8)) == 1  # greedy: one candidate
    assert [TOKENIZER.encode(token)[0] for token, p in choices] == probs.nonzero().flatten()[
        torch.argsort(probs[probs > 0], descending=True)
    ].tolist()
    plain = next_token_choices(logits, TOKENIZER, k=5)
    table = next_token_table(model, TOKENIZER, PROMPT, k=5)
    assert [t for t, _ in plain] == [t for t, _ in table]
    assert [p for _, p in plain] == pytest.approx([p for _, p in table], abs=1e-6)


@pytest.mark.parametrize(
    "temperature, top_k, top_p, expected_args",
    [(1.0, 0, 1.0, (1.0, None, None)), (0.5, 3, 1.0, (0.5, 3, None)), (1.5, 0, 0.6, (1.5, None, 0.6)),
     (0.0, 7, 0.3, (0.0, 7, 0.3))],
)
def test_moving_the_sliders_shows_the_plain_functions_numbers(model, temperature, top_k, top_p, expected_args):
    explorer = SamplingExplorer(model, TOKENIZER, PROMPT, k=6)
    explorer.temperature.value, explorer.top_k.value, explorer.top_p.value = temperature, top_k, top_p
    expected = next_token_choices(prompt_logits(model, TOKENIZER, PROMPT), TOKENIZER, *expected_args, k=6)
    assert explorer.choices == expected  # the slider callbacks ran and computed the same numbers
    assert bar_heights(explorer.figure) == pytest.approx([p for _, p in expected])
    assert explorer.update() == expected
    assert bytes(explorer.image.value).startswith(b"\x89PNG")
    text = repr(explorer)
    assert f"temperature {temperature:.3g}" in text and all(f"{p:.3f}" in text for _, p in expected)
    assert explorer._repr_mimebundle_()["text/plain"] == text


def test_the_explorer_writes_slider_values_as_a_person_would_and_draws_sharp_images(model):
    explorer = SamplingExplorer(model, TOKENIZER, PROMPT, k=6)
    explorer.top_p.value = 0.9000000000000001  # what a browser's slider sends back
    text = repr(explorer)
    assert "top_p 0.9" in text and "0.9000000000000001" not in text
    title = explorer.figure.axes[0].get_title()
    assert "top_p 0.9" in title and "0.9000000000000001" not in title
    png = bytes(explorer.image.value)
    width = int.from_bytes(png[16:20], "big")  # the PNG header's image width
    assert explorer.image.layout.width == f"{width // 2}px"  # twice as many pixels as it is shown wide


def test_filters_visibly_cut_the_bars(model):
    explorer = SamplingExplorer(model, TOKENIZER, PROMPT, k=6)
    explorer.top_k.value = 2
    heights = bar_heights(explorer.figure)
    assert sum(h > 0 for h in heights) == 2 and sum(heights) == pytest.approx(1.0)
    explorer.top_k.value, explorer.temperature.value = 0, 0.0
    assert bar_heights(explorer.figure)[0] == 1.0 and sum(bar_heights(explorer.figure)) == 1.0  # greedy


def test_collect_attention_equals_each_layers_attention_by_hand(model):
    ids = text_to_token_ids(PROMPT, TOKENIZER)
    model.train()
    weights = collect_attention(model, ids)
    assert model.training
    assert weights.shape == (CFG.n_layers, 1, CFG.n_heads, ids.shape[1], ids.shape[1])
    model.eval()
    with torch.no_grad():
        x = model.drop_emb(model.embedding(ids))
        for layer, block in enumerate(model.blocks):
            context, expected = block.att(block.norm1(x), return_weights=True)
            assert torch.equal(weights[layer], expected)
            # The block's forward with the explicit attention path (the fused one differs in the last bits).
            x = x + block.drop_resid(context)
            x = x + block.drop_resid(block.ff(block.norm2(x)))
        # the hooks are gone: the model runs as before
        assert not any(block.att._forward_hooks or block.att._forward_pre_hooks for block in model.blocks)
    assert torch.allclose(weights.sum(-1), torch.ones(()))  # each query's weights sum to 1
    assert torch.all(weights.triu(diagonal=1) == 0)  # causal


def test_the_attention_viewer_shows_the_picked_layer_and_head(model):
    viewer = AttentionViewer(model, TOKENIZER, PROMPT)
    assert viewer.tokens == list(PROMPT)
    weights = collect_attention(model, text_to_token_ids(PROMPT, TOKENIZER))
    viewer.layer.value, viewer.head.value = 1, 1
    assert viewer.shown == (1, 1)
    image = viewer.figure.axes[0].images[0]
    assert torch.equal(torch.as_tensor(image.get_array().data), weights[1, 0, 1])
    assert viewer.figure.axes[0].get_title() == "layer 1, head 1"
    assert torch.equal(viewer.update(0, 1), weights[0, 0, 1])
    assert "layer 0, head 1" in repr(viewer)
    assert repr(viewer).endswith(f"{viewer.tokens[-1]!r} {weights[0, 0, 1, -1, -1]:.2f}")


def test_a_long_prompt_still_fits_on_the_screen():
    set_seed(0)
    long_context = GPTModel(GPTConfig(vocab_size=128, context_length=40, emb_dim=16, n_heads=2, n_layers=1))
    viewer = AttentionViewer(long_context, TOKENIZER, "x" * 40)  # 40 tokens: 14 inches at 0.3 per token
    assert len(viewer.tokens) == 40 and viewer.figure.get_figheight() == 7.0


def test_the_widgets_need_a_prompt(model):
    with pytest.raises(ValueError, match="prompt is empty"):
        AttentionViewer(model, TOKENIZER, "")
    with pytest.raises(ValueError, match="prompt is empty"):
        SamplingExplorer(model, TOKENIZER, "")
