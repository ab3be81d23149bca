"""Chapter 4 training: the config, the loss, the optimizer, the train/validation split, the training loop and
the loss plot."""

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
    bits_per_byte,
    calc_loss_loader,
    configure_optimizer,
    create_train_val_loaders,
    evaluate_model,
    next_token_loss,
    overfitting_start,
    perplexity,
    plot_losses,
    set_seed,
    train_model,
)
from tiny_setup import TINY_CFG as CFG
from tiny_setup import TINY_TEXT as TEXT
from tiny_setup import TOKENIZER

IDS = TOKENIZER.encode(TEXT)  # 300 tokens: one per character


def loaders(ids=IDS, batch_size=4, max_length=8, stride=8):
    return create_train_val_loaders(ids, batch_size=batch_size, max_length=max_length, stride=stride)


def config(**changes) -> TrainingConfig:
    """The test runs' settings: windows of 8 tokens in batches of 4, a sample of 4 tokens after "The"."""
    settings = dict(batch_size=4, max_length=8, num_epochs=2, eval_freq=3, eval_iter=2, lr=1e-3,
                    start_context="The", sample_tokens=4)  # fmt: skip
    return TrainingConfig(**{**settings, **changes})


def test_course_defaults_train_every_position_of_the_context():
    defaults = TrainingConfig()
    assert (defaults.lr, defaults.weight_decay, defaults.betas, defaults.batch_size) == (5e-4, 0.1, (0.9, 0.95), 8)
    # Windows as long as the course model's context (64), side by side: every position gets trained.
    assert (defaults.max_length, defaults.stride) == (64, None)
    assert (defaults.num_epochs, defaults.train_ratio, defaults.precision, defaults.accumulate_steps) == (6, 0.9, "fp32", 1)


@pytest.mark.parametrize(
    "changes, message",
    [({"batch_size": 0}, "batch_size must be an integer >= 1"), ({"num_epochs": 1.5}, "num_epochs"),
     ({"lr": 0}, "lr must be a number in \\(0, inf\\)"), ({"lr": float("nan")}, "lr"),
     ({"train_ratio": 1.0}, "train_ratio"), ({"min_lr": 1e-3}, "min_lr must be a number in \\[0, 0.0005\\]"),
     ({"precision": "fp64"}, "precision must be one of fp32, bf16, fp16"), ({"betas": (0.9, 1.0)}, "betas"),
     ({"grad_clip": 0.0}, "grad_clip"), ({"stride": 0}, "stride"), ({"warmup_steps": -1}, "warmup_steps"),
     ({"sample_tokens": -1}, "sample_tokens"), ({"accumulate_steps": True}, "accumulate_steps")],
)  # fmt: skip
def test_a_bad_setting_is_refused_when_the_config_is_built(changes, message):
    with pytest.raises(ValueError, match=f"TrainingConfig.{message}"):
        TrainingConfig(**changes)


def test_next_token_loss_is_the_mean_cross_entropy_of_every_position():
    torch.manual_seed(0)
    model = GPTModel(CFG).eval()
    inputs, targets = torch.randint(0, 128, (3, 8)), torch.randint(0, 128, (3, 8))
    loss = next_token_loss(model, (inputs, targets))
    # Reference: minus the mean log-probability of each target token, written out position by position.
    log_probs = torch.log_softmax(model(inputs), dim=-1)
    expected = -torch.stack([log_probs[b, t, targets[b, t]] for b in range(3) for t in range(8)]).mean()
    assert loss.dim() == 0
    torch.testing.assert_close(loss, expected)
    # Targets of -100 are left out: the mean is over the other positions only.
    masked = targets.clone()
    masked[:, :5] = -100
    expected = -torch.stack([log_probs[b, t, targets[b, t]] for b in range(3) for t in range(5, 8)]).mean()
    torch.testing.assert_close(next_token_loss(model, (inputs, masked)), expected)


def test_calc_loss_loader_averages_and_caps_the_batches():
    torch.manual_seed(0)
    model = GPTModel(CFG).eval()
    batches = [(torch.randint(0, 128, (2, 8)), torch.randint(0, 128, (2, 8))) for _ in range(4)]
    losses = [next_token_loss(model, batch).item() for batch in batches]
    assert calc_loss_loader(batches, model) == pytest.approx(sum(losses) / 4)
    assert calc_loss_loader(batches, model, num_batches=2) == pytest.approx(sum(losses[:2]) / 2)
    assert calc_loss_loader(batches, model, num_batches=10) == pytest.approx(sum(losses) / 4)
    first_token_loss = lambda model, batch: F.cross_entropy(model(batch[0])[:, 0], batch[1][:, 0])  # noqa: E731
    expected = sum(first_token_loss(model, batch).item() for batch in batches) / 4
    assert calc_loss_loader(batches, model, loss_fn=first_token_loss) == pytest.approx(expected)


