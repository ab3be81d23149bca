"""The diagrams: each draws the labels and numbers it should, and lays its text out cleanly (inside the
figure, no text over another, every label inside its box or clear of all shapes, no missing glyph)."""

import itertools
import warnings

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import tiktoken  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Circle, FancyArrowPatch, Rectangle  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from llm_course import (  # noqa: E402
    GPTConfig,
    attention_diagram,
    gpt_diagram,
    llama_block_diagram,
    multihead_diagram,
    text_pipeline_diagram,
    transformer_block_diagram,
)

DIAGRAMS = {
    "text_pipeline": text_pipeline_diagram,
    "attention": attention_diagram,
    "attention_not_causal": lambda: attention_diagram(causal=False),
    "multihead": multihead_diagram,
    "multihead_8_heads": lambda: multihead_diagram(d_in=768, num_heads=8, seq_len=1024),
    "transformer_block": transformer_block_diagram,
    "transformer_block_gpt2_small": lambda: transformer_block_diagram(GPTConfig.gpt2_small()),
    "gpt": gpt_diagram,
    "gpt_gpt2_small_tied": lambda: gpt_diagram(GPTConfig.gpt2_small(tie_weights=True)),
    "llama_block": llama_block_diagram,
}


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def texts(fig: Figure) -> list[str]:
    return [t.get_text() for t in fig.findobj(Text) if t.get_text()]


def joined(fig: Figure) -> str:
    return "\n".join(texts(fig))


@pytest.mark.parametrize("name", DIAGRAMS)
def test_layout_is_clean(name):
    fig = DIAGRAMS[name]()
    assert isinstance(fig, Figure)
    width, height = fig.get_size_inches()
    assert 7 <= width <= 10.5 and 3 <= height <= 10.5, (width, height)
    renderer = fig.canvas.get_renderer()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns about every character its fonts lack
        fig.draw(renderer)
    labels = [t for t in fig.findobj(Text) if t.get_text()]
    assert min(t.get_fontsize() for t in labels) >= 9  # readable at the notebook's size
    extents = [t.get_window_extent(renderer) for t in labels]
    for t, box in zip(labels, extents):
        assert fig.bbox.x0 <= box.x0 and box.x1 <= fig.bbox.x1, f"{t.get_text()!r} is clipped left or right"
        assert fig.bbox.y0 <= box.y0 and box.y1 <= fig.bbox.y1, f"{t.get_text()!r} is clipped at the top or bottom"
    for (a, box_a), (b, box_b) in itertools.combinations(zip(labels, extents), 2):
        assert not box_a.overlaps(box_b), f"{a.get_text()!r} overlaps {b.get_text()!r}"
    # Every label lies either wholly inside a shape (its box or cell) or clear of all shapes.
    shapes = [p.get_window_extent(renderer) for p in fig.axes[0].patches if not isinstance(p, FancyArrowPatch)]
    for t, box in zip(labels, extents):
        inside = any(s.x0 <= box.x0 and box.x1 <= s.x1 and s.y0 <= box.y0 and box.y1 <= s.y1 for s in shapes)
        assert inside or not any(box.overlaps(s) for s in shapes), f"{t.get_text()!r} runs over a box's edge"


def test_text_pipeline_shows_the_real_gpt2_tokens():
    text = "Fellow-Citizens of the Senate"
    encoding = tiktoken.get_encoding("gpt2")
    ids = encoding.encode(text)
    fig = text_pipeline_diagram(text)
    drawn = texts(fig)
    for token_id in ids:
        assert str(token_id) in drawn
    for token_id in ids:
        assert encoding.decode([token_id]).replace(" ", "␣") in drawn
    assert drawn.count(str(ids[4])) == 2  # in the token ids and as the last target, not in the 4-token input
    everything = joined(fig)
    assert "(batch, seq, emb) = (8, 4, 256)" in everything
    assert "50,257 × 256" in everything and "4 × 256" in everything


def test_text_pipeline_follows_its_arguments():
    fig = text_pipeline_diagram("Gentlemen of the House of Representatives", context_length=6, batch_size=2,
                                emb_dim=768)
    everything = joined(fig)
    assert "(batch, seq, emb) = (2, 6, 768)" in everything and "6 × 768" in everything
    assert "a window of 6 token ids" in everything


def test_text_pipeline_refuses_a_text_too_short_for_the_window():
    with pytest.raises(ValueError, match="context_length=4"):
        text_pipeline_diagram("Hello", context_length=4)
    with pytest.raises(ValueError, match="shorter text"):
        text_pipeline_diagram("a " * 40)


def hatched_cells(fig: Figure) -> int:
    return sum(1 for p in fig.axes[0].patches if isinstance(p, Rectangle) and p.get_hatch())


def test_attention_shapes_and_mask():
    fig = attention_diagram()
    drawn = texts(fig)
    for token in ("To", "be", "prepared", "for", "war", "is"):
        assert drawn.count(token) == 2  # the rows of X and the columns of the weights
    assert "(6, 16)" in drawn and drawn.count("(6, 8)") == 4 and drawn.count("(6, 6)") == 2
    assert "causal mask" in joined(fig)
    # Both (6, 6) matrices hide the 15 cells above their diagonal.
    assert hatched_cells(fig) == 2 * 15


def test_attention_without_the_mask():
    fig = attention_diagram(tokens=["a", "b", "c"], d_in=32, d_out=4, causal=False)
    drawn = texts(fig)
    assert "(3, 32)" in drawn and drawn.count("(3, 4)") == 4
    assert hatched_cells(fig) == 0 and "causal mask" not in joined(fig)


