"""Chapters 2 and 3: self-attention, causal attention, multi-head attention and the heat-map helpers."""

import matplotlib

matplotlib.use("Agg")  # this module draws figures without a display; set here, not for the whole test run

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from llm_course import (  # noqa: E402
    CausalAttention,
    MultiHeadAttentionWrapper,
    MultiHeadCausalAttention,
    SelfAttentionV1,
    SelfAttentionV2,
    attention_weights,
    causal_attention,
    causal_mask,
    plot_attention,
    plot_attention_heads,
)

D_IN, D_OUT, CONTEXT, HEADS = 12, 8, 16, 4


def make(kind: str, dropout: float = 0.0, seed: int = 0) -> torch.nn.Module:
    """A freshly initialised causal module of each kind, all with input width D_IN."""
    torch.manual_seed(seed)
    if kind == "causal":
        return CausalAttention(D_IN, D_OUT, CONTEXT, dropout)
    if kind == "wrapper":
        return MultiHeadAttentionWrapper(D_IN, D_OUT, CONTEXT, dropout, HEADS)
    return MultiHeadCausalAttention(D_IN, D_OUT, CONTEXT, dropout, HEADS, qkv_bias=True)


CAUSAL_KINDS = ["causal", "wrapper", "mha"]


def run(module: torch.nn.Module, x: torch.Tensor, explicit: bool) -> torch.Tensor:
    return module(x, return_weights=True)[0] if explicit else module(x)


def copy_wrapper_into_mha(wrapper: MultiHeadAttentionWrapper, mha: MultiHeadCausalAttention) -> None:
    """Stack the heads' projection rows and make out_proj the identity, so both compute one function."""
    with torch.no_grad():
        # W_qkv's rows: the queries of every head, then the keys, then the values.
        names = ("W_query", "W_key", "W_value")
        mha.W_qkv.weight.copy_(torch.cat([getattr(head, name).weight for name in names for head in wrapper.heads]))
        mha.out_proj.weight.copy_(torch.eye(mha.out_proj.in_features))
        mha.out_proj.bias.zero_()


@pytest.mark.parametrize("explicit", [False, True], ids=["sdpa", "explicit"])
@pytest.mark.parametrize("kind", CAUSAL_KINDS)
@pytest.mark.parametrize("seq", [1, 5, CONTEXT])
def test_changing_the_future_leaves_the_past_unchanged(kind, seq, explicit):
    module = make(kind).eval()
    generator = torch.Generator().manual_seed(seq)
    x = torch.randn(3, seq, D_IN, generator=generator)
    before = run(module, x, explicit)
    for t in range(seq):
        changed = x.clone()
        changed[:, t + 1 :] = torch.randn(3, seq - t - 1, D_IN, generator=generator)
        after = run(module, changed, explicit)
        torch.testing.assert_close(after[:, : t + 1], before[:, : t + 1], rtol=0, atol=1e-6)
        if t + 1 < seq:  # the test could fail: later positions do see the change
            assert not torch.allclose(after[:, t + 1 :], before[:, t + 1 :], atol=1e-4)