def test_calc_loss_loader_refuses_an_empty_loader_and_bad_counts():
    model = GPTModel(CFG)
    with pytest.raises(ValueError, match="no batches"):
        calc_loss_loader([], model)
    with pytest.raises(ValueError, match="num_batches"):
        calc_loss_loader([(torch.zeros(1, 2, dtype=torch.long),) * 2], model, num_batches=0)


def test_evaluate_model_uses_eval_mode_and_restores_the_mode():
    torch.manual_seed(0)
    model = GPTModel(CFG)
    train_loader, val_loader = loaders()
    model.train()
    torch.manual_seed(1)  # the same shuffle of the training batches for both estimates
    train_loss, val_loss = evaluate_model(model, train_loader, val_loader, eval_iter=2)
    assert model.training
    model.eval()
    torch.manual_seed(1)
    assert train_loss == pytest.approx(calc_loss_loader(train_loader, model, num_batches=2))
    assert val_loss == pytest.approx(calc_loss_loader(val_loader, model, num_batches=2))
    evaluate_model(model, train_loader, val_loader, eval_iter=1)
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


def test_train_val_split_is_by_tokens():
    train_loader, val_loader = loaders()
    assert train_loader.dataset.token_ids.tolist() == IDS[:270]
    assert val_loader.dataset.token_ids.tolist() == IDS[270:]
    windows = (270 - 9) // 8 + 1  # window starts 0, 8, ... while start + 9 <= 270
    assert len(train_loader) == windows // 4  # full batches only: the last incomplete one is dropped
    inputs, targets = next(iter(train_loader))
    assert inputs.shape == targets.shape == (4, 8)
    assert len(val_loader) == 1 and next(iter(val_loader))[0].shape == (3, 8)  # the last batch is kept
    train_loader, _ = create_train_val_loaders(IDS, batch_size=4, max_length=8)  # stride None: max_length
    assert train_loader.dataset.stride == 8


def test_a_split_too_short_for_one_window_gets_a_clear_error():
    with pytest.raises(ValueError, match=r"validation split \(30 of 300 tokens.*one window needs"):
        loaders(max_length=32)
    with pytest.raises(ValueError, match="train_ratio"):
        create_train_val_loaders(IDS, batch_size=4, max_length=8, train_ratio=1.0)


def test_the_optimizer_decays_weight_matrices_only():
    model = GPTModel(CFG)
    optimizer = configure_optimizer(model, TrainingConfig(lr=1e-3, weight_decay=0.2, betas=(0.8, 0.9)))
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == 0.2 and plain["weight_decay"] == 0.0
    assert all(p.dim() == 2 for p in decayed["params"]) and all(p.dim() == 1 for p in plain["params"])
    names = {id(p): name for name, p in model.named_parameters()}
    plain_names = {names[id(p)] for p in plain["params"]}
    assert "blocks.0.norm1.scale" in plain_names and "blocks.0.ff.layers.0.bias" in plain_names
    assert len(decayed["params"]) + len(plain["params"]) == len(list(model.parameters()))
    assert decayed["betas"] == (0.8, 0.9) and decayed["lr"] == 1e-3 and decayed["fused"]
    model.embedding.requires_grad_(False)  # frozen parameters are left to the caller
    assert len(configure_optimizer(model, TrainingConfig()).param_groups[0]["params"]) == len(decayed["params"]) - 2


def run(seed=0, **changes):
    set_seed(seed)
    model = GPTModel(CFG)
    cfg = config(**changes)
    optimizer = configure_optimizer(model, cfg)
    train_loader, val_loader = loaders()
    events = []
    history = train_model(model, train_loader, val_loader, optimizer, cfg, tokenizer=TOKENIZER,
                          callbacks=[events.append], progress=False)  # fmt: skip
    return model, history, len(train_loader), events


