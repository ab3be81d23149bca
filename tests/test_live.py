"""Chapter 4 live training view: train_model's events, the terminal progress log and the live figure."""

import matplotlib

matplotlib.use("Agg")

import pytest
import torch

from llm_course import (
    GPTModel,
    lr_at_step,
    LiveTrainingView,
    ProgressBar,
    TrainingConfig,
    TrainingHistory,
    create_train_val_loaders,
    interactive_frontend,
    overfitting_start,
    set_seed,
    train_model,
)
from tiny_setup import TINY_CFG as CFG
from tiny_setup import TINY_TEXT as TEXT
from tiny_setup import TOKENIZER


def train(callbacks=(), num_epochs=2, eval_freq=3, **changes):
    set_seed(0)
    model = GPTModel(CFG)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    train_loader, val_loader = create_train_val_loaders(TOKENIZER.encode(TEXT), batch_size=4, max_length=8)
    config = TrainingConfig(num_epochs=num_epochs, eval_freq=eval_freq, eval_iter=2, start_context="The",
                            sample_tokens=3, lr=1e-3, **changes)  # fmt: skip
    history = train_model(model, train_loader, val_loader, optimizer, config, tokenizer=TOKENIZER,
                          callbacks=callbacks, progress=False)  # fmt: skip
    return history, len(train_loader)


def test_events_come_at_the_right_steps_with_the_history_values():
    events = []
    history, steps_per_epoch = train([events.append], warmup_steps=4, min_lr=1e-4)
    total = 2 * steps_per_epoch
    kinds = [event["event"] for event in events]
    assert kinds[0] == "eval" and kinds[-1] == "train_end" and kinds.count("train_end") == 1
    # Each evaluation follows the step it evaluates (or comes first, for the untrained model).
    evals = [i for i, kind in enumerate(kinds) if kind == "eval"]
    assert [events[i]["step"] for i in evals] == history.steps == [0, *range(3, total + 1, 3), total]
    for i in evals[1:]:
        previous_step = next(e for e in reversed(events[:i]) if e["event"] == "step")
        assert previous_step["step"] == events[i]["step"]
    eval_events = [events[i] for i in evals]
    assert [e["train_loss"] for e in eval_events] == history.train_losses
    assert [e["val_loss"] for e in eval_events] == history.val_losses
    assert [e["sample"] for e in eval_events] == history.samples
    assert [e["tokens_seen"] for e in eval_events] == history.tokens_seen
    assert [e["epoch"] for e in eval_events] == history.epochs
    assert all(e["total_steps"] == total for e in events)
    # The learning rate is the one the next step uses, on the warmup and cosine schedule.
    expected = [lr_at_step(step, total, 1e-3, 4, 1e-4) for step in history.steps]
    assert [e["lr"] for e in eval_events] == pytest.approx(expected, rel=1e-12)
    assert events[-1]["step"] == history.global_step == total


def test_the_progress_bar_can_write_one_line_per_evaluation(capsys):
    log = ProgressBar(log_evals=True)
    history, _ = train([log])
    out, err = capsys.readouterr()
    assert "training: 100%" in err  # tqdm's bar, on stderr
    lines = [line for line in out.splitlines() if line.startswith("step")]
    assert len(lines) == len(history.steps)
    for line, step, train_loss, val_loss in zip(lines, history.steps, history.train_losses, history.val_losses):
        assert line.split()[1] == str(step)
        assert f"train loss {train_loss:.3f}, val loss {val_loss:.3f}" in line
    assert f"  {history.samples[-1]!r}" in out
    assert log.bar is None  # closed by the train_end event


