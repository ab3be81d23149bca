"""Chapter 1: diagrams of the course's pipeline and models (used by chapters 1 to 4 and 8).

Each public function draws one diagram with plain matplotlib and returns its figure; a notebook shows it
with `plt.show()`. Where a diagram depicts the course model, its tensor shapes are the real ones of a
GPTConfig. Every diagram uses the same colour for the same kind of operation (see `_KINDS`).

Coordinates are inches from the figure's bottom-left corner (one axes fills the figure), so sizes of boxes
and of text relate directly. matplotlib is imported inside the functions, so that `import llm_course`
stays quick and never picks a plotting backend for programs that do not plot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import torch

from .gpt2_bpe import gpt2_tokenizer
from .model import GPTConfig

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "text_pipeline_diagram",
    "attention_diagram",
    "multihead_diagram",
    "transformer_block_diagram",
    "gpt_diagram",
    "llama_block_diagram",
]

CHAPTER = 1

# One colour per kind of operation, the same in every diagram: kind -> (fill, edge, name in the legend).
_KINDS = {
    "data": ("#F3F3F3", "#808080", "tensor"),
    "embedding": ("#D5E8D4", "#5E9A4C", "embedding"),
    "linear": ("#E4D8EF", "#8762AB", "linear layer"),
    "attention": ("#FFE1BD", "#CC8218", "attention"),
    "norm": ("#FFF3BF", "#BF9E1E", "normalization"),
    "feedforward": ("#D9E6FA", "#5479B3", "feed-forward"),
    "dropout": ("#F7D4D4", "#B35050", "dropout"),
}

FONT = 10  # points: labels in boxes
SMALL = 9  # points: shapes and notes, the smallest text of any diagram
MONO = "DejaVu Sans Mono"
INK = "#333333"  # arrows, lines and text
MUTED = "#5A5A5A"  # shapes and notes
BOX_H = 0.4  # inches: the height of a one-line box
GAP = 0.28  # inches: the vertical space between two boxes, where the arrow runs
PILE_STEP = 0.08  # inches: the offset of each box behind the front one in a pile (a stack of blocks, a batch)


# ---- drawing helpers shared by all diagrams -------------------------------------------------------------


def _canvas(width: float, height: float) -> tuple[Figure, Axes]:
    """A figure of width x height inches whose one axes fills it, with data coordinates in inches."""
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(width, height))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_axis_off()
    return fig, ax


def _box(ax: Axes, x: float, y: float, w: float, h: float, label: str, kind: str, *, mono: bool = False,
         size: float = FONT, plain: bool = False) -> None:
    """A rounded box of the kind's colours centred at (x, y), with its label in the middle."""
    from matplotlib.patches import FancyBboxPatch

    fill, edge, _ = _KINDS[kind]
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0,rounding_size=0.07",
                                facecolor=fill, edgecolor=edge, linewidth=1.3))
    if label:
        _text(ax, x, y, label, mono=mono, size=size, plain=plain)


def _text(ax: Axes, x: float, y: float, label: str, *, ha: str = "center", va: str = "center",
          mono: bool = False, size: float = FONT, color: str = INK, weight: str = "normal",
          rotation: float = 0, plain: bool = False) -> None:
    """Text centred at (x, y) unless aligned otherwise; `plain` for a user's text, where a $ is a dollar
    sign rather than the start of a formula."""
    ax.text(x, y, label, ha=ha, va=va, fontsize=size, color=color, weight=weight, linespacing=1.35,
            fontfamily=MONO if mono else "sans-serif", rotation=rotation, parse_math=not plain)


def _note(ax: Axes, x: float, y: float, label: str, *, ha: str = "left", va: str = "center",
          mono: bool = True) -> None:
    """Small grey text beside the flow: a tensor shape or a line of code."""
    _text(ax, x, y, label, ha=ha, va=va, mono=mono, size=SMALL, color=MUTED)


def _arrow(ax: Axes, *points: tuple[float, float], head: bool = True, color: str = INK, width: float = 1.3) -> None:
    """A line through the points, with an arrowhead at the last one: the direction data flows."""
    from matplotlib.patches import FancyArrowPatch
    from matplotlib.path import Path

    ax.add_patch(FancyArrowPatch(path=Path(points), arrowstyle="-|>" if head else "-", mutation_scale=12,
                                 color=color, linewidth=width, joinstyle="miter", capstyle="butt"))


def _add_node(ax: Axes, x: float, y: float, r: float = 0.14) -> None:
    """The circle with a plus where a shortcut adds its input back."""
    from matplotlib.patches import Circle

    ax.add_patch(Circle((x, y), r, facecolor="white", edgecolor=INK, linewidth=1.3, zorder=3))
    ax.plot([x - 0.55 * r, x + 0.55 * r], [y, y], color=INK, linewidth=1.5, zorder=4)
    ax.plot([x, x], [y - 0.55 * r, y + 0.55 * r], color=INK, linewidth=1.5, zorder=4)


def _cells(ax: Axes, left: float, top: float, colours: Sequence[Sequence], width: float,
           height: float | None = None, labels: Sequence[Sequence[str]] | None = None) -> None:
    """A grid of cells (a matrix, or a vector as one row) from its top-left corner, row by row; cells are
    square unless `height` is given. A colour None draws a masked cell: white, hatched."""
    from matplotlib.patches import Rectangle

    height = width if height is None else height
    for i, row in enumerate(colours):
        for j, colour in enumerate(row):
            x, y = left + j * width, top - (i + 1) * height
            ax.add_patch(Rectangle((x, y), width, height, facecolor="white" if colour is None else colour,
                                   edgecolor="#8A8A8A", linewidth=0.6, hatch="////" if colour is None else None,
                                   hatchcolor="#BBBBBB"))
            if labels is not None and labels[i][j]:
                _text(ax, x + width / 2, y + height / 2, labels[i][j], size=SMALL, color=MUTED)


def _legend(ax: Axes, kinds: Sequence[str], y: float = 0.25) -> None:
    """A row of colour swatches with the names of the kinds of operation, centred at height y."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.patches import FancyBboxPatch
    from matplotlib.textpath import text_to_path

    names = [_KINDS[kind][2] for kind in kinds]
    # Each name's width in inches, measured from the font itself (the same with every backend).
    widths = [text_to_path.get_text_width_height_descent(name, FontProperties(size=SMALL), ismath=False)[0] / 72
              for name in names]
    swatch, spacing = 0.26, 0.3  # inches: a swatch's width, the space before the next one
    x = (ax.get_xlim()[1] - sum(widths) - len(kinds) * (swatch + 0.08) - (len(kinds) - 1) * spacing) / 2
    for kind, name, width in zip(kinds, names, widths):
        fill, edge, _ = _KINDS[kind]
        ax.add_patch(FancyBboxPatch((x, y - 0.08), swatch, 0.16, boxstyle="round,pad=0,rounding_size=0.03",
                                    facecolor=fill, edgecolor=edge, linewidth=1.2))
        _text(ax, x + swatch + 0.08, y, name, ha="left", size=SMALL)
        x += swatch + 0.08 + width + spacing


def _value_colours(values: torch.Tensor, cmap: str, limit: float) -> list[list]:
    """The colours of a (rows, cols) tensor's values on a colour map spanning [-limit, limit]."""
    import matplotlib

    colour_map = matplotlib.colormaps[cmap]
    scaled = ((values / limit).clamp(-1, 1) + 1) / 2  # [-limit, limit] -> [0, 1]
    return [[colour_map(0.08 + 0.84 * v) for v in row] for row in scaled.tolist()]  # no extreme shades


def _check_sizes(**sizes: int) -> None:
    """Raise a clear error unless every size is a positive integer."""
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_config(cfg: GPTConfig | None) -> GPTConfig:
    if cfg is None:
        return GPTConfig()
    if not isinstance(cfg, GPTConfig):
        raise TypeError(f"expected a GPTConfig or None, got {type(cfg).__name__}: pass e.g. GPTConfig(n_layers=4)")
    return cfg


# ---- a column of steps, for the blocks and the whole model -----------------------------------------------


@dataclass(frozen=True)
class _Step:
    """One row of a column: a box, several boxes side by side (a tuple of labels), or a residual sum
    (kind "add"). `stack` > 1 draws the box as the front of a pile of that many."""

    label: str | tuple[str, ...]
    kind: str
    height: float = BOX_H  # of the whole row, the pile included
    stack: int = 1

    @property
    def depth(self) -> float:
        """How far (inches) the pile behind the box reaches above and to the right of it."""
        return PILE_STEP * (min(self.stack, 3) - 1)  # at most two boxes behind the front one


_ADD = _Step("", "add", height=0.28)


def _rows(steps: Sequence[_Step | None], top: float) -> list[tuple[float, float]]:
    """Each step's (centre y, height) when the column starts at `top`; the last row's bottom edge is
    the column's bottom."""
    rows = []
    for step in steps:
        height = BOX_H if step is None else step.height
        rows.append((top - height / 2, height))
        top -= height + GAP
    return rows


def _row_top(rows: list[tuple[float, float]], i: int) -> float:
    return rows[i][0] + rows[i][1] / 2


def _row_bottom(rows: list[tuple[float, float]], i: int) -> float:
    return rows[i][0] - rows[i][1] / 2


def _column(ax: Axes, x: float, top: float, width: float, steps: Sequence[_Step | None],
            shortcuts: Sequence[tuple[int, int]] = (), lane: float = 0.42) -> list[tuple[float, float]]:
    """Draw the steps from top to bottom, centred at x, joined by arrows; a None step is an empty row
    that the line passes through. Each shortcut (i, j) leaves the arrow below step i and joins the sum at
    step j from the left, `lane` inches outside the column. Returns each row's (centre y, height)."""
    rows = _rows(steps, top)
    drawn = [(i, step) for i, step in enumerate(steps) if step is not None]
    for i, step in drawn:
        _draw_step(ax, x, rows[i][0], width, step)
    for (i, upper), (j, lower) in zip(drawn, drawn[1:]):
        _join(ax, x, width, upper, _row_bottom(rows, i), lower, _row_top(rows, j) - lower.depth)
    for i, j in shortcuts:
        fork = _row_bottom(rows, i) - 0.35 * GAP  # nearer the box above, clear of the arrowhead below
        side = x - width / 2 - lane
        ax.plot([x], [fork], marker="o", markersize=4.5, color=INK)
        _arrow(ax, (x, fork), (side, fork), (side, rows[j][0]), (x - _ADD.height / 2, rows[j][0]))
        _text(ax, side + 0.15, (fork + rows[j][0]) / 2, "shortcut", size=SMALL, color=MUTED, rotation=90)
    return rows


