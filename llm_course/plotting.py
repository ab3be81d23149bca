"""Chapter 2: heat maps of attention weights over the tokens of a text (reused by chapters 3 and 4).

matplotlib is imported inside the functions, so that `import llm_course` stays quick and never picks a
plotting backend for programs that do not plot (training scripts, tests).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

import torch

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["plot_attention", "plot_attention_heads"]

CHAPTER = 2


def _as_matrices(weights: torch.Tensor, tokens: Sequence[str], rank: int, shape_name: str) -> torch.Tensor:
    """Check the weights' shape against the tokens and return them as a CPU float tensor."""
    weights = torch.as_tensor(weights).detach().float().cpu()
    if weights.dim() != rank or weights.shape[-1] != weights.shape[-2]:
        raise ValueError(
            f"expected attention weights of shape {shape_name}, got {tuple(weights.shape)}; "
            "pick one sequence of the batch first, e.g. weights[0]"
        )
    if weights.shape[-1] != len(tokens):
        raise ValueError(f"got {len(tokens)} tokens for weights over {weights.shape[-1]} positions")
    return weights


def _draw(ax: Axes, weights: torch.Tensor, tokens: Sequence[str], vmax: float, x_labels: bool, y_labels: bool):
    """Draw one (seq, seq) heat map: row i shows how much query token i attends to each key token."""
    image = ax.imshow(weights.numpy(), cmap="viridis", vmin=0.0, vmax=vmax)
    labels = [token.replace("\n", "\\n") for token in tokens]  # a raw newline would break the layout
    ax.set_xticks(range(len(tokens)), labels, rotation=90)
    ax.set_yticks(range(len(tokens)), labels)
    ax.tick_params(labelbottom=x_labels, labelleft=y_labels)
    if x_labels:
        ax.set_xlabel("key (attended to)")
    if y_labels:
        ax.set_ylabel("query (attending)")
    return image


def plot_attention(
    weights: torch.Tensor, tokens: Sequence[str], ax: Axes | None = None, title: str | None = None
) -> Figure:
    """Heat map of one (seq, seq) attention matrix (a tensor or array) with the tokens on both axes,
    plus a colour bar.

    Draws into `ax` if given (for side-by-side comparisons), else into a new figure; returns the figure.
    """
    import matplotlib.pyplot as plt

    weights = _as_matrices(weights, tokens, rank=2, shape_name="(seq, seq)")
    if ax is None:
        size = 2.0 + 0.3 * len(tokens)
        _, ax = plt.subplots(figsize=(size + 1.0, size), layout="constrained")
    image = _draw(ax, weights, tokens, vmax=weights.max().item(), x_labels=True, y_labels=True)
    ax.figure.colorbar(image, ax=ax, label="attention weight")
    if title is not None:
        ax.set_title(title)
    return ax.figure


def plot_attention_heads(
    weights: torch.Tensor, tokens: Sequence[str], ncols: int = 4, title: str | None = None
) -> Figure:
    """A grid of heat maps, one per head, for (num_heads, seq, seq) weights, sharing one colour scale.

    Token labels are written on the left column and the bottom row only; returns the figure.
    """
    import matplotlib.pyplot as plt

    weights = _as_matrices(weights, tokens, rank=3, shape_name="(num_heads, seq, seq)")
    num_heads = weights.shape[0]
    ncols = max(1, min(ncols, num_heads))
    nrows = math.ceil(num_heads / ncols)
    panel = 0.8 + 0.17 * len(tokens)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(panel * ncols + 1.0, panel * nrows), layout="constrained", squeeze=False
    )
    vmax = weights.max().item()
    for ax in axes.flat[num_heads:]:
        ax.remove()  # the last row is not full
    for head, ax in enumerate(axes.flat[:num_heads]):
        lowest_in_column = head + ncols >= num_heads
        image = _draw(ax, weights[head], tokens, vmax, x_labels=lowest_in_column, y_labels=head % ncols == 0)
        ax.set_title(f"head {head}")
    fig.colorbar(image, ax=list(axes.flat[:num_heads]), label="attention weight")
    if title is not None:
        fig.suptitle(title)
    return fig