def test_attention_refuses_bad_tokens():
    with pytest.raises(TypeError, match="split"):
        attention_diagram(tokens="To be")
    with pytest.raises(ValueError, match="2 to 8 tokens"):
        attention_diagram(tokens=["alone"])


def test_multihead_shapes_of_the_course_model():
    everything = joined(multihead_diagram())
    assert "W_qkv = Linear(256, 3 × 256)" in everything
    assert "all heads: (batch, 64, 768)" in everything
    assert "q, k, v: (batch, 4, 64, 64)" in everything and "√64" in everything
    assert "out_proj = Linear(256, 256)" in everything
    assert everything.count("head ") == 4


def test_multihead_follows_its_arguments():
    fig = multihead_diagram(d_in=32, d_out=16, num_heads=8, seq_len=17)
    everything = joined(fig)
    assert "W_qkv = Linear(32, 3 × 16)" in everything and "all heads: (batch, 17, 48)" in everything
    assert "q, k, v: (batch, 8, 17, 2)" in everything
    assert [f"head {h}" in everything for h in range(9)] == [True] * 8 + [False]


def test_multihead_refuses_heads_that_do_not_split_the_width():
    with pytest.raises(ValueError, match="num_heads=3"):
        multihead_diagram(d_in=256, num_heads=3)
    with pytest.raises(ValueError, match="seq_len"):
        multihead_diagram(seq_len=0)


def residual_sums(fig: Figure) -> int:
    return sum(1 for p in fig.axes[0].patches if isinstance(p, Circle))


def test_transformer_block_of_the_course_model():
    fig = transformer_block_diagram()
    drawn, everything = texts(fig), joined(fig)
    assert "x  (batch, 64, 256)" in drawn and "output  (batch, 64, 256)" in drawn
    assert "4 heads × 64 dimensions" in everything
    assert "Linear  256 → 1,024" in drawn and "Linear  1,024 → 256" in drawn and "(batch, 64, 1024)" in drawn
    assert drawn.count("LayerNorm") == 2 and drawn.count("dropout") == 2 + 1 and "GELU" in drawn  # + the legend
    assert drawn.count("shortcut") == 2 and residual_sums(fig) == 2


def test_transformer_block_follows_the_config():
    cfg = GPTConfig(context_length=32, emb_dim=96, n_heads=3)
    everything = joined(transformer_block_diagram(cfg))
    assert "(batch, 32, 96)" in everything and "3 heads × 32 dimensions" in everything
    assert "Linear  96 → 384" in everything and "(batch, 64" not in everything


def course_parameters(cfg: GPTConfig) -> int:
    """GPTModel's parameter count, by hand: embeddings, blocks, final norm, output head."""
    emb, hidden = cfg.emb_dim, 4 * cfg.emb_dim
    attention = 3 * emb * emb + (3 * emb if cfg.qkv_bias else 0) + emb * emb + emb  # W_qkv, out_proj
    feed_forward = emb * hidden + hidden + hidden * emb + emb
    block = attention + feed_forward + 2 * 2 * emb  # two layer norms, scale and shift each
    head = 0 if cfg.tie_weights else emb * cfg.vocab_size
    return cfg.vocab_size * emb + cfg.context_length * emb + cfg.n_layers * block + 2 * emb + head


def test_gpt_diagram_of_the_course_model():
    cfg = GPTConfig()
    fig = gpt_diagram()
    drawn, everything = texts(fig), joined(fig)
    assert "2 × transformer block" in everything and "token embedding\n50,257 × 256" in drawn
    assert "position embedding\n64 × 256" in drawn and "logits  (batch, 64, 50257)" in drawn
    assert drawn.count("(batch, 64, 256)") == 3
    counts = {int(t.replace(",", "").split()[0]) for t in drawn if t.strip()[:1].isdigit() and "," in t}
    assert course_parameters(cfg) == 27_326_464 and 27_326_464 in counts
    assert 50257 * 256 in counts  # the output head


def test_gpt_diagram_follows_the_config():
    cfg = GPTConfig(context_length=32, emb_dim=128, n_heads=2, n_layers=3, tie_weights=True)
    fig = gpt_diagram(cfg)
    drawn, everything = texts(fig), joined(fig)
    assert "3 × transformer block" in everything and "logits  (batch, 32, 50257)" in drawn
    assert drawn.count("(batch, 32, 128)") == 3 and "shares the token embedding" in everything
    assert f"{course_parameters(cfg):>12,} in all" in drawn


def test_gpt_diagram_refuses_a_wrong_config():
    with pytest.raises(TypeError, match="GPTConfig"):
        gpt_diagram({"emb_dim": 256})


def test_llama_block_beside_gpt2():
    fig = llama_block_diagram()
    drawn, everything = texts(fig), joined(fig)
    assert "GPT-2 block" in drawn and "Llama block" in drawn
    assert drawn.count("LayerNorm") == 2 and drawn.count("RMSNorm") == 2
    assert "grouped-query causal attention" in everything and "RoPE rotates queries and keys" in everything
    assert "Linear  gate" in drawn and "Linear  up" in drawn and "SiLU(gate) * up" in drawn
    assert drawn.count("dropout") == 2 + 1  # GPT-2's boxes and the legend
    assert residual_sums(fig) == 4 and drawn.count("shortcut") == 4


def test_user_text_is_drawn_verbatim():
    # A $ in the user's text is a dollar sign, not the start of a formula ("$5^ or $" is no valid formula).
    fig = text_pipeline_diagram("Pay $5^ or $6 now")
    fig.canvas.draw()
    assert "'Pay $5^ or $6 now'" in texts(fig)
