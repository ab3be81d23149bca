"""Chapter 4: watching training as it happens, driven by `train_model`'s events.

`train_model` calls each of its callbacks with an event dict after every optimizer step ("step"), every
evaluation ("eval"), every epoch ("epoch_end") and once at the end ("train_end"). `LiveTrainingView` turns
those events into something to look at in Jupyter: one figure (losses, learning rate, tokens per second
against tokens seen) and the latest generated sample, updated in place at each evaluation. (The progress
bar, llm_course/progress.py, is another such callback.)

Stored notebook outputs must compare exactly under nbval, which runs the notebook headless and ignores
in-place display updates. So the view animates only in an interactive Jupyter frontend (see
`interactive_frontend`); elsewhere it shows the final figure and text once, at the end of training. The
two modes end with the same outputs, and no timing ever appears in the text (only in the picture).
"""

from __future__ import annotations

import html
import os
import sys
import time
from typing import TYPE_CHECKING, Any

from .training import TrainingHistory, overfitting_start

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["LiveTrainingView", "interactive_frontend"]

CHAPTER = 4


def interactive_frontend() -> bool:
    """True when this code runs in a Jupyter kernel that a person is watching.

    A kernel started by a Jupyter server (JupyterLab, Notebook 7) gets the JPY_SESSION_NAME environment
    variable; kernels started headless by nbclient (`make notebooks`) or nbval (`make test`) do not, and
    neither do plain Python programs or pytest, which have no kernel at all.
    """
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is None or getattr(shell, "kernel", None) is None:
        return False
    return bool(os.environ.get("JPY_SESSION_NAME"))


class _Report:
    """The latest evaluation as text: plain text for terminals and nbval, HTML for Jupyter."""

    def __init__(self, lines: list[str], sample: str | None):
        self.lines, self.sample = lines, sample

    def __repr__(self) -> str:
        text = "\n".join(self.lines)
        return text + (f"\nsample: {self.sample!r}" if self.sample is not None else "")

    def _repr_html_(self) -> str:
        text = "<br>".join(html.escape(line) for line in self.lines)
        if self.sample is not None:
            # A young model often writes little but line breaks: mark each one, so that they do not look
            # like an empty box.
            sample = html.escape(self.sample).replace("\n", "<span style='color: #999'>\u21b5</span>\n")
            text += f"<br>sample:<pre style='white-space: pre-wrap'>{sample}</pre>"
        return f"<div style='font-family: monospace'>{text}</div>"