def _height(steps: Sequence[_Step | None]) -> float:
    """The height of a column of steps, from the top of the first to the bottom of the last."""
    centre, height = _rows(steps, 0.0)[-1]
    return height / 2 - centre


def _parts(x: float, width: float, count: int, gap: float = 0.16) -> list[tuple[float, float]]:
    """Centres and widths of `count` boxes side by side filling `width` around x."""
    part = (width - gap * (count - 1)) / count
    return [(x - width / 2 + part / 2 + k * (part + gap), part) for k in range(count)]


def _draw_step(ax: Axes, x: float, y: float, width: float, step: _Step) -> None:
    if step.kind == "add":
        _add_node(ax, x, y, step.height / 2)
        return
    labels = step.label if isinstance(step.label, tuple) else (step.label,)
    front_height, front_y = step.height - step.depth, y - step.depth / 2
    for (centre, part), label in zip(_parts(x, width - step.depth, len(labels)), labels):
        for k in range(round(step.depth / PILE_STEP), 0, -1):
            _box(ax, centre + k * PILE_STEP, front_y + k * PILE_STEP, part, front_height, "", step.kind)
        _box(ax, centre, front_y, part, front_height, label, step.kind, mono=step.kind == "data")


def _join(ax: Axes, x: float, width: float, upper: _Step, bottom: float, lower: _Step, top: float) -> None:
    """Arrows from one row (bottom edge at `bottom`) to the next (top edge at `top`): straight, fanning
    out, merging into a box, or merging into a sum from both sides."""
    n_up = len(upper.label) if isinstance(upper.label, tuple) else 1
    n_low = len(lower.label) if isinstance(lower.label, tuple) else 1
    middle = (bottom + top) / 2
    if n_up == n_low:
        for (a, _), (b, _) in zip(_parts(x, width, n_up), _parts(x, width, n_low)):
            _arrow(ax, (a, bottom), (b, top))
    elif n_up == 1:
        for b, _ in _parts(x, width, n_low):
            _arrow(ax, (x, bottom), (x, middle), (b, middle), (b, top))
    elif lower.kind == "add":
        r = lower.height / 2
        for a, _ in _parts(x, width, n_up):
            _arrow(ax, (a, bottom), (a, top - r), (x - r if a < x else x + r, top - r))
    else:
        for a, _ in _parts(x, width, n_up):
            _arrow(ax, (a, bottom), (a, middle), (x, middle), head=False)
        _arrow(ax, (x, middle), (x, top))


# ---- chapter 1: from text to input embeddings ----------------------------------------------------------


def _stage(ax: Axes, y: float, name: str, detail: str) -> None:
    """The name of a stage and a line about it, in the left margin of a diagram that reads downwards."""
    _text(ax, 0.3, y + 0.1, name, ha="left", weight="bold")
    _note(ax, 0.3, y - 0.12, detail, mono=False)


