"""Chapter 4: pretraining a GPT on unlabeled text: the loss, evaluation, the training loop and loss curves.

Pretraining is next-token prediction: for every position of every window the model scores the whole
vocabulary, and the loss is the cross-entropy between those scores and the token that really follows.
`train_model` is the course's one training loop; later chapters extend it through its `callbacks` hook
instead of writing another one.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from .cpu_memory import reuse_freed_memory
from .dataset import create_dataloader
from .generation import generate, text_to_token_ids, token_ids_to_text

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .distributed import DistributedContext

__all__ = [
    "TrainingConfig",
    "TrainingHistory",
    "calc_loss_batch",
    "calc_loss_loader",
    "create_train_val_loaders",
    "evaluate_model",
    "lr_at_step",
    "overfitting_start",
    "perplexity",
    "plot_losses",
    "plot_lr_schedule",
    "train_model",
    "warmup_cosine_schedule",
]

CHAPTER = 4


@dataclass
class TrainingConfig:
    """The course's pretraining settings: small enough to train on a laptop's CPU in minutes."""

    lr: float = 5e-4  # AdamW's learning rate
    weight_decay: float = 0.01  # AdamW's decoupled weight decay
    batch_size: int = 8  # windows per optimizer step
    max_length: int = 32  # tokens per training window (at most the model's context_length)
    stride: int = 16  # tokens between the starts of consecutive windows (< max_length: windows overlap)
    num_epochs: int = 3  # passes over the training split
    train_ratio: float = 0.9  # the first 90% of the text trains, the last 10% validates
    eval_freq: int = 20  # evaluate every eval_freq optimizer steps
    eval_iter: int = 5  # batches per split in each evaluation (an estimate, not the full loss)
    seed: int = 123
    start_context: str = "Fellow-Citizens of the Senate and House of Representatives:"  # prompt for the samples
    sample_tokens: int = 20  # tokens generated (greedily) at each evaluation


@dataclass
class TrainingHistory:
    """What `train_model` measured, and where it stands, so that training can continue from a checkpoint.

    The lists have one entry per evaluation: the optimizer steps done, the tokens trained on, the epochs
    done (fractional), the estimated training and validation losses and the generated sample (samples
    stays empty without a start_context). The counters say where the loop is.
    """

    steps: list[int] = field(default_factory=list)
    tokens_seen: list[int] = field(default_factory=list)
    epochs: list[float] = field(default_factory=list)
    train_losses: list[float] = field(default_factory=list)
    val_losses: list[float] = field(default_factory=list)
    samples: list[str] = field(default_factory=list)
    global_step: int = 0  # optimizer steps done
    total_tokens: int = 0  # tokens trained on
    epoch: int = 0  # the epoch in progress (= completed epochs)
    batch_in_epoch: int = 0  # batches of that epoch already trained on
    epoch_rng_state: torch.Tensor | None = None  # CPU RNG state when that epoch began: replays its shuffle


def calc_loss_batch(
    input_batch: torch.Tensor, target_batch: torch.Tensor, model: nn.Module, device: torch.device | str
) -> torch.Tensor:
    """The mean cross-entropy of the model's next-token predictions over a batch, as a scalar tensor.

    input_batch and target_batch: (batch, seq) token ids, the targets being the inputs shifted by one.
    """
    input_batch, target_batch = input_batch.to(device), target_batch.to(device)
    logits = model(input_batch)  # (batch, seq, vocab)
    # cross_entropy wants (N, classes) scores and (N,) class ids: every position is one prediction.
    return F.cross_entropy(logits.flatten(0, 1), target_batch.flatten())


def calc_loss_loader(
    data_loader: DataLoader, model: nn.Module, device: torch.device | str, num_batches: int | None = None
) -> float:
    """The average of `calc_loss_batch` over the loader's first `num_batches` batches (all when None).

    Runs without gradients and in the model's current mode (`evaluate_model` switches dropout off).
    """
    available = len(data_loader)
    if available == 0:
        raise ValueError("the data loader has no batches: use more text, a smaller batch_size or a smaller max_length")
    if num_batches is not None and (
        isinstance(num_batches, bool) or not isinstance(num_batches, int) or num_batches < 1
    ):
        raise ValueError(f"num_batches must be None or an integer >= 1, got {num_batches!r}")
    num_batches = available if num_batches is None else min(num_batches, available)
    total = 0.0
    with torch.no_grad():
        for i, (input_batch, target_batch) in enumerate(data_loader):
            if i == num_batches:
                break
            total += calc_loss_batch(input_batch, target_batch, model, device).item()
    return total / num_batches


def evaluate_model(
    model: nn.Module, train_loader: DataLoader, val_loader: DataLoader, device: torch.device | str, eval_iter: int
) -> tuple[float, float]:
    """Estimate (training loss, validation loss) on `eval_iter` batches of each, with dropout off."""
    was_training = model.training
    model.eval()
    try:
        train_loss = calc_loss_loader(train_loader, model, device, num_batches=eval_iter)
        val_loss = calc_loss_loader(val_loader, model, device, num_batches=eval_iter)
    finally:
        model.train(was_training)
    return train_loss, val_loss


def perplexity(loss: float | torch.Tensor) -> float:
    """exp(loss): the number of tokens the model is, in effect, choosing between at each step.

    An untrained GPT-2-sized vocabulary model starts near 50,257 (uniform guessing); lower is better.
    """
    loss = loss.item() if isinstance(loss, torch.Tensor) else float(loss)  # .item(): no autograd warning
    return math.exp(loss) if loss < 709 else math.inf  # exp overflows a float above ~709.78


def create_train_val_loaders(
    text: str,
    tokenizer=None,
    *,
    batch_size: int = TrainingConfig.batch_size,
    max_length: int = TrainingConfig.max_length,
    stride: int = TrainingConfig.stride,
    train_ratio: float = TrainingConfig.train_ratio,
    num_workers: int = 0,
) -> tuple[DataLoader, DataLoader]:
    """Split `text` by characters (the first train_ratio for training, the rest for validation) and return
    (train_loader, val_loader) of (batch, max_length) windows.

    Training batches are shuffled (by torch's global generator: seed it for a reproducible order) and a
    last incomplete batch is dropped; validation batches keep their order and the last one is kept.
    """
    if isinstance(train_ratio, bool) or not isinstance(train_ratio, (int, float)) or not 0 < train_ratio < 1:
        raise ValueError(f"train_ratio must be a number strictly between 0 and 1, got {train_ratio!r}")
    split = int(train_ratio * len(text))
    loaders = []
    for name, part, training in (("training", text[:split], True), ("validation", text[split:], False)):
        try:
            loader = create_dataloader(
                part,
                batch_size=batch_size,
                max_length=max_length,
                stride=stride,
                shuffle=training,
                drop_last=training,
                num_workers=num_workers,
                tokenizer=tokenizer,
            )
        except ValueError as err:
            raise ValueError(
                f"the {name} split ({len(part):,} of {len(text):,} characters, train_ratio={train_ratio}) is too "
                f"short: {err}"
            ) from err
        loaders.append(loader)
    return loaders[0], loaders[1]


def lr_at_step(step: int, total_steps: int, peak_lr: float, warmup_steps: int = 0, min_lr: float = 0.0) -> float:
    """The learning rate of optimizer step `step` (0-based) under linear warmup and cosine decay.

    The first `warmup_steps` steps climb linearly to `peak_lr` (step 0 uses peak_lr / warmup_steps), so that
    the first updates, made while AdamW's moment estimates are still noisy, stay small. The remaining steps
    follow half a cosine from `peak_lr` down towards `min_lr`, reached at `total_steps` and kept afterwards.
    `min_lr == peak_lr` without warmup is a constant rate.
    """
    for name, value in (("step", step), ("total_steps", total_steps), ("warmup_steps", warmup_steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    if total_steps < 1 or warmup_steps > total_steps:
        raise ValueError(f"need 1 <= total_steps and warmup_steps <= total_steps, got {total_steps} and {warmup_steps}")
    if not 0 <= min_lr <= peak_lr:
        raise ValueError(f"need 0 <= min_lr <= peak_lr, got min_lr={min_lr!r} and peak_lr={peak_lr!r}")
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))  # 0 -> 1 over the decay
    return min_lr + (peak_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


def warmup_cosine_schedule(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0, min_lr: float = 0.0
) -> torch.optim.lr_scheduler.LambdaLR:
    """A scheduler that sets the optimizer's learning rate to `lr_at_step` before every step, with the
    optimizer's own lr as the peak. Call `scheduler.step()` once per optimizer step (`train_model` does);
    its `state_dict()` goes into checkpoints so that a resumed run continues on the same curve.
    """
    peak_lr = optimizer.param_groups[0]["lr"]
    lr_at_step(0, total_steps, peak_lr, warmup_steps, min_lr)  # check the arguments now, not at the first step
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_at_step(step, total_steps, peak_lr, warmup_steps, min_lr) / peak_lr
    )


def plot_lr_schedule(total_steps: int, peak_lr: float, warmup_steps: int = 0, min_lr: float = 0.0) -> Figure:
    """The learning rate of every step under `lr_at_step`, with the end of the warmup marked."""
    import matplotlib.pyplot as plt

    steps = range(total_steps)
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.plot(steps, [lr_at_step(s, total_steps, peak_lr, warmup_steps, min_lr) for s in steps])
    if warmup_steps:
        ax.axvline(warmup_steps - 1, color="tab:gray", linestyle="--", linewidth=1)
        ax.annotate("end of warmup", xy=(warmup_steps - 1, peak_lr), xytext=(6, -12), textcoords="offset points")
    ax.axhline(min_lr, color="tab:gray", linestyle=":", linewidth=1)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("learning rate")
    ax.set_title(f"warmup ({warmup_steps} steps) and cosine decay to {min_lr:g}")
    fig.tight_layout()
    return fig


PRECISIONS = ("fp32", "bf16", "fp16")


def _mixed_precision(
    precision: str, device: torch.device | str, grad_scaler: torch.amp.GradScaler | None
) -> tuple[Callable[[], Any], torch.amp.GradScaler | None]:
    """(a function returning the forward pass's autocast context, the grad scaler or None) for `precision`."""
    device_type = torch.device(device).type
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        if grad_scaler is not None:
            raise ValueError("a grad_scaler is only used with precision='fp16'")
        return nullcontext, None
    if precision == "fp16":
        if device_type != "cuda":
            raise ValueError(
                f"precision 'fp16' needs a CUDA GPU (its loss scaling is CUDA-only), but the device is "
                f"{device_type}: use 'bf16', which needs no loss scaling, or 'fp32'"
            )
        grad_scaler = torch.amp.GradScaler("cuda") if grad_scaler is None else grad_scaler
    elif grad_scaler is not None:
        raise ValueError("bf16 has fp32's range and needs no grad_scaler: pass grad_scaler only with 'fp16'")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return (lambda: torch.autocast(device_type, dtype=dtype)), grad_scaler


def _epoch_batches(train_loader: DataLoader, history: TrainingHistory) -> Iterator:
    """The batches of the epoch in progress that are still to be trained on.

    A new epoch records the RNG state its shuffle starts from. An epoch interrupted after k batches (a
    resumed checkpoint) replays the same shuffle from that state and skips its first k batches, then
    restores the current RNG state, so that dropout continues as if training had never stopped.
    """
    sampler = getattr(train_loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(history.epoch)  # a DistributedSampler shuffles by (seed, epoch), not by the RNG
    if history.batch_in_epoch == 0:
        history.epoch_rng_state = torch.get_rng_state()
        return iter(train_loader)
    current = torch.get_rng_state()
    torch.set_rng_state(history.epoch_rng_state)
    batches = iter(train_loader)
    for _ in range(history.batch_in_epoch):
        next(batches)
    torch.set_rng_state(current)
    return batches


def train_model(
    model: nn.Module,
    train_loader: DataLoader,
    val_loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    device: torch.device | str,
    num_epochs: int,
    eval_freq: int,
    eval_iter: int,
    start_context: str | None = None,
    tokenizer=None,
    *,
    sample_tokens: int = TrainingConfig.sample_tokens,
    callbacks: Sequence[Callable[[dict[str, Any]], None]] = (),
    history: TrainingHistory | None = None,
    max_steps: int | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    grad_clip: float | None = None,
    accumulate_steps: int = 1,
    precision: str = "fp32",
    grad_scaler: torch.amp.GradScaler | None = None,
    distributed: DistributedContext | None = None,
    progress: bool = True,
    verbose: bool = False,
) -> TrainingHistory:
    """Train `model` (already on `device`) for `num_epochs` epochs and return its `TrainingHistory`.

    Before the first step, every `eval_freq` steps and after the last epoch, the loop estimates the
    training and validation losses on `eval_iter` batches each and, given a `start_context` and a
    `tokenizer`, greedily generates `sample_tokens` tokens after it. Each callback is called with an
    event dict: `{"event": "step" | "eval" | "epoch_end" | "train_end", "model", "optimizer", "history",
    "step", "epoch", "tokens_seen", "total_steps", "lr"}`, plus "loss" for a step, "train_loss",
    "val_loss", "sample" for an eval.

    Each optimizer step averages the gradients of `accumulate_steps` consecutive batches (the step's
    "loss" is their mean loss), so batch 4 with accumulate_steps 2 trains like batch 8 in half the memory;
    an epoch ends with the last full group of batches. `scheduler` is stepped after every optimizer step
    (see `warmup_cosine_schedule`). `grad_clip` rescales the gradients whenever their global norm exceeds
    it; the norm before clipping is the step's "grad_norm" (shown in the progress bar). `precision`
    "bf16" runs the forward pass under bf16 autocast (weights, gradients and optimizer state stay fp32);
    "fp16" does the same in fp16 on CUDA with a `grad_scaler` (created when not given) that scales the
    loss so that small fp16 gradients do not underflow to zero. Evaluations always run in fp32.

    Pass a previous run's `history` (and restore the model, optimizer, scheduler, grad scaler and RNG
    states from its checkpoint) to continue that run exactly where it stopped; `max_steps` stops after
    that many optimizer steps in all.
    `progress` shows a tqdm bar and `verbose` prints each evaluation, through a `ProgressLog` callback.

    In a run of several processes (see llm_course.distributed), pass the DDP-wrapped model and the
    process's `distributed` context: step and evaluation losses are then averaged over all processes,
    tokens_seen counts every process's tokens, and evaluations and samples use the unwrapped model.

    On a CPU, training first calls `reuse_freed_memory()` (llm_course/cpu_memory.py), which lets every step
    reuse the large blocks of memory the previous step freed; the setting holds for the whole process.
    """
    from .live import ProgressLog  # imported here: live.py imports this module

    if isinstance(eval_freq, bool) or not isinstance(eval_freq, int) or eval_freq < 1:
        raise ValueError(f"eval_freq must be an integer >= 1, got {eval_freq!r}")
    if isinstance(accumulate_steps, bool) or not isinstance(accumulate_steps, int) or accumulate_steps < 1:
        raise ValueError(f"accumulate_steps must be an integer >= 1, got {accumulate_steps!r}")
    if grad_clip is not None and not grad_clip > 0:
        raise ValueError(f"grad_clip must be None or a number > 0, got {grad_clip!r}")
    if distributed is not None and not isinstance(model, nn.parallel.DistributedDataParallel):
        raise TypeError("in a multi-process run, pass the model wrapped for it: wrap_model(model, distributed)")
    if len(train_loader) == 0:
        raise ValueError("the training loader has no batches: use more text or a smaller batch_size")
    steps_per_epoch = len(train_loader) // accumulate_steps
    if steps_per_epoch == 0:
        raise ValueError(
            f"the training loader has {len(train_loader)} batches, fewer than accumulate_steps={accumulate_steps}: "
            "accumulate fewer batches, use a smaller batch_size or more text"
        )
    batches_per_epoch = steps_per_epoch * accumulate_steps  # a last, incomplete group of batches is left out
    autocast, grad_scaler = _mixed_precision(precision, device, grad_scaler)
    if torch.device(device).type == "cpu":
        reuse_freed_memory()  # each step reuses the large blocks the previous one freed (for the whole process)
    history = TrainingHistory() if history is None else history
    total_steps = num_epochs * steps_per_epoch if max_steps is None else min(max_steps, num_epochs * steps_per_epoch)
    if progress or verbose:  # the bar and the log lines are a callback too, driven by the same events
        callbacks = [ProgressLog(bar=progress, log_evals=verbose), *callbacks]

    def notify(event: str, **values) -> None:
        info = dict(
            event=event,
            model=model,
            optimizer=optimizer,
            history=history,
            step=history.global_step,
            epoch=history.global_step / steps_per_epoch,
            tokens_seen=history.total_tokens,
            total_steps=total_steps,
            lr=optimizer.param_groups[0]["lr"],  # the rate the next step will use (schedules change it)
            **values,
        )
        for callback in callbacks:
            callback(info)

    plain_model = model if distributed is None else model.module  # no DDP: evaluation needs no gradient sync

    def evaluate() -> None:
        train_loss, val_loss = evaluate_model(plain_model, train_loader, val_loader, device, eval_iter)
        if distributed is not None:  # each process estimated on its own shard
            train_loss, val_loss = distributed.all_reduce_mean(train_loss), distributed.all_reduce_mean(val_loss)
        history.steps.append(history.global_step)
        history.tokens_seen.append(history.total_tokens)
        history.epochs.append(history.global_step / steps_per_epoch)
        history.train_losses.append(train_loss)
        history.val_losses.append(val_loss)
        sample = None
        if start_context is not None and tokenizer is not None:
            idx = text_to_token_ids(start_context, tokenizer).to(device)
            sample = token_ids_to_text(generate(plain_model, idx, max_new_tokens=sample_tokens), tokenizer)
            history.samples.append(sample)
        notify("eval", train_loss=train_loss, val_loss=val_loss, sample=sample)

    def stop() -> bool:
        return max_steps is not None and history.global_step >= max_steps

    if not history.steps or (history.global_step % eval_freq == 0 and history.steps[-1] != history.global_step):
        evaluate()  # the untrained model's losses (about ln(vocab_size)), or one a stopped run still owed
    model.train()
    for _ in range(history.epoch, num_epochs):
        if stop():
            break
        batches = _epoch_batches(train_loader, history)
        while history.batch_in_epoch < batches_per_epoch:
            optimizer.zero_grad()
            step_loss = torch.zeros((), device=device)
            for micro_batch in range(accumulate_steps):
                input_batch, target_batch = next(batches)
                # Under DDP each backward pass averages the gradients over the processes; averaging the sum
                # once, after the last micro-batch, gives the same result with one exchange per step.
                last = micro_batch == accumulate_steps - 1
                with nullcontext() if distributed is None or last else model.no_sync():
                    with autocast():
                        loss = calc_loss_batch(input_batch, target_batch, model, device)
                    # The gradients of the micro-batches add up, so each contributes 1/accumulate_steps of its
                    # own: their sum is the gradient of the mean loss, as for one big batch.
                    scaled = loss / accumulate_steps
                    (scaled if grad_scaler is None else grad_scaler.scale(scaled)).backward()
                step_loss += scaled.detach()
                history.total_tokens += input_batch.numel() * (1 if distributed is None else distributed.world_size)
                history.batch_in_epoch += 1
            step_info = {}
            if grad_clip is not None:
                if grad_scaler is not None:
                    grad_scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
                step_info["grad_norm"] = nn.utils.clip_grad_norm_(model.parameters(), grad_clip).item()
            if grad_scaler is None:
                optimizer.step()  # move every parameter a small step downhill
            else:
                grad_scaler.step(optimizer)  # skipped when the fp16 gradients overflowed
                grad_scaler.update()  # a smaller scale after an overflow, a larger one after many clean steps
            if scheduler is not None:
                scheduler.step()
            history.global_step += 1
            step_loss = step_loss.item() if distributed is None else distributed.all_reduce_mean(step_loss.item())
            notify("step", loss=step_loss, **step_info)
            if history.global_step % eval_freq == 0:
                evaluate()
            if stop():
                break
        if history.batch_in_epoch == batches_per_epoch:
            history.epoch += 1
            history.batch_in_epoch = 0
            notify("epoch_end")
    if history.epoch == num_epochs and history.steps[-1] != history.global_step:
        evaluate()  # the finished model's losses
    notify("train_end")
    return history


def overfitting_start(history: TrainingHistory, tolerance: float = 0.01) -> int | None:
    """The index of the evaluation after which the model overfits, or None.

    That is the evaluation with the lowest validation loss when, by the last evaluation, the validation
    loss has risen more than `tolerance` (relative) above that minimum while the training loss has kept falling.
    """
    val, train = history.val_losses, history.train_losses
    if len(val) < 2:
        return None
    best = min(range(len(val)), key=val.__getitem__)
    if val[-1] > val[best] * (1 + tolerance) and train[-1] < train[best]:
        return best
    return None


def plot_losses(history: TrainingHistory, title: str | None = None) -> Figure:
    """Training and validation loss against epochs (bottom axis) and tokens seen (top axis).

    When the validation loss turns upward while the training loss keeps falling (`overfitting_start`),
    a dashed line marks where overfitting begins.
    """
    import matplotlib.pyplot as plt

    if not history.steps:
        raise ValueError("the history has no evaluations to plot: train with train_model first")
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(history.epochs, history.train_losses, label="training loss")
    ax.plot(history.epochs, history.val_losses, linestyle="-.", label="validation loss")
    ax.set_xlabel("epochs")
    ax.set_ylabel("loss (cross-entropy)")
    if history.epochs[-1] > 0:
        # tokens_seen grows linearly with steps, so a second scale on the same axis shows it.
        tokens_per_epoch = history.tokens_seen[-1] / history.epochs[-1]
        top = ax.secondary_xaxis("top", functions=(lambda e: e * tokens_per_epoch, lambda t: t / tokens_per_epoch))
        top.set_xlabel("tokens seen")
    start = overfitting_start(history)
    if start is not None:
        ax.axvline(history.epochs[start], color="tab:red", linestyle="--", linewidth=1)
        ax.annotate(
            "overfitting: validation loss rises\nwhile training loss falls",
            xy=(history.epochs[start], history.val_losses[start]),
            xytext=(8, 24),
            textcoords="offset points",
            color="tab:red",
            fontsize=9,
        )
    ax.legend(loc="upper right")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig
