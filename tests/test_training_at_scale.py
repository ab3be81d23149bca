"""Training at scale (chapter 5): the learning-rate schedule, gradient clipping and accumulation, mixed
precision, gradient checkpointing and exact resumption, in `train_model` and the command line."""

import copy
import os
import signal
from dataclasses import asdict, fields

import matplotlib

matplotlib.use("Agg")

import pytest
import torch

from llm_course import (
    GPTConfig,
    GPTModel,
    TrainingConfig,
    TrainingHistory,
    create_train_val_loaders,
    load_checkpoint,
    load_corpus,
    lr_at_step,
    next_token_loss,
    plot_lr_schedule,
    restore_rng_state,
    save_checkpoint,
    set_seed,
    train_model,
)
from llm_course import cli, pipeline
from tiny_setup import TOKENIZER


CFG = GPTConfig(vocab_size=128, context_length=16, emb_dim=16, n_heads=2, n_layers=2)  # dropout 0.1
NO_DROPOUT = GPTConfig(vocab_size=128, context_length=16, emb_dim=16, n_heads=2, n_layers=2, drop_rate=0.0)


def fixed_batches(n, batch_size, seq=8, seed=0):
    """n (inputs, targets) batches of character ids: a loader without shuffling."""
    generator = torch.Generator().manual_seed(seed)
    data = torch.randint(0, 128, (n * batch_size, seq + 1), generator=generator)
    return [(chunk[:, :-1], chunk[:, 1:]) for chunk in data.split(batch_size)]


def run(model, optimizer, train_loader, num_epochs=1, eval_freq=100, **changes):
    """train_model on CPU without samples or a progress bar, at the optimizer's learning rate unless `changes`
    say otherwise; returns (history, step events)."""
    events = []
    changes.setdefault("lr", optimizer.param_groups[0]["lr"])
    config = TrainingConfig(num_epochs=num_epochs, eval_freq=eval_freq, eval_iter=1, start_context=None, **changes)
    history = train_model(model, train_loader, train_loader[:1], optimizer, config, callbacks=[events.append],
                          progress=False)  # fmt: skip
    return history, [event for event in events if event["event"] == "step"]


# --- learning-rate schedule ------------------------------------------------------------------------------


def test_lr_warms_up_linearly_then_follows_half_a_cosine_to_min_lr():
    peak, low, total, warmup = 1e-3, 1e-4, 110, 10
    lrs = [lr_at_step(step, total, peak, warmup, low) for step in range(total + 5)]
    assert lrs[:warmup] == pytest.approx([peak * (s + 1) / warmup for s in range(warmup)])
    assert lrs[warmup] == pytest.approx(peak)  # the decay starts at the peak...
    assert lrs[warmup + 50] == pytest.approx((peak + low) / 2)  # ...is halfway down halfway through...
    assert lrs[total:] == pytest.approx([low] * 5)  # ...and stays at min_lr from total_steps on
    decay = lrs[warmup:total]
    assert all(a > b for a, b in zip(decay, decay[1:]))
    assert [lr_at_step(s, 20, 5e-4) for s in range(20)] == [5e-4] * 20  # no min_lr: constant
    assert [lr_at_step(s, 20, 5e-4, 4) for s in range(4, 20)] == [5e-4] * 16  # warmup, then constant


@pytest.mark.parametrize(
    "args, message",
    [((0, 0, 1e-3), "total_steps"), ((0, 10, 1e-3, 11), "warmup_steps"), ((0, 10, 1e-3, 0, 2e-3), "min_lr"),
     ((-1, 10, 1e-3), "step must be"), ((0.5, 10, 1e-3), "step must be")],
)  # fmt: skip
def test_bad_schedule_arguments_are_refused(args, message):
    with pytest.raises(ValueError, match=message):
        lr_at_step(*args)