def text_pipeline_diagram(text: str = "Fellow-Citizens of the Senate", context_length: int = 4,
                          batch_size: int = 8, emb_dim: int = 256) -> Figure:
    """Chapter 1's pipeline from text to the model's input, on the real GPT-2 tokens of `text`: tokens,
    token ids, one input window of `context_length` ids with its targets (the same ids one token later),
    their token and position embeddings and the (batch_size, context_length, emb_dim) input embeddings.
    The embedding vectors are random (as before training), shown by their first 6 values."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    _check_sizes(context_length=context_length, batch_size=batch_size, emb_dim=emb_dim)
    tokenizer = gpt2_tokenizer()
    ids = tokenizer.encode(text)
    if len(ids) < context_length + 1:
        raise ValueError(
            f"{text!r} has {len(ids)} tokens; a window of context_length={context_length} and its targets need "
            f"{context_length + 1}: use a longer text or a smaller context_length"
        )
    pieces = [tokenizer.decode([i]).replace(" ", "␣").replace("\n", "\\n") for i in ids]
    # One column per token, as wide as its text or its id (about 0.083 inches per character at 10 points).
    widths = [max(0.62, 0.083 * max(len(piece), len(str(i))) + 0.2) for piece, i in zip(pieces, ids)]
    left, space = 2.75, 0.1  # the first column's left edge (right of the stage names), the space between columns
    centres = [left + sum(widths[:k]) + k * space + widths[k] / 2 for k in range(len(ids))]
    right = centres[-1] + widths[-1] / 2
    window_right = centres[context_length - 1] + widths[context_length - 1] / 2 + 0.05
    width = max(right + 0.2, window_right + 2.75, 9.0)  # room for the notes right of the embeddings
    if width > 10.0:
        raise ValueError(f"the tokens of {text!r} need {width:.1f} inches, more than the diagram's 10: "
                         "use a shorter text or a smaller context_length")
    fig, ax = _canvas(width, 6.55)
    ys = [6.2 - 0.72 * k for k in range(5)] + [2.45, 1.6, 0.78]  # the rows' centres, top to bottom
    h = 0.36  # the height of a row's boxes

    _stage(ax, ys[0], "raw text", "a Python string")
    _box(ax, (left + right) / 2, ys[0], right - left, h, repr(text), "data", mono=True, plain=True)
    _arrow(ax, (centres[0], ys[0] - h / 2), (centres[0], ys[1] + h / 2))
    _note(ax, centres[0] + 0.1, (ys[0] + ys[1]) / 2, "GPT-2's byte-pair encoding (tiktoken)", mono=False)
    _stage(ax, ys[1], "tokens", "pieces of text (␣ is a space)")
    _stage(ax, ys[2], "token ids", "one integer per token")
    for centre, column, piece, token_id in zip(centres, widths, pieces, ids):
        _box(ax, centre, ys[1], column, h, piece, "data", mono=True, plain=True)
        _arrow(ax, (centre, ys[1] - h / 2), (centre, ys[2] + h / 2))
        _box(ax, centre, ys[2], column, h, str(token_id), "data", mono=True)

    _stage(ax, ys[3], "input x", f"a window of {context_length} token ids")
    _stage(ax, ys[4], "target y", "the token after each input")
    for k in range(context_length):
        _arrow(ax, (centres[k], ys[2] - h / 2), (centres[k], ys[3] + h / 2))
        _box(ax, centres[k], ys[3], widths[k], h, str(ids[k]), "data", mono=True)
        _arrow(ax, (centres[k], ys[3] - h / 2), (centres[k + 1], ys[4] + h / 2))
        _box(ax, centres[k + 1], ys[4], widths[k + 1], h, str(ids[k + 1]), "data", mono=True)
    _note(ax, centres[context_length] + widths[context_length] / 2 + 0.2, ys[4], "= x, one token later", mono=False)

    shown = 6  # values drawn per embedding vector
    generator = torch.Generator().manual_seed(123)
    token_vectors = torch.randn(context_length, shown, generator=generator)
    position_vectors = torch.randn(context_length, shown, generator=generator)
    vectors = [token_vectors, position_vectors, token_vectors + position_vectors]
    _stage(ax, ys[5], "token embeddings", f"lookup in a {tokenizer.n_vocab:,} × {emb_dim} table")
    _stage(ax, ys[6], "+ position embeddings", f"lookup in a {context_length} × {emb_dim} table")
    _stage(ax, ys[7], "= input embeddings", f"(batch, seq, emb) = ({batch_size}, {context_length}, {emb_dim})")
    middle, span = (left - 0.05 + window_right) / 2, window_right - left + 0.05
    for k in range(2, 0, -1):  # the other windows of the batch, behind this one
        _box(ax, middle + PILE_STEP * k, ys[7] + PILE_STEP * k, span, h, "", "data")
    cell_width, cell_height = (min(widths) - 0.1) / shown, 0.22
    for row, values, kind in zip(ys[5:], vectors, ["embedding", "embedding", "data"]):
        _box(ax, middle, row, span, h, "", kind)
        colours = _value_colours(values, "coolwarm", 2.5)
        for k in range(context_length):
            _cells(ax, centres[k] - shown * cell_width / 2, row + cell_height / 2, [colours[k]], cell_width,
                   cell_height)
    for k in range(context_length):
        _note(ax, centres[k], ys[5] + h / 2 + 0.04, str(ids[k]), ha="center", va="bottom")
        _note(ax, centres[k], ys[6] + h / 2 + 0.04, str(k), ha="center", va="bottom")
    _note(ax, window_right + 0.25, ys[5], f"the first {shown} of {emb_dim} values, random\nbefore training "
          "(blue < 0 < red)", mono=False)
    _note(ax, window_right + 0.25 + 2 * PILE_STEP, ys[7], f"{batch_size} such windows make a batch", mono=False)
    _legend(ax, ["data", "embedding"], y=0.22)
    return fig


# ---- chapter 2: queries, keys and values --------------------------------------------------------------


def _matrix(ax: Axes, left: float, centre_y: float, colours: Sequence[Sequence], cell: float, name: str,
            shape: str) -> tuple[float, float, float, float]:
    """A matrix of cells with its vertical centre at centre_y, its name and shape underneath; returns
    (left, bottom, right, top) of the cells."""
    rows, cols = len(colours), len(colours[0])
    top = centre_y + rows * cell / 2
    _cells(ax, left, top, colours, cell)
    middle, bottom = left + cols * cell / 2, top - rows * cell
    _text(ax, middle, bottom - 0.06, name, va="top", size=SMALL)
    _note(ax, middle, bottom - 0.24, shape, ha="center", va="top")
    return left, bottom, left + cols * cell, top


def _greys(values: torch.Tensor) -> list[list]:
    """Light grey cells whose shade follows the values: a tensor whose numbers do not matter here."""
    import matplotlib

    greys = matplotlib.colormaps["Greys"]
    scaled = ((values / 6.0).clamp(-1, 1) + 1) / 2
    return [[greys(0.1 + 0.45 * v) for v in row] for row in scaled.tolist()]


def attention_diagram(tokens: Sequence[str] = ("To", "be", "prepared", "for", "war", "is"), d_in: int = 16,
                      d_out: int = 8, causal: bool = True) -> Figure:
    """Chapter 2's self-attention on one sequence: the inputs X times W_q, W_k and W_v give queries,
    keys and values; the scores Q Kᵀ, scaled by 1/√d_out, (causally masked and) softmaxed row by row, are
    the attention weights; weights times values are the context vectors. Matrices show 4 (inputs) or 3
    (the others) of their columns; the labels give the real shapes. Values are random but consistent:
    the weights are the softmax of the scores shown."""
    import matplotlib

    if isinstance(tokens, str) or not all(isinstance(token, str) for token in tokens):
        raise TypeError(f"tokens must be a sequence of strings, got {tokens!r}: e.g. pass text.split()")
    if not 2 <= len(tokens) <= 8:
        raise ValueError(f"attention_diagram draws 2 to 8 tokens, got {len(tokens)}: pass fewer tokens")
    _check_sizes(d_in=d_in, d_out=d_out)
    n, cell = len(tokens), 0.18
    # The matrices drawn: 4 input features, 3 query/key/value features, random values.
    generator = torch.Generator().manual_seed(123)
    x, w_q, w_k, w_v = (torch.randn(*shape, generator=generator) for shape in ((n, 4), (4, 3), (4, 3), (4, 3)))
    q, k, v = x @ w_q, x @ w_k, x @ w_v
    scores = q @ k.T
    mask = torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1) if causal else torch.zeros(n, n, dtype=torch.bool)
    weights = torch.softmax((scores / 3**0.5).masked_fill(mask, float("-inf")), dim=-1)  # √ of the 3 drawn
    context = weights @ v

    oranges = matplotlib.colormaps["Oranges"]
    score_colours = [[None if mask[i, j] else c for j, c in enumerate(row)]
                     for i, row in enumerate(_value_colours(scores, "coolwarm", 4.0))]
    weight_colours = [[None if mask[i, j] else oranges(0.05 + 0.85 * weights[i, j].item()) for j in range(n)]
                      for i in range(n)]

    # Left to right: X, the three projections, Q/K/V, the scores, the softmax, the weights, the context.
    x_left = 0.35 + 0.07 * max(len(token) for token in tokens)  # right of the token labels
    w_centre = x_left + 4 * cell + 0.71
    qkv_left = w_centre + 0.66
    scores_left = qkv_left + 3 * cell + 0.75
    softmax_centre = scores_left + n * cell + 0.875
    weights_left = softmax_centre + 0.875
    context_left = weights_left + n * cell + 0.55
    pitch = n * cell + 0.62  # between the centres of Q, K and V
    y_v = 0.97 + n * cell / 2  # room for V's labels and the legend below it
    y_k, y_q = y_v + pitch, y_v + 2 * pitch
    y_s = (y_q + y_k) / 2  # the scores, weights and context vectors: between the queries and the keys
    fig, ax = _canvas(context_left + 3 * cell + 0.4, y_q + n * cell / 2 + 0.2)

    x_box = _matrix(ax, x_left, y_k, _greys(x), cell, "inputs X", f"({n}, {d_in})")
    for i, token in enumerate(tokens):
        _text(ax, x_left - 0.08, x_box[3] - (i + 0.5) * cell, token, ha="right", size=SMALL, plain=True)
    projections = {}
    for name, y, values in (("q", y_q, q), ("k", y_k, k), ("v", y_v, v)):
        _arrow(ax, (x_box[2], y_k), (x_box[2] + 0.2, y_k), (x_box[2] + 0.2, y), (w_centre - 0.36, y))
        _box(ax, w_centre, y, 0.72, 0.5, f"$\\times\\ W_{name}$\n{d_in} × {d_out}", "linear", size=SMALL)
        _arrow(ax, (w_centre + 0.36, y), (qkv_left, y))
        label = {"q": "queries Q", "k": "keys K", "v": "values V"}[name]
        projections[name] = _matrix(ax, qkv_left, y, _greys(values), cell, label, f"({n}, {d_out})")

    scores_box = _matrix(ax, scores_left, y_s, score_colours, cell, "scores $QK^\\top$", f"({n}, {n})")
    for y, offset in ((y_q, 0.25), (y_k, -0.25)):  # queries in at the top, keys at the bottom
        bend = qkv_left + 3 * cell + 0.35
        _arrow(ax, (bend - 0.35, y), (bend, y), (bend, y_s + offset * n * cell), (scores_left, y_s + offset * n * cell))
    steps = f"÷ √{d_out}\ncausal mask\nsoftmax by row" if causal else f"÷ √{d_out}\nsoftmax by row"
    _arrow(ax, (scores_box[2], y_s), (softmax_centre - 0.575, y_s))
    _box(ax, softmax_centre, y_s, 1.15, 0.8, steps, "attention", size=SMALL)
    _arrow(ax, (softmax_centre + 0.575, y_s), (weights_left, y_s))
    weights_box = _matrix(ax, weights_left, y_s, weight_colours, cell, "attention weights", f"({n}, {n})")
    _note(ax, weights_left + n * cell / 2, weights_box[1] - 0.42, "each row sums to 1", ha="center", va="top",
          mono=False)
    for j, token in enumerate(tokens):  # the key each column weights
        _text(ax, weights_left + (j + 0.5) * cell, weights_box[3] + 0.06, token, va="bottom", size=SMALL,
              rotation=90, plain=True)
    _arrow(ax, (weights_box[2], y_s), (context_left, y_s))
    _text(ax, (weights_box[2] + context_left) / 2, y_s + 0.05, "× V", va="bottom", size=SMALL)
    context_box = _matrix(ax, context_left, y_s, _greys(context), cell, "context Z", f"({n}, {d_out})")
    below_context = context_left + 1.5 * cell
    _arrow(ax, (projections["v"][2], y_v), (below_context, y_v), (below_context, context_box[1] - 0.45))
    if causal:
        _note(ax, scores_left, scores_box[3] + 0.12, "hatched: masked (a later token)", mono=False, va="bottom")
    _legend(ax, ["data", "linear", "attention"])
    return fig


# ---- chapter 3: multi-head attention ------------------------------------------------------------------


def _head_colours(num_heads: int) -> list[tuple[list, str]]:
    """(light fill, line colour) per head: the colour follows a head through the split and back."""
    import matplotlib
    from matplotlib.colors import to_rgb

    palette = matplotlib.colormaps["tab10"]
    colours = []
    for h in range(num_heads):
        line = to_rgb(palette((0, 1, 2, 3, 4, 5, 6, 8, 9)[h]))  # tab10 without its grey, the tensors' colour
        colours.append(([0.62 + 0.38 * c for c in line], line))  # the fill: the line colour mixed with white
    return colours


def multihead_diagram(d_in: int = 256, d_out: int | None = None, num_heads: int = 4, seq_len: int = 64) -> Figure:
    """Chapter 3's `MultiHeadCausalAttention` with its real widths (default: the course model): one
    projection W_qkv of width 3 * d_out gives the queries, keys and values of all heads; they are split
    into num_heads heads of d_out // num_heads features, each head attends on its own, and the heads'
    context vectors, side by side again, go through the output projection. Bars are drawn to scale."""
    d_out = d_in if d_out is None else d_out
    _check_sizes(d_in=d_in, d_out=d_out, num_heads=num_heads, seq_len=seq_len)
    if not 1 <= num_heads <= 8 or d_out % num_heads:
        raise ValueError(
            f"multihead_diagram draws 1 to 8 heads that split d_out evenly; got num_heads={num_heads}, "
            f"d_out={d_out}: pick a num_heads that divides d_out (the layout is the same for more heads)"
        )
    head_dim = d_out // num_heads
    colours = _head_colours(num_heads)
    left, span = 2.75, 6.4  # the drawing's left edge and width, right of the stage names
    centre = left + span / 2
    unit = min(span / (3 * d_out), span / d_in)  # inches per feature: the widest bar fills the span
    fig, ax = _canvas(9.4, 7.15)
    y = dict(x=6.8, qkv_layer=6.18, qkv=5.56, heads=4.46, attention=3.78, context=3.1, concat=2.0,
             out_layer=1.38, out=0.76)
    bar = 0.3  # the height of a tensor's bar

    _stage(ax, y["x"], "inputs x", f"(batch, {seq_len}, {d_in})")
    _box(ax, centre, y["x"], d_in * unit, bar, "x", "data", mono=True)
    _arrow(ax, (centre, y["x"] - bar / 2), (centre, y["qkv_layer"] + 0.2))
    _stage(ax, y["qkv_layer"], "W_qkv", "one Linear layer for q, k and v")
    _box(ax, centre, y["qkv_layer"], 3.4, 0.4, f"W_qkv = Linear({d_in}, 3 × {d_out})", "linear", mono=True)
    _arrow(ax, (centre, y["qkv_layer"] - 0.2), (centre, y["qkv"] + bar / 2))

    _stage(ax, y["qkv"], "queries, keys, values", f"all heads: (batch, {seq_len}, {3 * d_out})")
    cell = head_dim * unit
    qkv_left = centre - 1.5 * d_out * unit
    label_cells = cell >= 0.34  # room for a label such as k₃ in each cell
    for part, name in enumerate("qkv"):
        _note(ax, qkv_left + part * d_out * unit + 0.04, y["qkv"] + bar / 2 + 0.04, f"{name}: {d_out}",
              va="bottom", mono=False)
        for h in range(num_heads):
            _cells(ax, qkv_left + (part * num_heads + h) * cell, y["qkv"] + bar / 2, [[colours[h][0]]], cell, bar,
                   labels=[[f"${name}_{h}$" if label_cells else ""]])

    _stage(ax, y["heads"], "split into heads", f"q, k, v: (batch, {num_heads}, {seq_len}, {head_dim})")
    slot = span / num_heads  # the width each head gets from here to the context vectors
    small = min(0.42, (slot - 0.2) / 3)
    for h in range(num_heads):
        middle = left + (h + 0.5) * slot
        for part, name in enumerate("qkv"):
            x_cell = middle + (part - 1.5) * small
            _cells(ax, x_cell, y["heads"] + bar / 2, [[colours[h][0]]], small, bar,
                   labels=[[f"${name}_{h}$" if small >= 0.34 else ""]])
            source = qkv_left + (part * num_heads + h + 0.5) * cell
            _arrow(ax, (source, y["qkv"] - bar / 2), (source, y["qkv"] - bar / 2 - 0.25),
                   (x_cell + small / 2, y["heads"] + bar / 2 + 0.25), (x_cell + small / 2, y["heads"] + bar / 2),
                   color=colours[h][1], width=1.0)
        two_lines = slot >= 1.3
        _box(ax, middle, y["attention"], slot - 0.2, 0.48, f"head {h}\ncausal attention" if two_lines else f"head {h}",
             "attention", size=SMALL)
        _arrow(ax, (middle, y["heads"] - bar / 2), (middle, y["attention"] + 0.24))
        _arrow(ax, (middle, y["attention"] - 0.24), (middle, y["context"] + bar / 2))
        _cells(ax, middle - small / 2, y["context"] + bar / 2, [[colours[h][0]]], small, bar,
               labels=[[f"$z_{h}$" if small >= 0.34 else ""]])
        target = centre - d_out * unit / 2 + (h + 0.5) * cell
        _arrow(ax, (middle, y["context"] - bar / 2), (middle, y["context"] - bar / 2 - 0.25),
               (target, y["concat"] + bar / 2 + 0.25), (target, y["concat"] + bar / 2), color=colours[h][1], width=1.0)
    _stage(ax, y["attention"], "attention in each head", f"softmax(q kᵀ / √{head_dim}, causal) · v")
    _stage(ax, y["context"], "context vectors", f"(batch, {num_heads}, {seq_len}, {head_dim})")

    _stage(ax, y["concat"], "heads side by side", f"(batch, {seq_len}, {d_out})")
    for h in range(num_heads):
        _cells(ax, centre - d_out * unit / 2 + h * cell, y["concat"] + bar / 2, [[colours[h][0]]], cell, bar,
               labels=[[f"$z_{h}$" if label_cells else ""]])
    _arrow(ax, (centre, y["concat"] - bar / 2), (centre, y["out_layer"] + 0.2))
    _stage(ax, y["out_layer"], "out_proj", "mixes the heads' features")
    _box(ax, centre, y["out_layer"], 3.4, 0.4, f"out_proj = Linear({d_out}, {d_out})", "linear", mono=True)
    _arrow(ax, (centre, y["out_layer"] - 0.2), (centre, y["out"] + bar / 2))
    _stage(ax, y["out"], "output", f"(batch, {seq_len}, {d_out})")
    _box(ax, centre, y["out"], d_out * unit, bar, "output", "data", mono=True)
    _legend(ax, ["data", "linear", "attention"], y=0.25)
    return fig


# ---- chapter 4: the transformer block and the whole model; chapter 8: a Llama block -----------------------


def _bracket(ax: Axes, x: float, top: float, bottom: float, title: str, code: str) -> None:
    """A bracket beside rows top..bottom of a column, with a title and the line of code they compute."""
    _arrow(ax, (x - 0.08, top), (x, top), (x, bottom), (x - 0.08, bottom), head=False, color=MUTED, width=1.0)
    middle = (top + bottom) / 2
    _text(ax, x + 0.15, middle + 0.13, title, ha="left", weight="bold")
    _note(ax, x + 0.15, middle - 0.13, code)


def _block_steps(norm: str, attention: _Step, feed_forward: Sequence[_Step], dropout: bool,
                 x: str = "x", out: str = "output") -> list[_Step | None]:
    """A pre-norm transformer block, input to output: two sub-layers (attention, then the three steps of
    the feed-forward network), each after a norm and followed by a sum with a shortcut (`SHORTCUTS`)."""
    drop = _Step("dropout", "dropout") if dropout else None  # None: an empty row, aligned with GPT-2's
    return [_Step(x, "data"), _Step(norm, "norm"), attention, drop, _ADD,
            _Step(norm, "norm"), *feed_forward, drop, _ADD, _Step(out, "data")]


SHORTCUTS = ((0, 4), (4, 10))  # in `_block_steps`: each sub-layer's input joins the sum after it


def transformer_block_diagram(cfg: GPTConfig | None = None) -> Figure:
    """The pre-norm transformer block of chapter 4 (`TransformerBlock`) with the sizes of `cfg` (default:
    the course model): x + dropout(attention(LayerNorm(x))), then the same with the feed-forward
    network, each sum fed by a shortcut around its sub-layer."""
    cfg = _check_config(cfg)
    emb, hidden, shape = cfg.emb_dim, 4 * cfg.emb_dim, f"(batch, {cfg.context_length}, {cfg.emb_dim})"
    attention = _Step(f"multi-head causal attention\n{cfg.n_heads} heads × {emb // cfg.n_heads} dimensions",
                      "attention", height=0.56)
    feed_forward = [_Step(f"Linear  {emb} → {hidden:,}", "feedforward"), _Step("GELU", "feedforward"),
                    _Step(f"Linear  {hidden:,} → {emb}", "feedforward")]
    steps = _block_steps("LayerNorm", attention, feed_forward, dropout=True, x=f"x  {shape}", out=f"output  {shape}")
    height = _height(steps)
    fig, ax = _canvas(7.9, height + 0.85)
    x, width = 2.3, 2.9
    rows = _column(ax, x, height + 0.6, width, steps, SHORTCUTS)
    _note(ax, x + 0.1, _row_bottom(rows, 6) - GAP / 2, f"(batch, {cfg.context_length}, {hidden})")
    right = x + width / 2 + 0.35
    _bracket(ax, right, _row_top(rows, 1), _row_bottom(rows, 4), "attention sub-layer",
             "x = x + dropout(att(norm1(x)))")
    _bracket(ax, right, _row_top(rows, 5), _row_bottom(rows, 10), "feed-forward sub-layer",
             "x = x + dropout(ff(norm2(x)))")
    _legend(ax, ["data", "norm", "attention", "feedforward", "dropout"])
    return fig


def llama_block_diagram() -> Figure:
    """A GPT-2 block beside a Llama block (chapter 8), row by row: RMSNorm instead of LayerNorm, rotary
    position embeddings (RoPE) on queries and keys instead of learned position embeddings, grouped-query
    attention, a SwiGLU feed-forward network, no biases and no dropout."""
    gpt2 = _block_steps(
        "LayerNorm",
        _Step("multi-head causal attention\neach head has its own keys and values\n(positions are already in x)",
              "attention", height=0.72),
        [_Step("Linear  emb → 4·emb", "feedforward"), _Step("GELU", "feedforward"),
         _Step("Linear  4·emb → emb", "feedforward")],
        dropout=True,
        x="x = token + position embedding",
    )
    llama = _block_steps(
        "RMSNorm",
        _Step("grouped-query causal attention\ngroups of heads share keys and values\nRoPE rotates queries and keys",
              "attention", height=0.72),
        [_Step(("Linear  gate", "Linear  up"), "feedforward"), _Step("SiLU(gate) * up", "feedforward"),
         _Step("Linear  down", "feedforward")],
        dropout=False,
        x="x = token embedding",
    )
    notes = {
        "GPT-2": ["• learned positions, added before block 1", "• LayerNorm: subtract the mean, divide by the std",
                  "• Linear layers with biases, dropout"],
        "Llama": ["• RoPE: positions as rotations of q and k", "• RMSNorm: divide by the root mean square",
                  "• no biases, no dropout; SwiGLU gate"],
    }
    height = _height(gpt2)
    fig, ax = _canvas(9.0, height + 1.95)
    top = height + 1.45
    for x, name, steps in ((2.55, "GPT-2", gpt2), (6.75, "Llama", llama)):
        _text(ax, x, top + 0.22, f"{name} block", size=12, weight="bold")
        rows = _column(ax, x, top, 3.0, steps, SHORTCUTS)
        for k, line in enumerate(notes[name]):
            _note(ax, x - 1.5, _row_bottom(rows, len(steps) - 1) - 0.3 - 0.2 * k, line, mono=False)
    _legend(ax, ["data", "norm", "attention", "feedforward", "dropout"])
    return fig


def gpt_diagram(cfg: GPTConfig | None = None) -> Figure:
    """The whole GPT of chapter 4 (`GPTModel`) with the sizes and parameter counts of `cfg` (default: the
    course model): token ids -> token + position embeddings -> dropout -> n_layers transformer blocks
    -> final LayerNorm -> linear output head -> logits."""
    from .model import GPTModel

    cfg = _check_config(cfg)
    with torch.device("meta"):  # shapes without data: instant even for large configurations
        model = GPTModel(cfg)
    seq, emb, vocab = cfg.context_length, cfg.emb_dim, cfg.vocab_size
    steps = [
        _Step((f"token ids\n(batch, {seq})", f"positions\n0, 1, …, {seq - 1}"), "data", height=0.56),
        _Step((f"token embedding\n{vocab:,} × {emb}", f"position embedding\n{seq:,} × {emb}"), "embedding",
              height=0.56),
        _ADD,
        _Step("dropout", "dropout"),
        _Step(f"{cfg.n_layers} × transformer block\n"
              f"{cfg.n_heads} attention heads, feed-forward {emb} → {4 * emb:,} → {emb}",
              "attention", height=0.62, stack=cfg.n_layers),
        _Step("final LayerNorm", "norm"),
        _Step(f"linear output head  {emb} → {vocab:,}", "linear"),
        _Step(f"logits  (batch, {seq}, {vocab})", "data"),
    ]
    counts = {
        1: sum(p.numel() for p in model.embedding.parameters()),
        4: sum(p.numel() for p in model.blocks.parameters()),
        5: sum(p.numel() for p in model.final_norm.parameters()),
        6: 0 if cfg.tie_weights else model.out_head.weight.numel(),
    }
    height = _height(steps)
    fig, ax = _canvas(8.2, height + 0.95)
    x, width = 2.65, 4.5
    rows = _column(ax, x, height + 0.55, width, steps)
    for i in (2, 3, 4):
        _note(ax, x + 0.1, _row_bottom(rows, i) - GAP / 2, f"(batch, {seq}, {emb})")
    counts_x = x + width / 2 + 0.45
    _text(ax, counts_x, _row_top(rows, 0) + 0.1, "parameters", ha="left", weight="bold", size=SMALL)
    for i, count in counts.items():
        _note(ax, counts_x, rows[i][0], f"{count:>12,}")
    if cfg.tie_weights:
        _note(ax, counts_x, rows[6][0] - 0.22, "(shares the token embedding)", mono=False)
    total = sum(p.numel() for p in model.parameters())  # a tied weight counts once
    _note(ax, counts_x, _row_bottom(rows, 7) - 0.05, f"{total:>12,} in all")
    _legend(ax, ["data", "embedding", "attention", "norm", "linear", "dropout"])
    return fig
