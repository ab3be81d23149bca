"""Chapter 4: turning the knobs yourself: sampling sliders and an attention viewer for a trained GPT.

The computations are plain functions that return numbers (`next_token_choices`, `collect_attention`);
the widgets (`SamplingExplorer`, `AttentionViewer`) only call them when a slider moves and draw the
result, so what the sliders show is exactly what the plain API computes. Each widget's plain-text form
(what a terminal, a static notebook view and nbval see) lists the numbers it currently shows.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .generation import next_token_probs, prompt_logits, text_to_token_ids
from .model import GPTModel
from .plotting import plot_attention

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["AttentionViewer", "SamplingExplorer", "collect_attention", "next_token_choices"]

CHAPTER = 4


def next_token_choices(
    logits: torch.Tensor,
    tokenizer,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    k: int = 10,
) -> list[tuple[str, float]]:
    """The (at most k) most likely next tokens, as (token text, probability) pairs, under a decoding strategy.

    `logits` are (1, vocab) (see `prompt_logits`); the probabilities are those `next_token_probs` gives, i.e.
    what `generate` samples from with the same temperature, top_k and top_p. Tokens the strategy rules out
    (probability 0) are not candidates, so they are left out: top_k=3 gives three pairs, greedy one.
    """
    probs = next_token_probs(logits, temperature, top_k, top_p)[0]  # (vocab,)
    top = torch.topk(probs, min(k, int((probs > 0).sum())))
    return [(tokenizer.decode([i]), p) for i, p in zip(top.indices.tolist(), top.values.tolist())]


def collect_attention(model: GPTModel, token_ids: torch.Tensor) -> torch.Tensor:
    """Every block's attention weights for (batch, seq) token ids: (n_layers, batch, n_heads, seq, seq).

    Runs the model once in eval mode (no dropout) with hooks that make each block's attention module take
    its `return_weights=True` path, keep the weights and hand the context on as usual: the same
    attention code as always, only with the weights written out.
    """
    if not isinstance(model, GPTModel):
        raise TypeError(f"collect_attention expects a GPTModel, got {type(model).__name__}")
    collected = []

    def ask_for_weights(module, args, kwargs):
        return args, {**kwargs, "return_weights": True}

    def keep_weights(module, args, kwargs, output):
        context, weights = output
        collected.append(weights.detach().cpu())
        return context

    handles = []
    for block in model.blocks:
        handles.append(block.att.register_forward_pre_hook(ask_for_weights, with_kwargs=True))
        handles.append(block.att.register_forward_hook(keep_weights, with_kwargs=True))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(token_ids.to(next(model.parameters()).device))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return torch.stack(collected)


MAX_MAP_INCHES = 7.0  # 560 pixels at DISPLAY_DPI: an attention map never gets taller than a laptop's screen
DISPLAY_DPI = 80  # the figure's size on screen: 80 pixels (CSS) per inch


def _show(fig: Figure, image: Any) -> None:
    """Draw `fig` into the ipywidgets Image `image`: rendered at twice the screen's pixel density and shown at
    the figure's own size, so that it stays sharp on high-density screens instead of being stretched."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=2 * DISPLAY_DPI)
    image.value = buffer.getvalue()
    image.layout.width = f"{round(fig.get_figwidth() * DISPLAY_DPI)}px"


def _format(value: Any) -> str:
    """A slider's value as a person writes it: 0.9, not 0.9000000000000001; None as "off"."""
    return "off" if value is None else f"{value:.3g}" if isinstance(value, float) else str(value)


class _Widget:
    """Shows as its ipywidgets box in Jupyter and as `describe()`'s text everywhere else."""

    box: Any

    def describe(self) -> str:
        raise NotImplementedError

    def __repr__(self) -> str:
        return self.describe()

    def _repr_mimebundle_(self, **kwargs) -> dict:
        bundle = self.box._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = self.describe()  # the widget's own repr lists its traits, PNG bytes included
        return bundle