def test_train_model_sets_the_scheduled_rate_before_every_step():
    set_seed(0)
    model = GPTModel(NO_DROPOUT)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    used = []  # the rate each step really used, read in the optimizer just before it steps
    optimizer.register_step_pre_hook(lambda opt, args, kwargs: used.append(opt.param_groups[0]["lr"]))
    run(model, optimizer, fixed_batches(8, 2), lr=1e-2, warmup_steps=3, min_lr=1e-3)
    assert used == pytest.approx([lr_at_step(s, 8, 1e-2, 3, 1e-3) for s in range(8)], rel=1e-12)
    with pytest.raises(ValueError, match="warmup_steps"):
        run(model, optimizer, fixed_batches(8, 2), warmup_steps=9)  # more warmup than the run has steps


def test_plot_lr_schedule_draws_every_step():
    fig = plot_lr_schedule(50, 1e-3, warmup_steps=5, min_lr=1e-4)
    line = fig.axes[0].lines[0]
    assert list(line.get_xdata()) == list(range(50))
    assert line.get_ydata()[4] == pytest.approx(1e-3) and line.get_ydata()[-1] > 1e-4


# --- gradient clipping and accumulation -------------------------------------------------------------------


def test_clipping_reports_the_norm_before_clipping_and_bounds_the_update():
    set_seed(0)
    model = GPTModel(NO_DROPOUT)
    reference = copy.deepcopy(model)
    batches = fixed_batches(1, 4)
    next_token_loss(reference, batches[0]).backward()
    norm = torch.cat([p.grad.flatten() for p in reference.parameters()]).norm().item()
    before = torch.cat([p.detach().flatten() for p in model.parameters()])

    max_norm = norm / 4  # so that clipping really happens
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)  # the update is minus the (clipped) gradient
    _, steps = run(model, optimizer, batches, grad_clip=max_norm)
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert steps[0]["grad_norm"] == pytest.approx(norm, rel=1e-5)
    assert (after - before).norm().item() == pytest.approx(max_norm, rel=1e-4)

    _, steps = run(GPTModel(NO_DROPOUT), torch.optim.SGD(model.parameters(), lr=0.1), batches)
    assert steps[0]["grad_norm"] is None  # without clipping the norm is not computed


def test_accumulating_two_half_batches_equals_one_full_batch():
    set_seed(0)
    model_full = GPTModel(NO_DROPOUT)
    model_acc = copy.deepcopy(model_full)
    full = fixed_batches(4, 4)  # 4 steps of 4 windows
    halves = [(x[i : i + 2], y[i : i + 2]) for x, y in full for i in (0, 2)]  # 8 batches of 2 windows
    history_full, steps_full = run(model_full, torch.optim.AdamW(model_full.parameters(), lr=1e-2), full)
    history_acc, steps_acc = run(
        model_acc, torch.optim.AdamW(model_acc.parameters(), lr=1e-2), halves, accumulate_steps=2
    )
    assert history_acc.global_step == history_full.global_step == 4
    assert history_acc.total_tokens == history_full.total_tokens == 4 * 4 * 8
    assert [s["loss"] for s in steps_acc] == pytest.approx([s["loss"] for s in steps_full], abs=1e-5)
    for a, b in zip(model_acc.parameters(), model_full.parameters()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)

    # Without accumulation the same 8 half batches make 8 different steps: the test can tell.
    model_plain = copy.deepcopy(model_acc)
    _, steps_plain = run(model_plain, torch.optim.AdamW(model_plain.parameters(), lr=1e-2), halves)
    assert len(steps_plain) == 8


def test_an_incomplete_last_group_of_batches_is_left_out_and_too_few_batches_are_refused():
    set_seed(0)
    model = GPTModel(NO_DROPOUT)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    history, _ = run(model, optimizer, fixed_batches(7, 2), num_epochs=2, accumulate_steps=3)
    assert (history.global_step, history.total_tokens, history.epoch) == (4, 4 * 3 * 2 * 8, 2)
    with pytest.raises(ValueError, match="accumulate_steps=8"):
        run(model, optimizer, fixed_batches(7, 2), accumulate_steps=8)