def test_history_records_each_evaluation_against_steps_tokens_and_epochs():
    _, history, steps_per_epoch, events = run()
    total = 2 * steps_per_epoch  # 16 steps
    expected_steps = [0, *range(3, total + 1, 3), total]  # before training, every 3 steps, at the end
    assert history.steps == expected_steps
    assert history.tokens_seen == [step * 4 * 8 for step in expected_steps]
    assert history.epochs == [step / steps_per_epoch for step in expected_steps]
    assert len(history.train_losses) == len(history.val_losses) == len(history.samples) == len(expected_steps)
    assert all(sample.startswith("The") and len(sample) == 3 + 4 for sample in history.samples)
    assert (history.global_step, history.total_tokens, history.epoch, history.batch_in_epoch) == (total, total * 32, 2, 0)

    kinds = [event["event"] for event in events]
    assert kinds.count("step") == total and kinds.count("epoch_end") == 2 and kinds.count("eval") == len(expected_steps)
    assert kinds[-1] == "train_end"
    steps = [event for event in events if event["event"] == "step"]
    assert [event["step"] for event in steps] == list(range(1, total + 1))
    assert all(isinstance(event["loss"], float) and event["history"] is history for event in steps)
    assert all(event["grad_norm"] is None for event in steps)  # no clipping, no norm
    evals = [event for event in events if event["event"] == "eval"]
    assert [event["val_loss"] for event in evals] == history.val_losses
    assert [event["sample"] for event in evals] == history.samples


def test_training_lowers_the_loss_and_is_deterministic():
    model_a, history_a, _, _ = run(lr=1e-2)
    model_b, history_b, _, _ = run(lr=1e-2)
    assert history_a.train_losses[-1] < history_a.train_losses[0] - 1.0
    assert history_a.train_losses == history_b.train_losses and history_a.val_losses == history_b.val_losses
    assert history_a.samples == history_b.samples
    assert all(torch.equal(a, b) for a, b in zip(model_a.state_dict().values(), model_b.state_dict().values()))
    _, history_c, _, _ = run(lr=1e-2, seed=1)
    assert history_c.train_losses != history_a.train_losses


def test_max_steps_stops_early_with_a_final_evaluation():
    _, history, _, _ = run(max_steps=5)
    assert history.global_step == 5 and history.batch_in_epoch == 5 and history.epoch == 0
    assert history.steps == [0, 3, 5]


def test_without_a_start_context_or_tokenizer_no_samples_are_generated():
    _, history, _, _ = run(start_context=None, num_epochs=1, eval_freq=4)
    assert history.samples == [] and history.steps == [0, 4, 8]
    _, history, _, _ = run(sample_tokens=0, num_epochs=1, eval_freq=4)
    assert history.samples == []


def test_the_loop_trains_with_any_loss_function():
    """Fine-tuning passes its own loss: here, predicting only each window's last token."""
    seen = []

    def last_token_loss(model, batch):
        seen.append(batch)
        inputs, targets = batch
        return F.cross_entropy(model(inputs)[:, -1], targets[:, -1])

    set_seed(0)
    model = GPTModel(CFG)
    cfg = config(num_epochs=1, eval_freq=100, eval_iter=1, start_context=None, lr=1e-2)
    optimizer = configure_optimizer(model, cfg)
    train_loader, val_loader = loaders()
    history = train_model(model, train_loader, val_loader, optimizer, cfg, loss_fn=last_token_loss, progress=False)
    assert len(seen) == len(train_loader) + 2 * 2  # every training batch, and one batch per split per evaluation
    assert history.train_losses[-1] < history.train_losses[0]


def test_a_loader_with_too_few_batches_for_one_step_is_a_clear_error():
    set_seed(0)
    model = GPTModel(CFG)
    cfg = config(accumulate_steps=100)
    with pytest.raises(ValueError, match="fewer than one step's accumulate_steps=100"):
        train_model(model, *loaders(), configure_optimizer(model, cfg), cfg, progress=False)


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


def test_bits_per_byte_converts_a_loss_per_token():
    # 100 tokens at ln(2) nats each cover 50 bytes: 100 bits for 50 bytes.
    assert bits_per_byte(math.log(2), 100, 50) == pytest.approx(2.0)
    assert bits_per_byte(math.log(256), 1, 1) == pytest.approx(8.0)  # a uniform guess over the 256 byte values
    with pytest.raises(ValueError, match="num_bytes"):
        bits_per_byte(1.0, 10, 0)


def test_a_diverging_run_stops_with_a_clear_error_before_anything_saves_its_weights():
    set_seed(0)
    model = GPTModel(CFG)
    cfg = config(lr=1e6, num_epochs=5, start_context=None)
    events = []
    with pytest.raises(ValueError, match=r"training diverged: the loss became nan at step \d+ .*lower the learning rate"):
        train_model(model, *loaders(), configure_optimizer(model, cfg), cfg, callbacks=[events.append], progress=False)
    assert not any(event["event"] == "train_end" for event in events)
    assert all(math.isfinite(event["loss"]) for event in events if event["event"] == "step")  # no step event for NaN
