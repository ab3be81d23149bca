"""Chapter 4 training: the loss functions, the train/validation split, the training loop and the loss plot."""

import math
import warnings

import matplotlib

matplotlib.use("Agg")

import pytest
import torch
import torch.nn.functional as F

from llm_course import (
    GPTModel,
    TrainingConfig,
    TrainingHistory,
    calc_loss_batch,
    calc_loss_loader,
    create_train_val_loaders,
    evaluate_model,
    overfitting_start,
    perplexity,
    plot_losses,
    set_seed,
    train_model,
)
from tiny_setup import TINY_CFG as CFG
from tiny_setup import TINY_TEXT as TEXT
from tiny_setup import TOKENIZER


def loaders(text=TEXT, batch_size=4, max_length=8, stride=8):
    return create_train_val_loaders(text, TOKENIZER, batch_size=batch_size, max_length=max_length, stride=stride)


def test_course_defaults():
    config = TrainingConfig()
    assert (config.lr, config.weight_decay, config.batch_size, config.max_length, config.stride) == (
        5e-4,
        0.01,
        8,
        32,
        16,
    )
    assert (config.num_epochs, config.train_ratio) == (3, 0.9)


def test_calc_loss_batch_is_the_mean_cross_entropy_of_every_position():
    torch.manual_seed(0)
    model = GPTModel(CFG).eval()
    inputs, targets = torch.randint(0, 128, (3, 8)), torch.randint(0, 128, (3, 8))
    loss = calc_loss_batch(inputs, targets, model, "cpu")
    # Reference: minus the mean log-probability of each target token, written out position by position.
    log_probs = torch.log_softmax(model(inputs), dim=-1)
    expected = -torch.stack([log_probs[b, t, targets[b, t]] for b in range(3) for t in range(8)]).mean()
    assert loss.dim() == 0
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(loss, F.cross_entropy(model(inputs).flatten(0, 1), targets.flatten()))


def test_calc_loss_loader_averages_and_caps_the_batches():
    torch.manual_seed(0)
    model = GPTModel(CFG).eval()
    batches = [(torch.randint(0, 128, (2, 8)), torch.randint(0, 128, (2, 8))) for _ in range(4)]
    losses = [calc_loss_batch(x, y, model, "cpu").item() for x, y in batches]
    assert calc_loss_loader(batches, model, "cpu") == pytest.approx(sum(losses) / 4)
    assert calc_loss_loader(batches, model, "cpu", num_batches=2) == pytest.approx(sum(losses[:2]) / 2)
    assert calc_loss_loader(batches, model, "cpu", num_batches=10) == pytest.approx(sum(losses) / 4)


def test_calc_loss_loader_refuses_an_empty_loader_and_bad_counts():
    model = GPTModel(CFG)
    with pytest.raises(ValueError, match="no batches"):
        calc_loss_loader([], model, "cpu")
    with pytest.raises(ValueError, match="num_batches"):
        calc_loss_loader([(torch.zeros(1, 2, dtype=torch.long),) * 2], model, "cpu", num_batches=0)


def test_evaluate_model_uses_eval_mode_and_restores_the_mode():
    torch.manual_seed(0)
    model = GPTModel(CFG)
    train_loader, val_loader = loaders()
    model.train()
    torch.manual_seed(1)  # the same shuffle of the training batches for both estimates
    train_loss, val_loss = evaluate_model(model, train_loader, val_loader, "cpu", eval_iter=2)
    assert model.training
    model.eval()
    torch.manual_seed(1)
    assert train_loss == pytest.approx(calc_loss_loader(train_loader, model, "cpu", num_batches=2))
    assert val_loss == pytest.approx(calc_loss_loader(val_loader, model, "cpu", num_batches=2))
    evaluate_model(model, train_loader, val_loader, "cpu", eval_iter=1)
    assert not model.training


def test_perplexity():
    assert perplexity(0.0) == 1.0
    assert perplexity(math.log(50257)) == pytest.approx(50257)
    assert perplexity(torch.tensor(2.0)) == pytest.approx(math.exp(2.0))


def test_perplexity_of_a_loss_that_requires_grad_warns_nothing():
    loss = torch.tensor(2.0, requires_grad=True) * 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert perplexity(loss) == pytest.approx(math.exp(2.0))
    assert perplexity(1000.0) == math.inf


def test_train_val_split_is_by_characters():
    train_loader, val_loader = loaders()
    assert train_loader.dataset.token_ids.tolist() == TOKENIZER.encode(TEXT[:270])
    assert val_loader.dataset.token_ids.tolist() == TOKENIZER.encode(TEXT[270:])
    windows = (270 - 9) // 8 + 1  # window starts 0, 8, ... while start + 9 <= 270
    assert len(train_loader) == windows // 4  # full batches only: the last incomplete one is dropped
    inputs, targets = next(iter(train_loader))
    assert inputs.shape == targets.shape == (4, 8)
    assert len(val_loader) == 1 and next(iter(val_loader))[0].shape == (3, 8)  # the last batch is kept