class LiveTrainingView:
    """A training callback that shows the run as one figure plus the latest sample, and flags overfitting.

        view = LiveTrainingView()
        history = train_model(..., callbacks=[view], progress=False)

    The figure has three panels against tokens seen: training and validation loss (with a marker where
    the validation loss turns up while the training loss still falls, see `overfitting_start`), the
    learning rate, and the training throughput in tokens per second (measured between events, so it
    leaves out the time spent evaluating). `live=None` animates only in an interactive Jupyter frontend
    (`interactive_frontend()`); `live=False` shows the final figure and text once, when training ends
    (outside IPython it prints the text; the figure stays in `view.figure`).
    """

    def __init__(self, live: bool | None = None):
        self.live = interactive_frontend() if live is None else live
        self.history: TrainingHistory | None = None
        self.total_steps: int | None = None
        self.lr_tokens: list[int] = []  # tokens seen at each evaluation this view saw
        self.lrs: list[float] = []  # the learning rate there
        self.speed_tokens: list[int] = []  # tokens seen at the evaluations that followed training steps
        self.tokens_per_s: list[float] = []  # training tokens per second since the previous evaluation
        self.figure: Figure | None = None
        self._handles = None  # the display handles of the figure and the text, once shown
        self._since: tuple[float, int] | None = None  # (time, tokens) when training (re)started after an event
        self._last_step: tuple[float, int] | None = None  # (time, tokens) at the latest step event

    def __call__(self, event: dict[str, Any]) -> None:
        now = time.perf_counter()
        kind = event["event"]
        self.history, self.total_steps = event["history"], event["total_steps"]
        if kind == "step":
            if self._since is None:  # a resumed run starts with a step: measure from the end of that step
                self._since = (now, event["tokens_seen"])
            self._last_step = (now, event["tokens_seen"])
        elif kind == "eval":
            self.lr_tokens.append(event["tokens_seen"])
            self.lrs.append(event["lr"])
            if self._since is not None and self._last_step is not None and self._last_step[0] > self._since[0]:
                self.speed_tokens.append(event["tokens_seen"])
                self.tokens_per_s.append((self._last_step[1] - self._since[1]) / (self._last_step[0] - self._since[0]))
            self._since, self._last_step = (time.perf_counter(), event["tokens_seen"]), None
            if self.live:
                self._show()
        elif kind == "train_end":
            self._show()

    def report(self) -> _Report:
        """The latest evaluation's numbers (rounded, no timings) and sample."""
        history = self.history
        if history is None or not history.steps:
            raise ValueError("nothing to show yet: pass the view to train_model(callbacks=[view]) and train")
        lines = [
            f"step {history.steps[-1]}/{self.total_steps}, epoch {history.epochs[-1]:.2f}, "
            f"{history.tokens_seen[-1]:,} tokens seen",
            f"training loss {history.train_losses[-1]:.3f}, validation loss {history.val_losses[-1]:.3f}, "
            f"learning rate {self.lrs[-1]:.2e}" if self.lrs else "",
        ]
        start = overfitting_start(history)
        if start is not None:
            lines.append(
                f"overfitting since step {history.steps[start]}: validation loss {history.val_losses[start]:.3f} "
                f"-> {history.val_losses[-1]:.3f} while training loss fell"
            )
        return _Report([line for line in lines if line], history.samples[-1] if history.samples else None)

    def draw(self) -> Figure:
        """Draw the three panels from what the view has seen so far into `self.figure` and return it."""
        from matplotlib.figure import Figure  # not pyplot: Jupyter must not show the figure by itself

        history = self.history
        if history is None or not history.steps:
            raise ValueError("nothing to draw yet: pass the view to train_model(callbacks=[view]) and train")
        if self.figure is None:
            self.figure = Figure(figsize=(12, 3.6), layout="constrained")
        fig = self.figure
        fig.clear()
        loss_ax, lr_ax, speed_ax = fig.subplots(1, 3)
        loss_ax.plot(history.tokens_seen, history.train_losses, marker=".", label="training loss")
        loss_ax.plot(history.tokens_seen, history.val_losses, marker=".", linestyle="-.", label="validation loss")
        start = overfitting_start(history)
        if start is not None:
            loss_ax.axvline(history.tokens_seen[start], color="tab:red", linestyle="--", linewidth=1)
            loss_ax.plot(history.tokens_seen[start], history.val_losses[start], "v", color="tab:red",
                         label="overfitting starts")
        loss_ax.set_ylabel("loss (cross-entropy)")
        loss_ax.set_title(f"step {history.steps[-1]} of {self.total_steps}")
        loss_ax.legend(loc="upper right")
        lr_ax.plot(self.lr_tokens, self.lrs, marker=".", color="tab:green")
        lr_ax.set_ylabel("learning rate")
        lr_ax.set_ylim(bottom=0)  # a constant rate is a flat line, not noise around it
        lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
        speed_ax.plot(self.speed_tokens, self.tokens_per_s, marker=".", color="tab:purple")
        speed_ax.set_ylabel("tokens per second (training)")
        speed_ax.set_ylim(bottom=0)
        for ax in (loss_ax, lr_ax, speed_ax):
            ax.set_xlabel("tokens seen")
        return fig

    def _show(self) -> None:
        fig, report = self.draw(), self.report()
        ipython = sys.modules.get("IPython")
        if ipython is None or ipython.get_ipython() is None:
            print(repr(report))  # a terminal cannot show the figure: save view.figure instead
            return
        from IPython.display import display

        if self._handles is None:
            self._handles = (display(fig, display_id=True), display(report, display_id=True))
        else:
            self._handles[0].update(fig)
            self._handles[1].update(report)