# --- mixed precision --------------------------------------------------------------------------------------


def test_bf16_loss_tracks_fp32_within_2_percent_over_50_steps():
    ids = TOKENIZER.encode(load_corpus("tiny")[:2200])  # a small slice of the corpus, character tokens
    cfg = GPTConfig(vocab_size=128, context_length=32, emb_dim=64, n_heads=4, n_layers=2)
    losses = {}
    for precision in ("fp32", "bf16"):
        set_seed(0)
        train_loader, val_loader = create_train_val_loaders(ids, batch_size=4, max_length=32, stride=16)
        model = GPTModel(cfg)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
        steps = []
        record = lambda event: event["event"] == "step" and steps.append(event["loss"])  # noqa: E731
        config = TrainingConfig(num_epochs=10, eval_freq=1000, eval_iter=1, max_steps=50, precision=precision)
        train_model(model, train_loader, val_loader, optimizer, config, callbacks=[record], progress=False)
        losses[precision] = steps
    assert len(losses["fp32"]) == 50 and losses["fp32"][-1] < losses["fp32"][0] - 1.0  # it really learns
    gaps = [abs(b - f) / f for b, f in zip(losses["bf16"], losses["fp32"])]
    assert max(gaps) < 0.02
    assert losses["bf16"] != losses["fp32"]  # bf16 really ran: its rounding shows in the losses


def test_fp16_needs_cuda():
    model = GPTModel(NO_DROPOUT)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="fp16' needs a CUDA GPU.*use 'bf16'"):
        run(model, optimizer, fixed_batches(2, 2), precision="fp16")


# --- gradient checkpointing -------------------------------------------------------------------------------


def test_gradient_checkpointing_recomputes_the_blocks_and_gives_the_same_gradients():
    set_seed(0)
    model = GPTModel(CFG).train()  # dropout on: the recomputation must replay the same masks
    batch = fixed_batches(1, 3, seq=16)[0]
    calls = []
    for block in model.blocks:
        # A pre-hook: the recomputation stops as soon as it has what backward needs, before forward hooks run.
        block.register_forward_pre_hook(lambda module, inputs: calls.append(module))

    grads = {}
    for checkpointing in (False, True):
        model.gradient_checkpointing = checkpointing
        model.zero_grad()
        calls.clear()
        torch.manual_seed(1)
        next_token_loss(model, batch).backward()
        grads[checkpointing] = [p.grad.clone() for p in model.parameters()]
        assert len(calls) == (2 if checkpointing else 1) * CFG.n_layers  # each block ran again in backward

    for plain, checkpointed in zip(grads[False], grads[True]):
        torch.testing.assert_close(checkpointed, plain, atol=1e-5, rtol=0)
    calls.clear()
    with torch.no_grad():
        model(batch[0])
    assert len(calls) == CFG.n_layers  # nothing to recompute without gradients


def test_the_config_switches_gradient_checkpointing_on():
    set_seed(0)
    model = GPTModel(NO_DROPOUT)
    run(model, torch.optim.SGD(model.parameters(), lr=0.1), fixed_batches(2, 2), grad_checkpointing=True)
    assert model.gradient_checkpointing
    run(model, torch.optim.SGD(model.parameters(), lr=0.1), fixed_batches(2, 2))
    assert not model.gradient_checkpointing


# --- exact resumption -------------------------------------------------------------------------------------

RESUME_CONFIG = TrainingConfig(
    batch_size=2, max_length=8, num_epochs=2, eval_freq=3, eval_iter=2, start_context="The", sample_tokens=3,
    lr=1e-2, weight_decay=0.01, warmup_steps=3, min_lr=1e-3, grad_clip=0.5, accumulate_steps=2,
)  # fmt: skip