def test_a_split_too_short_for_one_window_gets_a_clear_error():
    with pytest.raises(ValueError, match=r"validation split \(30 of 300 characters.*one window needs"):
        loaders(max_length=32)
    with pytest.raises(ValueError, match="train_ratio"):
        create_train_val_loaders(TEXT, TOKENIZER, train_ratio=1.0)


def run(num_epochs=2, eval_freq=3, seed=0, lr=1e-3, **kwargs):
    set_seed(seed)
    model = GPTModel(CFG)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    train_loader, val_loader = loaders()
    history = train_model(
        model,
        train_loader,
        val_loader,
        optimizer,
        "cpu",
        num_epochs,
        eval_freq,
        2,
        "The",
        TOKENIZER,
        sample_tokens=4,
        progress=False,
        **kwargs,
    )
    return model, history, len(train_loader)


def test_history_records_each_evaluation_against_steps_tokens_and_epochs():
    events = []
    _, history, steps_per_epoch = run(callbacks=[events.append])
    total = 2 * steps_per_epoch  # 16 steps
    expected_steps = [0, *range(3, total + 1, 3), total]  # before training, every 3 steps, at the end
    assert history.steps == expected_steps
    assert history.tokens_seen == [step * 4 * 8 for step in expected_steps]
    assert history.epochs == [step / steps_per_epoch for step in expected_steps]
    assert len(history.train_losses) == len(history.val_losses) == len(history.samples) == len(expected_steps)
    assert all(sample.startswith("The") and len(sample) == 3 + 4 for sample in history.samples)
    assert (history.global_step, history.total_tokens, history.epoch, history.batch_in_epoch) == (
        total,
        total * 32,
        2,
        0,
    )

    kinds = [event["event"] for event in events]
    assert kinds.count("step") == total and kinds.count("epoch_end") == 2 and kinds.count("eval") == len(expected_steps)
    steps = [event for event in events if event["event"] == "step"]
    assert [event["step"] for event in steps] == list(range(1, total + 1))
    assert all(isinstance(event["loss"], float) and event["history"] is history for event in steps)
    evals = [event for event in events if event["event"] == "eval"]
    assert [event["val_loss"] for event in evals] == history.val_losses
    assert [event["sample"] for event in evals] == history.samples


def test_training_lowers_the_loss_and_is_deterministic():
    model_a, history_a, _ = run(lr=1e-2)
    model_b, history_b, _ = run(lr=1e-2)
    assert history_a.train_losses[-1] < history_a.train_losses[0] - 1.0
    assert history_a.train_losses == history_b.train_losses and history_a.val_losses == history_b.val_losses
    assert history_a.samples == history_b.samples
    assert all(torch.equal(a, b) for a, b in zip(model_a.state_dict().values(), model_b.state_dict().values()))
    _, history_c, _ = run(lr=1e-2, seed=1)
    assert history_c.train_losses != history_a.train_losses


def test_max_steps_stops_early_without_a_final_evaluation():
    _, history, _ = run(max_steps=5)
    assert history.global_step == 5 and history.batch_in_epoch == 5 and history.epoch == 0
    assert history.steps == [0, 3]


def test_without_a_start_context_no_samples_are_generated():
    set_seed(0)
    model = GPTModel(CFG)
    train_loader, val_loader = loaders()
    optimizer = torch.optim.AdamW(model.parameters())
    history = train_model(model, train_loader, val_loader, optimizer, "cpu", 1, 4, 1, progress=False)
    assert history.samples == [] and history.steps == [0, 4, 8]


def make_history(train, val):
    steps = list(range(len(train)))
    return TrainingHistory(
        steps=steps,
        tokens_seen=[s * 100 for s in steps],
        epochs=[s / 2 for s in steps],
        train_losses=train,
        val_losses=val,
    )


def test_overfitting_starts_where_validation_loss_turns_up_while_training_loss_falls():
    assert overfitting_start(make_history([9, 7, 5, 4, 3, 2], [9, 7, 6, 6.5, 7, 8])) == 2
    assert overfitting_start(make_history([9, 7, 5, 4], [9, 7, 6, 5.5])) is None  # still improving
    assert overfitting_start(make_history([9, 7, 8, 9], [9, 7, 8, 9])) is None  # both rise: not overfitting
    assert overfitting_start(make_history([9, 7, 5, 4], [9, 7, 6, 6.03])) is None  # within the tolerance
    assert overfitting_start(make_history([9], [9])) is None


def test_plot_losses_draws_both_curves_a_tokens_axis_and_the_overfitting_mark():
    fig = plot_losses(make_history([9, 7, 5, 4, 3, 2], [9, 7, 6, 6.5, 7, 8]))
    ax = fig.axes[0]
    labels = [line.get_label() for line in ax.lines]
    assert labels[:2] == ["training loss", "validation loss"]
    assert list(ax.lines[1].get_ydata()) == [9, 7, 6, 6.5, 7, 8]
    assert list(ax.lines[2].get_xdata()) == [1.0, 1.0]  # the vertical mark at the best validation loss
    assert any("tokens seen" == child.get_xlabel() for child in ax.child_axes)
    assert len(plot_losses(make_history([9, 7, 5], [9, 7, 6])).axes[0].lines) == 2  # no mark without overfitting
    with pytest.raises(ValueError, match="no evaluations"):
        plot_losses(TrainingHistory())