class SamplingExplorer(_Widget):
    """Sliders for temperature, top-k and top-p over the next-token probabilities after a prompt.

    Moving a slider calls `update`, which recomputes `choices` with `next_token_choices` and redraws the
    bar chart. top-k 0 and top-p 1 mean "off". `SamplingExplorer(model, tokenizer, prompt)` in a notebook
    cell shows the widget.
    """

    def __init__(self, model: nn.Module, tokenizer, prompt: str, k: int = 10):
        import ipywidgets as widgets
        from matplotlib.figure import Figure

        self.tokenizer, self.prompt, self.k = tokenizer, prompt, k
        self.logits = prompt_logits(model, tokenizer, prompt)  # the model runs once; the sliders only resample
        style = {"description_width": "90px"}
        self.temperature = widgets.FloatSlider(1.0, min=0.0, max=2.0, step=0.05, description="temperature", style=style)
        self.top_k = widgets.IntSlider(0, min=0, max=50, description="top-k (0: off)", style=style)
        self.top_p = widgets.FloatSlider(1.0, min=0.05, max=1.0, step=0.05, description="top-p (1: off)", style=style)
        self.figure = Figure(figsize=(6, 3.2), layout="constrained")
        self.image = widgets.Image(format="png")
        for slider in (self.temperature, self.top_k, self.top_p):
            slider.observe(lambda change: self.update(), names="value")
        self.box = widgets.VBox([widgets.HBox([self.temperature, self.top_k, self.top_p]), self.image])
        self.update()

    def settings(self) -> dict[str, Any]:
        """The sliders' values as `next_token_probs` arguments."""
        return dict(
            temperature=self.temperature.value,
            top_k=self.top_k.value or None,
            top_p=self.top_p.value if self.top_p.value < 1 else None,
        )

    def update(self) -> list[tuple[str, float]]:
        """Recompute `choices` for the sliders' values, redraw the bars and return the choices."""
        self.choices = next_token_choices(self.logits, self.tokenizer, k=self.k, **self.settings())
        fig = self.figure
        fig.clear()
        ax = fig.subplots()
        labels = [repr(token) for token, _ in self.choices]
        ax.barh(range(len(labels)), [p for _, p in self.choices], color="tab:blue")
        ax.set_yticks(range(len(labels)), labels)
        ax.invert_yaxis()  # the most likely token on top
        ax.set_xlim(0, 1)
        ax.set_xlabel("probability of being the next token")
        ax.set_title(f"after {self.prompt!r}\n{self._settings_text()}", fontsize=9)
        _show(fig, self.image)
        return self.choices

    def _settings_text(self) -> str:
        return ", ".join(f"{name} {_format(value)}" for name, value in self.settings().items())

    def describe(self) -> str:
        lines = [f"next token after {self.prompt!r} with {self._settings_text()}"]
        lines += [f"  {token!r:<16} {p:.3f}" for token, p in self.choices]
        return "\n".join(lines)


class AttentionViewer(_Widget):
    """Pick a layer and a head to see its attention heat map over the prompt's tokens (`plot_attention`).

    The weights come from one run of the model (`collect_attention`); `weights[layer, 0, head]` is the map
    shown. Moving a slider calls `update(layer, head)`.
    """

    def __init__(self, model: GPTModel, tokenizer, prompt: str):
        import ipywidgets as widgets
        from matplotlib.figure import Figure

        ids = text_to_token_ids(prompt, tokenizer)[:, -model.cfg.context_length :]
        if ids.shape[1] == 0:
            raise ValueError("the prompt is empty: give at least one token of text")
        self.tokens = [tokenizer.decode([i]) for i in ids[0].tolist()]
        self.weights = collect_attention(model, ids)  # (n_layers, 1, n_heads, seq, seq)
        n_layers, _, n_heads = self.weights.shape[:3]
        self.layer = widgets.IntSlider(0, min=0, max=n_layers - 1, description="layer")
        self.head = widgets.IntSlider(0, min=0, max=n_heads - 1, description="head")
        size = min(2.0 + 0.3 * len(self.tokens), MAX_MAP_INCHES)  # a long prompt still fits on the screen
        self.figure = Figure(figsize=(size + 1.0, size), layout="constrained")
        self.image = widgets.Image(format="png")
        for slider in (self.layer, self.head):
            slider.observe(lambda change: self.update(self.layer.value, self.head.value), names="value")
        self.box = widgets.VBox([widgets.HBox([self.layer, self.head]), self.image])
        self.update(0, 0)

    def update(self, layer: int, head: int) -> torch.Tensor:
        """Draw layer `layer`, head `head` and return its (seq, seq) weights."""
        self.shown = (layer, head)
        weights = self.weights[layer, 0, head]
        self.figure.clear()
        plot_attention(weights, self.tokens, ax=self.figure.subplots(), title=f"layer {layer}, head {head}")
        _show(self.figure, self.image)
        return weights

    def describe(self) -> str:
        layer, head = self.shown
        last = self.weights[layer, 0, head, -1].tolist()  # how the last token spreads its attention
        pairs = ", ".join(f"{token!r} {weight:.2f}" for token, weight in zip(self.tokens, last))
        return f"attention weights of layer {layer}, head {head}; the last token attends to: {pairs}"