def new_run(seed=0):
    set_seed(seed)
    model = GPTModel(CFG)  # dropout 0.1: the losses depend on the RNG state
    return model, torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)


def pro_train(model, optimizer, losses, stop_after=None, history=None, config=RESUME_CONFIG):
    train_loader, val_loader = create_train_val_loaders(
        TOKENIZER.encode(load_corpus("tiny")[:300]), batch_size=2, max_length=8, stride=8
    )  # 16 batches of 2 windows: 8 optimizer steps of 2 batches per epoch

    def record(event):
        if event["event"] == "step":
            losses.append(event["loss"])
            if stop_after is not None and event["step"] == stop_after:
                raise KeyboardInterrupt  # what the CLI does at a step boundary after Ctrl-C

    history = TrainingHistory() if history is None else history
    try:
        train_model(model, train_loader, val_loader, optimizer, config, tokenizer=TOKENIZER, progress=False,
                    callbacks=[record], history=history)  # fmt: skip
    except KeyboardInterrupt:
        pass
    return history


@pytest.mark.parametrize("stop_after", [2, 3, 8, 11])  # mid-epoch, at an evaluation, at an epoch's end
def test_an_interrupted_run_resumes_bit_identically(tmp_path, stop_after):
    model, optimizer = new_run()
    full_losses = []
    full_history = pro_train(model, optimizer, full_losses)
    full_state = model.state_dict()

    model, optimizer = new_run()
    first_losses = []
    history = pro_train(model, optimizer, first_losses, stop_after=stop_after)
    assert history.global_step == stop_after and len(first_losses) == stop_after
    save_checkpoint(tmp_path / "run.pt", model, optimizer, history=asdict(history))
    torch.rand(100)  # whatever happens in between

    model, optimizer = new_run(seed=99)
    _, checkpoint = load_checkpoint(tmp_path / "run.pt", model=model, optimizer=optimizer)
    restore_rng_state(checkpoint["rng_state"])
    rest_losses = []
    resumed = pro_train(model, optimizer, rest_losses, history=TrainingHistory(**checkpoint["history"]))

    assert first_losses + rest_losses == full_losses  # bit-identical
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), full_state.values()))
    for field in fields(TrainingHistory):
        if field.name != "epoch_rng_state":
            assert getattr(resumed, field.name) == getattr(full_history, field.name), field.name

    # Without the random state, dropout and the losses differ: the test can tell.
    model, optimizer = new_run(seed=99)
    load_checkpoint(tmp_path / "run.pt", model=model, optimizer=optimizer)
    other_losses = []
    pro_train(model, optimizer, other_losses, history=TrainingHistory(**checkpoint["history"]))
    assert other_losses != rest_losses


# --- the command line -------------------------------------------------------------------------------------

PRO_RUN = (
    "train --corpus tiny --model-size tiny --epochs 1 --eval-freq 4 --eval-iter 1 --max-new-tokens 4 --quiet "
    "--context-length 16 --batch-size 4 --accumulate 2 --warmup-steps 2 --min-lr 1e-5 --grad-clip 1.0 "
    "--grad-checkpointing"
).split()