@pytest.mark.parametrize("kind", CAUSAL_KINDS)
@pytest.mark.parametrize("seq", [1, 7, CONTEXT])
def test_explicit_and_fused_paths_agree(kind, seq):
    module = make(kind).eval()
    x = torch.randn(2, seq, D_IN, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(module(x), module(x, return_weights=True)[0], rtol=0, atol=1e-6)


def test_causal_attention_over_the_last_queries_only():
    # Queries for the last 3 positions against all keys (as a key/value cache does) with the mask's last rows.
    torch.manual_seed(2)
    q, k, v = torch.randn(3, 2, 9, 4).unbind(0)
    mask = causal_mask(9)
    full = causal_attention(q, k, v, mask, torch.nn.Dropout(0.0), return_weights=True)[0]
    for explicit in (True, False):
        last = causal_attention(q[:, -3:], k, v, mask[-3:], torch.nn.Dropout(0.0), return_weights=explicit)
        last = last[0] if explicit else last
        torch.testing.assert_close(last, full[:, -3:], rtol=0, atol=1e-6)


def test_attention_weights_match_a_direct_computation():
    torch.manual_seed(3)
    q, k = torch.randn(5, 8), torch.randn(6, 8)
    expected = torch.exp(q @ k.T / 8**0.5)
    expected = expected / expected.sum(dim=-1, keepdim=True)
    torch.testing.assert_close(attention_weights(q, k), expected)
    mask = torch.zeros(5, 6, dtype=torch.bool)
    mask[:, 4:] = True
    masked = expected[:, :4] / expected[:, :4].sum(dim=-1, keepdim=True)
    weights = attention_weights(q, k, mask)
    torch.testing.assert_close(weights[:, :4], masked)
    assert (weights[:, 4:] == 0).all()


def test_the_fused_path_matches_pytorch_reference():
    module = make("mha").eval()
    x = torch.randn(2, 10, D_IN, generator=torch.Generator().manual_seed(4))
    q, k, v = module.qkv_heads(x)
    reference = F.scaled_dot_product_attention(q, k, v, attn_mask=~causal_mask(10))
    expected = module.out_proj(reference.transpose(1, 2).reshape(2, 10, D_OUT))
    torch.testing.assert_close(module(x), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", ["v1", "v2"] + CAUSAL_KINDS)
def test_attention_rows_sum_to_one(kind):
    torch.manual_seed(5)
    module = {"v1": lambda: SelfAttentionV1(D_IN, D_OUT), "v2": lambda: SelfAttentionV2(D_IN, D_OUT)}.get(
        kind, lambda: make(kind, dropout=0.5)
    )().eval()
    x = torch.randn(2, 9, D_IN)
    _, weights = module(x, return_weights=True)
    assert weights.shape[-2:] == (9, 9)
    torch.testing.assert_close(weights.sum(dim=-1), torch.ones(weights.shape[:-1]))
    assert (weights >= 0).all()
    if kind in CAUSAL_KINDS:
        assert (weights[..., causal_mask(9)] == 0).all()


@pytest.mark.parametrize("explicit", [False, True], ids=["sdpa", "explicit"])
@pytest.mark.parametrize("kind", CAUSAL_KINDS)
def test_dropout_acts_only_in_train_mode(kind, explicit):
    module = make(kind, dropout=0.5)
    x = torch.randn(2, CONTEXT, D_IN, generator=torch.Generator().manual_seed(6))
    module.eval()
    assert torch.equal(run(module, x, explicit), run(module, x, explicit))
    reference = make(kind, dropout=0.0).eval()
    torch.testing.assert_close(run(module, x, explicit), run(reference, x, explicit))
    module.train()
    torch.manual_seed(7)
    first = run(module, x, explicit)
    second = run(module, x, explicit)
    assert not torch.allclose(first, second)
    assert not torch.allclose(first, run(reference, x, explicit))


def test_dropout_zeroes_and_rescales_the_returned_weights():
    module = make("causal", dropout=0.5).train()
    x = torch.randn(4, CONTEXT, D_IN, generator=torch.Generator().manual_seed(8))
    torch.manual_seed(8)
    _, weights = module(x, return_weights=True)
    _, eval_weights = module.eval()(x, return_weights=True)
    visible = ~causal_mask(CONTEXT)
    dropped = (weights[:, visible] == 0).float().mean().item()
    assert 0.4 < dropped < 0.6
    # the kept weights are scaled by 1 / (1 - p) so that their expected value is unchanged
    kept = weights != 0
    torch.testing.assert_close(weights[kept] * 0.5, eval_weights[kept])


def test_self_attention_v1_and_v2_agree_with_copied_weights():
    torch.manual_seed(9)
    v1, v2 = SelfAttentionV1(D_IN, D_OUT), SelfAttentionV2(D_IN, D_OUT)
    with torch.no_grad():
        for name in ("W_query", "W_key", "W_value"):
            getattr(v1, name).copy_(getattr(v2, name).weight.T)  # nn.Linear stores (d_out, d_in)
    x = torch.randn(2, 7, D_IN)
    torch.testing.assert_close(v1(x), v2(x))
    torch.testing.assert_close(v1(x, return_weights=True)[1], v2(x, return_weights=True)[1])
    assert not torch.allclose(v1(x), SelfAttentionV1(D_IN, D_OUT)(x))  # the copy is what makes them agree


@pytest.mark.parametrize("explicit", [False, True], ids=["sdpa", "explicit"])
def test_wrapper_and_efficient_mha_agree_with_copied_weights(explicit):
    torch.manual_seed(10)
    head_dim = D_OUT // HEADS
    wrapper = MultiHeadAttentionWrapper(D_IN, head_dim, CONTEXT, 0.0, HEADS).eval()
    mha = MultiHeadCausalAttention(D_IN, D_OUT, CONTEXT, 0.0, HEADS).eval()
    x = torch.randn(3, 11, D_IN)
    assert not torch.allclose(run(wrapper, x, explicit), run(mha, x, explicit), atol=1e-3)
    copy_wrapper_into_mha(wrapper, mha)
    torch.testing.assert_close(run(mha, x, explicit), run(wrapper, x, explicit), rtol=0, atol=1e-6)
    torch.testing.assert_close(mha(x, return_weights=True)[1], wrapper(x, return_weights=True)[1])


def test_output_shapes():
    x = torch.randn(2, 5, D_IN)
    assert SelfAttentionV1(D_IN, D_OUT)(x).shape == (2, 5, D_OUT)
    assert make("causal")(x).shape == (2, 5, D_OUT)
    out, weights = make("wrapper")(x, return_weights=True)
    assert out.shape == (2, 5, HEADS * D_OUT) and weights.shape == (2, HEADS, 5, 5)
    out, weights = make("mha")(x, return_weights=True)
    assert out.shape == (2, 5, D_OUT) and weights.shape == (2, HEADS, 5, 5)


def test_mask_is_not_saved_in_checkpoints():
    assert "mask" not in make("causal").state_dict()
    assert not any(key.endswith("mask") for key in make("mha").state_dict())


def test_d_out_must_be_divisible_by_num_heads():
    with pytest.raises(ValueError, match="divisible by num_heads"):
        MultiHeadCausalAttention(D_IN, 10, CONTEXT, 0.0, num_heads=4)
    for cls in (MultiHeadCausalAttention, MultiHeadAttentionWrapper):
        with pytest.raises(ValueError, match="num_heads must be at least 1"):
            cls(D_IN, D_OUT, CONTEXT, 0.0, num_heads=0)


@pytest.mark.parametrize("kind", CAUSAL_KINDS)
def test_sequences_longer_than_the_context_are_refused(kind):
    with pytest.raises(ValueError, match=f"exceeds context_length {CONTEXT}"):
        make(kind)(torch.randn(1, CONTEXT + 1, D_IN))


@pytest.mark.parametrize("kind", ["v1", "v2"] + CAUSAL_KINDS)
def test_inputs_of_the_wrong_rank_or_width_are_refused(kind):
    module = {"v1": lambda: SelfAttentionV1(D_IN, D_OUT), "v2": lambda: SelfAttentionV2(D_IN, D_OUT)}.get(
        kind, lambda: make(kind)
    )()
    with pytest.raises(ValueError, match=r"x\.unsqueeze\(0\)"):
        module(torch.randn(5, D_IN))
    with pytest.raises(ValueError, match=r"shape \(batch, seq, 12\)"):
        module(torch.randn(1, 2, 5, D_IN))
    with pytest.raises(ValueError, match="the last dimension must equal the d_in=12"):
        module(torch.randn(1, 5, D_IN + 1))
    with pytest.raises(TypeError, match="torch.Tensor"):
        module([[0.0] * D_IN])


def test_plot_attention_labels_both_axes_with_the_tokens():
    tokens = ["To", " be", " prepared", "\n"]
    weights = make("causal").eval()(torch.randn(1, 4, D_IN), return_weights=True)[1][0]
    fig = plot_attention(weights, tokens, title="one head")
    try:
        assert len(fig.axes) == 2  # the heat map and its colour bar
        ax = fig.axes[0]
        expected = ["To", " be", " prepared", "\\n"]
        assert [label.get_text() for label in ax.get_xticklabels()] == expected
        assert [label.get_text() for label in ax.get_yticklabels()] == expected
        assert ax.get_title() == "one head"
        assert ax.images[0].get_array().shape == (4, 4)
    finally:
        plt.close(fig)


def test_plot_attention_draws_into_a_given_axis():
    fig, (left, right) = plt.subplots(1, 2)
    try:
        returned = plot_attention(torch.eye(3), ["a", "b", "c"], ax=right)
        assert returned is fig
        assert len(fig.axes) == 3 and not left.images and right.images
    finally:
        plt.close(fig)


def test_plot_attention_heads_draws_one_panel_per_head():
    tokens = [f"t{i}" for i in range(6)]
    weights = make("mha").eval()(torch.randn(1, 6, D_IN), return_weights=True)[1][0]
    head_weights = torch.cat([weights, weights[:1]])  # 5 heads in a 2 x 3 grid: the last panel is removed
    fig = plot_attention_heads(head_weights, tokens, ncols=3)
    try:
        panels = [ax for ax in fig.axes if ax.images]
        assert len(panels) == 5 and len(fig.axes) == 6  # five heads and one shared colour bar
        assert [ax.get_title() for ax in panels] == [f"head {h}" for h in range(5)]
        # token labels (matplotlib lists only the visible ones) on the left column and under each column
        x_labelled = [[label.get_text() for label in ax.get_xticklabels()] == tokens for ax in panels]
        y_labelled = [[label.get_text() for label in ax.get_yticklabels()] == tokens for ax in panels]
        assert x_labelled == [False, False, True, True, True]  # head 2 has no panel below it
        assert y_labelled == [True, False, False, True, False]
        assert all(ax.get_xticklabels() == [] for ax, labelled in zip(panels, x_labelled) if not labelled)
    finally:
        plt.close(fig)


def test_plot_helpers_refuse_mismatched_shapes():
    with pytest.raises(ValueError, match="weights\\[0\\]"):
        plot_attention(torch.rand(1, 3, 3), ["a", "b", "c"])
    with pytest.raises(ValueError, match="2 tokens for weights over 3 positions"):
        plot_attention(torch.rand(3, 3), ["a", "b"])
    with pytest.raises(ValueError, match="num_heads, seq, seq"):
        plot_attention_heads(torch.rand(3, 3), ["a", "b", "c"])
    plt.close("all")