def test_the_view_outside_jupyter_draws_one_final_figure_and_prints_the_text_once(capsys):
    assert not interactive_frontend()  # pytest runs no kernel
    view = LiveTrainingView()
    assert view.live is False
    history, steps_per_epoch = train([view])
    out = capsys.readouterr().out
    assert out.count("training loss") == 1 and out == repr(view.report()) + "\n"
    assert f"training loss {history.train_losses[-1]:.3f}, validation loss {history.val_losses[-1]:.3f}" in out
    assert repr(history.samples[-1]) in out
    fig = view.figure
    assert len(fig.axes) == 3
    loss_ax, lr_ax, speed_ax = fig.axes
    train_line, val_line = loss_ax.lines[:2]
    assert list(train_line.get_xdata()) == history.tokens_seen and list(train_line.get_ydata()) == history.train_losses
    assert list(val_line.get_ydata()) == history.val_losses
    assert list(lr_ax.lines[0].get_ydata()) == pytest.approx([1e-3] * len(history.steps))
    speeds = speed_ax.lines[0].get_ydata()
    assert len(speeds) == len(history.steps) - 1 and all(speed > 0 for speed in speeds)  # none before training


def test_the_live_view_updates_one_display_in_place(monkeypatch):
    shown, updated = [], []

    class Handle:
        def update(self, obj):
            updated.append(obj)

    def display(obj, display_id=False):
        assert display_id is True
        shown.append(obj)
        return Handle()

    class Shell:
        kernel = object()

    import IPython
    import IPython.display

    monkeypatch.setattr(IPython, "get_ipython", lambda: Shell())
    monkeypatch.setattr(IPython.display, "display", display)
    view = LiveTrainingView(live=True)
    history, _ = train([view])
    assert len(shown) == 2  # the figure and the text, displayed once at the first evaluation
    assert shown[0] is view.figure
    # Then updated at each later evaluation and once more at the end.
    assert len(updated) == 2 * len(history.steps)
    assert all(obj is view.figure for obj in updated[::2])


def test_overfitting_is_marked_as_soon_as_the_validation_loss_turns_up():
    history = TrainingHistory(
        steps=[0, 10, 20, 30],
        tokens_seen=[0, 100, 200, 300],
        epochs=[0.0, 1.0, 2.0, 3.0],
        train_losses=[5.0, 4.0, 3.0, 2.0],
        val_losses=[5.0, 4.5, 4.6, 4.9],
    )
    assert overfitting_start(history) == 1
    view = LiveTrainingView(live=False)
    view.history, view.total_steps = history, 30
    view.lr_tokens, view.lrs = history.tokens_seen, [1e-3] * 4
    loss_ax = view.draw().axes[0]
    marker = [line for line in loss_ax.lines if line.get_label() == "overfitting starts"]
    assert len(marker) == 1 and list(marker[0].get_xdata()) == [100]
    assert "overfitting since step 10" in repr(view.report())
    view.history = TrainingHistory(**{**history.__dict__, "val_losses": [5.0, 4.5, 4.4, 4.3]})
    assert not any(line.get_label() == "overfitting starts" for line in view.draw().axes[0].lines)
    assert "overfitting" not in repr(view.report())


def test_the_view_needs_events_before_it_can_draw():
    with pytest.raises(ValueError, match="callbacks=\\[view\\]"):
        LiveTrainingView(live=False).draw()


def test_a_jupyter_server_kernel_is_interactive_and_a_headless_one_is_not(monkeypatch):
    import IPython

    class Shell:
        kernel = object()

    monkeypatch.setattr(IPython, "get_ipython", lambda: Shell())
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    assert not interactive_frontend()  # nbclient and nbval start kernels without it
    monkeypatch.setenv("JPY_SESSION_NAME", "notebooks/04_pretraining.ipynb")
    assert interactive_frontend()
    monkeypatch.setattr(IPython, "get_ipython", lambda: None)
    assert not interactive_frontend()


def test_the_html_sample_marks_its_line_breaks_so_blank_lines_do_not_look_empty():
    from llm_course.live import _Report

    shown = _Report(["step 2"], "Fellow-Citizens:\n\n\n<b>")._repr_html_()
    assert shown.count("\u21b5") == 3 and "&lt;b&gt;" in shown