def test_ctrl_c_saves_a_checkpoint_that_resumes_to_the_same_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    real_train_model = pipeline.train_model
    losses, sigint_at_step = [], []

    def recording_train_model(*args, callbacks=(), **kwargs):
        def record(event):
            if event["event"] == "step":
                losses.append(event["loss"])
                if event["step"] in sigint_at_step:
                    os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, in the middle of training

        return real_train_model(*args, callbacks=[record, *callbacks], **kwargs)

    monkeypatch.setattr(pipeline, "train_model", recording_train_model)
    assert cli.main(PRO_RUN + ["--output", "full"]) == 0
    full_losses = losses.copy()
    _, full = load_checkpoint(tmp_path / "full" / "gpt-course.pt")
    assert len(full_losses) == full["training"]["history"]["global_step"] >= 6
    assert full["training"]["config"]["warmup_steps"] == 2 and full["training"]["config"]["max_length"] == 16

    losses.clear()
    sigint_at_step.append(4)  # it stops at this step's event, before step 4's evaluation, which is owed
    assert cli.main(PRO_RUN + ["--output", "cut"]) == 130
    err = capsys.readouterr().err
    interrupted = tmp_path / "cut" / "gpt-course-interrupted.pt"
    assert "stopping after this step" in err and "--resume cut/gpt-course-interrupted.pt" in err
    assert not (tmp_path / "cut" / "gpt-course.pt").exists()
    _, cut = load_checkpoint(interrupted)
    assert cut["training"]["history"]["global_step"] == len(losses) == 4
    assert cut["training"]["history"]["steps"] == [0]

    # Options that define the run's data and batches cannot change on resumption.
    assert cli.main(["train", "--resume", str(interrupted), "--batch-size", "2"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--batch-size 2 differs from the resumed run's 4" in err
    assert cli.main(["train", "--resume", str(interrupted), "--model-size", "course"]) == 1
    assert "--model-size course differs from the resumed run's tiny" in capsys.readouterr().err

    losses.clear()
    sigint_at_step.clear()
    assert cli.main(["train", "--resume", str(interrupted), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "Resuming at step 4" in out
    _, resumed = load_checkpoint(tmp_path / "cut" / "gpt-course.pt")  # the stored --output
    assert full_losses[:4] + losses == full_losses  # bit-identical on CPU
    assert not interrupted.exists()  # the finished run leaves no interrupted checkpoint behind
    rng_states = resumed["training"]["history"].pop("epoch_rng_state"), full["training"]["history"].pop("epoch_rng_state")
    assert resumed["training"]["history"] == full["training"]["history"] and torch.equal(*rng_states)
    assert all(torch.equal(a, b) for a, b in zip(resumed["model_state"].values(), full["model_state"].values()))


def test_a_resumed_run_applies_every_option_typed_even_a_default_one(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(PRO_RUN + ["--output", "one", "--max-steps", "3"]) == 0
    first = tmp_path / "one" / "gpt-course.pt"
    steps_per_epoch = load_checkpoint(first)[1]["training"]["history"]["global_step"]
    assert steps_per_epoch == 3  # --max-steps 3 of the epoch's 8
    # --epochs 3 is TrainingConfig's default, yet it changes the stored run's 1 epoch.
    assert cli.main(["train", "--resume", str(first), "--epochs", "3", "--max-steps", "30", "--eval-freq", "5",
                     "--lr", "0.001", "--output", "three", "--quiet"]) == 0  # fmt: skip
    _, checkpoint = load_checkpoint(tmp_path / "three" / "gpt-course.pt")
    config = checkpoint["training"]["config"]
    assert (config["num_epochs"], config["max_steps"], config["eval_freq"], config["lr"]) == (3, 30, 5, 0.001)
    assert checkpoint["training"]["history"]["epoch"] == 3
    assert checkpoint["optimizer_state"]["param_groups"][0]["lr"] < 0.001  # the new peak, decayed by the cosine
    capsys.readouterr()


def test_a_resumed_run_must_read_the_same_text(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    text = tmp_path / "mine.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 60, encoding="utf-8")
    run = ["train", "--text", str(text), "--model-size", "tiny", "--context-length", "16", "--quiet",
           "--max-steps", "2", "--max-new-tokens", "2"]  # fmt: skip
    assert cli.main(run) == 0
    text.write_text("The quick brown cat jumps over the lazy dog. " * 60, encoding="utf-8")  # same length
    assert cli.main(["train", "--resume", "models/gpt-course.pt", "--max-steps", "4"]) == 1
    err = capsys.readouterr().err
    assert "not the one the resumed run started with" in err and err.count("\n") == 1


class TwoProcesses:
    """Stands in for a DistributedContext: the all-reduce of this process and another one."""

    def __init__(self, other_process_value: float):
        self.other = other_process_value

    def all_reduce_mean(self, value: float) -> float:
        return (value + self.other) / 2


def test_under_torchrun_a_ctrl_c_in_any_process_stops_all_at_the_same_event():
    pipeline._StopAtStepBoundary(TwoProcesses(0.0)).check({"event": "step"})  # nobody pressed Ctrl-C: go on
    with pytest.raises(KeyboardInterrupt):
        pipeline._StopAtStepBoundary(TwoProcesses(1.0)).check({"event": "step"})  # the other process got it
    here = pipeline._StopAtStepBoundary(TwoProcesses(0.0))
    here.requested = True  # this process got it, the other not yet
    with pytest.raises(KeyboardInterrupt):
        here.check({"event": "eval"})


def test_help_describes_the_new_options(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = capsys.readouterr().out
    options = "--warmup-steps --min-lr --grad-clip --accumulate --precision --grad-checkpointing --resume".split()
    assert [option for option in options if option not in text] == []


@pytest.mark.parametrize(
    "args",
    [["--precision", "fp16", "--device", "cpu"], ["--precision", "fp64"], ["--accumulate", "0"],
     ["--grad-clip", "0"], ["--warmup-steps", "-1"], ["--min-lr", "0.1"], ["--min-lr", "-1"]],
    ids=lambda args: " ".join(args),
)  # fmt: skip
def test_bad_new_options_get_a_one_line_error(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("llm-course: error: ")


@pytest.mark.parametrize(
    "args, message",
    [(["--accumulate", "1000"], "fewer than accumulate_steps 1000"), (["--warmup-steps", "1000"], "exceeds the run's")],
)
def test_options_that_do_not_fit_the_data_get_a_one_line_error(tmp_path, monkeypatch, args, message, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "--corpus", "tiny", "--model-size", "tiny", "--quiet", *args]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_the_fp16_path_clips_the_unscaled_gradients(monkeypatch):
    # fp16 is offered on CUDA only; CPU autocast and torch's CPU GradScaler run the same code path here.
    from llm_course import training

    scalers = []

    def cpu_fp16(precision, device):
        scalers.append(torch.amp.GradScaler("cpu", init_scale=2.0**12, enabled=precision == "fp16"))
        autocast = torch.autocast("cpu", dtype=torch.float16, enabled=precision == "fp16")
        return autocast, scalers[-1]

    monkeypatch.setattr(training, "mixed_precision", cpu_fp16)
    norms = {}
    for precision in ("fp32", "fp16"):
        set_seed(0)
        model = GPTModel(NO_DROPOUT)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        history, steps = run(model, optimizer, fixed_batches(4, 4), grad_clip=0.5, precision=precision)
        norms[precision] = [step["grad_norm"] for step in steps]
    assert scalers[-1].is_enabled() and scalers[-1].get_scale() == 2.0**12  # no overflow: no step was skipped
    assert history.grad_scaler_state["scale"] == 2.0**12  # kept for an exact resumption
    # Clipping saw the true gradients, not the ones multiplied by the loss scale (4096).
    assert norms["fp16"] == pytest.approx(norms["fp32"], rel=0.05)


def test_mixed_precision_contexts():
    from llm_course import mixed_precision

    autocast, scaler = mixed_precision("bf16", torch.device("cpu"))
    with autocast:
        assert torch.ones(2, 2).mm(torch.ones(2, 2)).dtype == torch.bfloat16
    assert not scaler.is_enabled()
    autocast, scaler = mixed_precision("fp32", torch.device("cpu"))
    with autocast:
        assert torch.ones(2, 2).mm(torch.ones(2, 2)).dtype == torch.float32
    with pytest.raises(ValueError, match="fp16' needs a CUDA GPU"):
        mixed_precision("fp16", torch.device("cpu"))
