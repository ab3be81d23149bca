"""Chapter 4: the progress bar of the training loop, a tqdm bar driven by `train_model`'s events.

`train_model` calls each of its callbacks with an event dict after every optimizer step ("step"), every
evaluation ("eval"), every epoch ("epoch_end") and once at the end ("train_end"); `ProgressBar` is one such
callback. `train_model(progress=True)` adds one itself.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ProgressBar"]

CHAPTER = 4


class ProgressBar:
    """A tqdm bar advanced by "step" events, showing the latest loss (and gradient norm, when clipping)
    and the latest evaluation's losses; with `log_evals`, also one line per evaluation with its sample.

    In Jupyter (with ipywidgets) the bar is a widget; in a terminal, text.
    """

    def __init__(self, log_evals: bool = False):
        self.log_evals = log_evals
        self.bar = None
        self.postfix: dict[str, str] = {}

    def __call__(self, event: dict[str, Any]) -> None:
        from tqdm.auto import tqdm  # imported here: `import llm_course` stays light

        kind = event["event"]
        if self.bar is None and kind != "train_end":
            done = event["step"] - (kind == "step")  # a step event arrives after its step
            self.bar = tqdm(total=event["total_steps"], initial=done, desc="training", unit="step")
        if kind == "step":
            self.bar.update()
            if event.get("grad_norm") is not None:  # given when train_model clips gradients
                self.postfix["norm"] = f"{event['grad_norm']:.2f}"
            self.postfix["loss"] = f"{event['loss']:.3f}"
            self.bar.set_postfix(self.postfix)
        elif kind == "eval":
            self.postfix.update(train=f"{event['train_loss']:.3f}", val=f"{event['val_loss']:.3f}")
            self.bar.set_postfix(self.postfix)
            if self.log_evals:
                line = f"step {event['step']:>5} (epoch {event['epoch']:.2f}): "
                line += f"train loss {event['train_loss']:.3f}, val loss {event['val_loss']:.3f}"
                sample = event.get("sample")
                self.bar.write(line + (f"\n  {sample!r}" if sample is not None else ""))
        elif kind == "train_end":
            self.close()

    def close(self) -> None:
        """Close the bar (train_model does it at "train_end"; call it yourself when training stops early)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
