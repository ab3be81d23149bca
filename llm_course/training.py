"""Chapter 4: pretraining a GPT on unlabeled text: the loss, evaluation, the training loop and loss curves.

Pretraining is next-token prediction: for every position of every window the model scores the whole
vocabulary, and the loss is the cross-entropy between those scores and the token that really follows.
`train_model` is the course's one training loop: pretraining uses its default loss, and the fine-tuning
chapters pass their own `loss_fn`. The options for larger runs (a learning-rate schedule, gradient
clipping and accumulation, mixed precision, exact resumption) are part of it from the start, switched off
by default; chapter 5 explains them, and `CHAPTERS` records the objects it introduces.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from .dataset import create_dataloader
from .generation import generate, text_to_token_ids, token_ids_to_text
from .progress import ProgressBar
from .utils import check_int, check_number

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .distributed import DistributedContext

__all__ = [
    "TrainingConfig",
    "TrainingHistory",
    "bits_per_byte",
    "calc_loss_loader",
    "configure_optimizer",
    "create_train_val_loaders",
    "epoch_batches",
    "evaluate_model",
    "lr_at_step",
    "mixed_precision",
    "next_token_loss",
    "overfitting_start",
    "perplexity",
    "plot_losses",
    "plot_lr_schedule",
    "train_model",
    "train_step",
]

CHAPTER = 4
CHAPTERS = {"bits_per_byte": 5, "epoch_batches": 5, "lr_at_step": 5, "mixed_precision": 5, "plot_lr_schedule": 5}  # introduced by chapter 5

PRECISIONS = ("fp32", "bf16", "fp16")
DEFAULT_PROMPT = "Fellow-Citizens of the Senate and House of Representatives:\n\n"  # how every address starts


@dataclass
class TrainingConfig:
    """Everything that defines a training run, checked once, when it is built.

    The defaults are the course's pretraining run: the course model on Washington's addresses, a few
    minutes on a laptop's CPU. The last group of options is for larger runs (chapter 5).
    """

    # The data
    batch_size: int = 8  # windows per batch
    max_length: int = 64  # tokens per window: the course model's whole context, so every position trains
    stride: int | None = None  # tokens between window starts; None: max_length (windows side by side)
    train_ratio: float = 0.9  # the first 90% of the tokens train, the last 10% validate
    # The optimizer, AdamW
    lr: float = 5e-4  # the (peak) learning rate
    weight_decay: float = 0.1  # pulls weight matrices towards zero; not biases and norms (configure_optimizer)
    betas: tuple[float, float] = (0.9, 0.95)  # how slowly AdamW's two moment estimates forget
    # How long, and how often to look
    num_epochs: int = 6  # passes over the training split
    max_steps: int | None = None  # stop after this many optimizer steps in all (None: all num_epochs)
    eval_freq: int = 20  # evaluate every eval_freq optimizer steps
    eval_iter: int = 5  # batches per split in each evaluation (an estimate, not the full loss)
    start_context: str | None = DEFAULT_PROMPT  # the prompt of the sample generated at each evaluation
    sample_tokens: int = 20  # tokens per sample, chosen greedily (0: no samples)
    seed: int = 123
    # Larger runs (chapter 5)
    warmup_steps: int = 0  # optimizer steps over which the learning rate climbs linearly to lr
    min_lr: float | None = None  # after the warmup, half a cosine from lr down to min_lr (None: constant lr)
    grad_clip: float | None = None  # rescale the gradients whenever their global norm exceeds this
    accumulate_steps: int = 1  # batches whose gradients add up to one optimizer step
    precision: str = "fp32"  # "bf16" (CPU or GPU) or "fp16" (CUDA): autocast for the forward pass
    grad_checkpointing: bool = False  # recompute each block's activations in the backward pass

    def __post_init__(self):
        for name in ("batch_size", "max_length", "num_epochs", "eval_freq", "eval_iter", "accumulate_steps"):
            check_int(f"TrainingConfig.{name}", getattr(self, name))
        check_int("TrainingConfig.stride", self.stride, allow_none=True)
        check_int("TrainingConfig.max_steps", self.max_steps, allow_none=True)
        check_int("TrainingConfig.sample_tokens", self.sample_tokens, minimum=0)
        check_int("TrainingConfig.warmup_steps", self.warmup_steps, minimum=0)
        check_int("TrainingConfig.seed", self.seed, minimum=-(2**63))
        check_number("TrainingConfig.train_ratio", self.train_ratio, 0, 1, low_open=True, high_open=True)
        check_number("TrainingConfig.lr", self.lr, 0, low_open=True)
        check_number("TrainingConfig.weight_decay", self.weight_decay, 0)
        check_number("TrainingConfig.min_lr", self.min_lr, 0, self.lr, allow_none=True)
        check_number("TrainingConfig.grad_clip", self.grad_clip, 0, low_open=True, allow_none=True)
        if len(self.betas) != 2:
            raise ValueError(f"TrainingConfig.betas must be two numbers in [0, 1), got {self.betas!r}")
        for beta in self.betas:
            check_number("TrainingConfig.betas", beta, 0, 1, high_open=True)
        if self.precision not in PRECISIONS:
            raise ValueError(f"TrainingConfig.precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.start_context is not None and not isinstance(self.start_context, str):
            raise ValueError(f"TrainingConfig.start_context must be a str or None, got {self.start_context!r}")
        self.betas = tuple(self.betas)  # a list from JSON or a checkpoint becomes the tuple it was


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
    grad_scaler_state: dict[str, Any] | None = None  # fp16 loss scaling's state (chapter 5)


def next_token_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The mean cross-entropy of the model's next-token predictions over a batch, as a scalar tensor.

    batch = (inputs, targets), each (batch, seq) token ids, the targets being the inputs shifted by one.
    Targets of -100 are left out of the mean (the fine-tuning chapters use them for padding).
    """
    device = next(model.parameters()).device
    inputs, targets = batch[0].to(device), batch[1].to(device)
    logits = model(inputs)  # (batch, seq, vocab)
    # cross_entropy wants (N, classes) scores and (N,) class ids: every position is one prediction.
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


LossFunction = Callable[[nn.Module, Any], torch.Tensor]


def batch_tokens(batch: Any) -> int:
    """The input tokens of a batch: an (inputs, targets) pair, or a dict of tensors whose keys ending in
    "inputs" hold them (chapter 7's preference batches: chosen_inputs and rejected_inputs)."""
    if isinstance(batch, dict):
        return sum(value.numel() for key, value in batch.items() if key.endswith("inputs"))
    return batch[0].numel()


def calc_loss_loader(
    data_loader: DataLoader, model: nn.Module, num_batches: int | None = None, loss_fn: LossFunction = next_token_loss
) -> float:
    """The average of `loss_fn` over the loader's first `num_batches` batches (all when None).

    Runs without gradients and in the model's current mode (`evaluate_model` switches dropout off).
    """
    available = len(data_loader)
    if available == 0:
        raise ValueError("the data loader has no batches: use more text, a smaller batch_size or a smaller max_length")
    check_int("num_batches", num_batches, allow_none=True)
    num_batches = available if num_batches is None else min(num_batches, available)
    total = 0.0
    with torch.no_grad():
        for i, batch in enumerate(data_loader):
            if i == num_batches:
                break
            total += loss_fn(model, batch).item()
    return total / num_batches


def evaluate_model(
    model: nn.Module,
    train_loader: DataLoader,
    val_loader: DataLoader,
    eval_iter: int,
    loss_fn: LossFunction = next_token_loss,
) -> tuple[float, float]:
    """Estimate (training loss, validation loss) on `eval_iter` batches of each, with dropout off.

    The random state is put back afterwards (shuffling the training batches draws from it), so that
    evaluating more or less often never changes what training does.
    """
    was_training, rng_state = model.training, torch.get_rng_state()
    model.eval()
    try:
        train_loss = calc_loss_loader(train_loader, model, eval_iter, loss_fn)
        val_loss = calc_loss_loader(val_loader, model, eval_iter, loss_fn)
    finally:
        model.train(was_training)
        torch.set_rng_state(rng_state)
    return train_loss, val_loss


def perplexity(loss: float | torch.Tensor) -> float:
    """exp(loss): the size of a uniform choice that would be as uncertain as the model, on average.

    A loss of ln(50,257) would be a uniform guess over GPT-2's vocabulary; an untrained model that is
    confidently wrong on some tokens can score worse than that. Lower is better.
    """
    loss = loss.item() if isinstance(loss, torch.Tensor) else float(loss)  # .item(): no autograd warning
    return math.exp(loss) if loss < 709 else math.inf  # exp overflows a float above ~709.78


def bits_per_byte(loss: float, num_tokens: int, num_bytes: int) -> float:
    """A mean loss per token (in nats) over a text of `num_tokens` tokens and `num_bytes` UTF-8 bytes, as bits
    per byte: how many bits the model needs to encode each byte of the text.

    Losses per token do not compare across tokenizers (a larger vocabulary means fewer, harder tokens);
    bits per byte do, because every tokenizer covers the same bytes.
    """
    check_int("num_tokens", num_tokens)
    check_int("num_bytes", num_bytes)
    return loss * num_tokens / (num_bytes * math.log(2))


def create_train_val_loaders(
    token_ids: Sequence[int] | torch.Tensor | np.ndarray,
    *,
    batch_size: int,
    max_length: int,
    stride: int | None = None,
    train_ratio: float = 0.9,
    num_workers: int = 0,
) -> tuple[DataLoader, DataLoader]:
    """Split the token ids (the first train_ratio for training, the rest for validation) and return
    (train_loader, val_loader) of (batch, max_length) windows; `stride` None means max_length.

    Training batches are shuffled (by torch's global generator: seed it for a reproducible order) and a
    last incomplete batch is dropped; validation batches keep their order and the last one is kept.
    """
    check_number("train_ratio", train_ratio, 0, 1, low_open=True, high_open=True)
    split = int(train_ratio * len(token_ids))
    loaders = []
    for name, part, training in (("training", token_ids[:split], True), ("validation", token_ids[split:], False)):
        try:
            loader = create_dataloader(
                part,
                batch_size=batch_size,
                max_length=max_length,
                stride=stride or max_length,
                shuffle=training,
                drop_last=training,
                num_workers=num_workers,
            )
        except ValueError as err:
            raise ValueError(
                f"the {name} split ({len(part):,} of {len(token_ids):,} tokens, train_ratio={train_ratio}) is too "
                f"short: {err}"
            ) from err
        loaders.append(loader)
    return loaders[0], loaders[1]


def configure_optimizer(model: nn.Module, config: TrainingConfig) -> torch.optim.AdamW:
    """AdamW over the model's trainable parameters, with weight decay on the weight matrices only.

    Decay pulls weights towards zero, which keeps the matrices that mix features small; biases, layer-norm
    scales and shifts are single numbers per feature that set an offset or a gain, and decaying them only
    fights what they must learn (GPT-2 and nanoGPT leave them out). The fused implementation updates every
    parameter in one pass: several times faster on a CPU.
    """
    parameters = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in parameters if p.dim() >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in parameters if p.dim() < 2], "weight_decay": 0.0},
    ]
    fused = all(p.device.type in ("cpu", "cuda") for p in parameters)
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, fused=fused)


def lr_at_step(step: int, total_steps: int, peak_lr: float, warmup_steps: int = 0, min_lr: float | None = None) -> float:
    """The learning rate of optimizer step `step` (0-based) under linear warmup and cosine decay.

    The first `warmup_steps` steps climb linearly to `peak_lr` (step 0 uses peak_lr / warmup_steps), so that
    the first updates, made while AdamW's moment estimates are still noisy, stay small. The remaining steps
    follow half a cosine from `peak_lr` down to `min_lr`, reached at `total_steps` and kept afterwards.
    `min_lr` None (or equal to peak_lr) keeps the rate constant after the warmup.
    """
    check_int("step", step, minimum=0)
    check_int("total_steps", total_steps)
    check_int("warmup_steps", warmup_steps, minimum=0)
    if warmup_steps > total_steps:
        raise ValueError(f"warmup_steps ({warmup_steps}) must not exceed total_steps ({total_steps})")
    check_number("min_lr", min_lr, 0, peak_lr, allow_none=True)
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    if min_lr is None:
        return peak_lr
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))  # 0 -> 1 over the decay
    return min_lr + (peak_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


def plot_lr_schedule(total_steps: int, peak_lr: float, warmup_steps: int = 0, min_lr: float | None = None) -> Figure:
    """The learning rate of every step under `lr_at_step`, with the end of the warmup marked."""
    import matplotlib.pyplot as plt

    steps = range(total_steps)
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.plot(steps, [lr_at_step(s, total_steps, peak_lr, warmup_steps, min_lr) for s in steps])
    if warmup_steps:
        ax.axvline(warmup_steps - 1, color="tab:gray", linestyle="--", linewidth=1)
        ax.annotate("end of warmup", xy=(warmup_steps - 1, peak_lr), xytext=(6, -12), textcoords="offset points")
    if min_lr is not None:
        ax.axhline(min_lr, color="tab:gray", linestyle=":", linewidth=1)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("learning rate")
    ax.set_title(f"warmup ({warmup_steps} steps), then " + ("constant" if min_lr is None else f"cosine decay to {min_lr:g}"))
    fig.tight_layout()
    return fig


def epoch_batches(train_loader: DataLoader, history: TrainingHistory, accumulate_steps: int = 1) -> Iterator[list]:
    """The rest of the epoch in progress, as groups of `accumulate_steps` batches (one group per step).

    A new epoch records the random state its shuffle starts from. An epoch interrupted after k batches (a
    resumed checkpoint) replays the same shuffle from that state and skips its first k batches, then puts
    the current random state back, so that dropout continues as if training had never stopped. A last
    group of fewer than `accumulate_steps` batches is left out.
    """
    sampler = getattr(train_loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(history.epoch)  # a DistributedSampler shuffles by (seed, epoch), not by the RNG
    if history.batch_in_epoch == 0:
        history.epoch_rng_state = torch.get_rng_state()
        batches = iter(train_loader)
    else:
        current = torch.get_rng_state()
        torch.set_rng_state(history.epoch_rng_state)
        batches = iter(train_loader)
        for _ in range(history.batch_in_epoch):
            next(batches)
        torch.set_rng_state(current)
    for _ in range(history.batch_in_epoch // accumulate_steps, len(train_loader) // accumulate_steps):
        yield [next(batches) for _ in range(accumulate_steps)]


def mixed_precision(precision: str, device: torch.device) -> tuple[Any, torch.amp.GradScaler]:
    """(the forward pass's autocast context, the loss scaler) for "fp32", "bf16" or "fp16".

    bf16 has fp32's range, so its gradients need no scaling; fp16's small gradients would round to zero,
    so the scaler multiplies the loss before backward and divides the gradients again before the step.
    With fp32 and bf16 the scaler is switched off and passes everything through unchanged.
    """
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"precision 'fp16' needs a CUDA GPU, but the model is on {device.type}: use 'bf16'")
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    autocast = nullcontext() if precision == "fp32" else torch.autocast(device.type, dtype=dtype)
    return autocast, torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def train_step(
    model: nn.Module,
    batches: list,
    optimizer: torch.optim.Optimizer,
    loss_fn: LossFunction,
    autocast: Any,
    scaler: torch.amp.GradScaler,
    grad_clip: float | None = None,
) -> tuple[float, float | None]:
    """One optimizer step on a group of batches; returns (their mean loss, the gradient norm or None).

    With several batches (gradient accumulation), each contributes 1/len(batches) of its gradient, so
    their sum is the gradient of the mean loss, as for one big batch in a fraction of the memory.
    """
    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    for i, batch in enumerate(batches):
        # Under DDP, every backward pass averages the gradients over the processes; doing it only after
        # the last batch of the group gives the same sum with one exchange per step.
        last = i == len(batches) - 1
        with nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync():
            with autocast:  # bf16 or fp16 for the forward pass, when asked for (chapter 5)
                loss = loss_fn(model, batch) / len(batches)
            scaler.scale(loss).backward()  # fp16 scales the loss up so its small gradients stay > 0
        total += loss.item()
    grad_norm = None
    if grad_clip is not None:
        scaler.unscale_(optimizer)  # clip the true gradients, not fp16's scaled ones
        grad_norm = nn.utils.clip_grad_norm_(model.parameters(), grad_clip).item()
    scaler.step(optimizer)  # optimizer.step(): move every parameter a small step downhill
    scaler.update()  # fp16: a smaller scale after an overflow (whose step was skipped), else larger
    return total, grad_norm


def train_model(
    model: nn.Module,
    train_loader: DataLoader,
    val_loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    config: TrainingConfig,
    *,
    loss_fn: LossFunction = next_token_loss,
    tokenizer=None,
    history: TrainingHistory | None = None,
    callbacks: Sequence[Callable[[dict[str, Any]], None]] = (),
    distributed: DistributedContext | None = None,
    progress: bool = True,
) -> TrainingHistory:
    """Train `model` (already on its device) as `config` says and return its `TrainingHistory`.

    Before the first step, every `config.eval_freq` steps and at the end, the losses are estimated on
    `eval_iter` batches of each split and, given a `tokenizer`, a sample is generated after `start_context`.
    Each callback gets an event dict after every step, evaluation and epoch and at the end (see `notify`).
    The learning rate of every step comes from `config` (lr, warmup_steps, min_lr), whatever rate the
    optimizer was built with.
    Pass a previous run's `history` (with the model, optimizer and RNG states of its checkpoint) to
    continue it exactly. Under torchrun, pass the DDP-wrapped model and the process's `distributed`
    context: losses are then averaged over the processes, and evaluations use the unwrapped model.
    """
    plain_model = model.module if distributed is not None else model  # evaluation needs no DDP
    world_size = 1 if distributed is None else distributed.world_size
    device = next(model.parameters()).device
    steps_per_epoch = len(train_loader) // config.accumulate_steps
    if steps_per_epoch == 0:
        raise ValueError(f"the training loader has {len(train_loader)} batches, fewer than one step's "
                         f"accumulate_steps={config.accumulate_steps}: use more text or smaller batches")  # fmt: skip
    total_steps = config.num_epochs * steps_per_epoch
    total_steps = total_steps if config.max_steps is None else min(total_steps, config.max_steps)
    lr_at_step(0, total_steps, config.lr, config.warmup_steps, config.min_lr)  # check the schedule now
    autocast, scaler = mixed_precision(config.precision, device)
    history = TrainingHistory() if history is None else history
    if history.grad_scaler_state:
        scaler.load_state_dict(history.grad_scaler_state)
    plain_model.gradient_checkpointing = config.grad_checkpointing
    callbacks = [ProgressBar(), *callbacks] if progress else list(callbacks)

    def notify(event: str, **values) -> None:
        info = dict(event=event, model=model, optimizer=optimizer, history=history, step=history.global_step,
                    epoch=history.global_step / steps_per_epoch, tokens_seen=history.total_tokens,
                    total_steps=total_steps, lr=optimizer.param_groups[0]["lr"], **values)  # fmt: skip
        for callback in callbacks:
            callback(info)

    def evaluate() -> None:
        train_loss, val_loss = evaluate_model(plain_model, train_loader, val_loader, config.eval_iter, loss_fn)
        if distributed is not None:  # each process estimated on its own shard
            train_loss, val_loss = distributed.all_reduce_mean(train_loss), distributed.all_reduce_mean(val_loss)
        history.steps.append(history.global_step)
        history.tokens_seen.append(history.total_tokens)
        history.epochs.append(history.global_step / steps_per_epoch)
        history.train_losses.append(train_loss)
        history.val_losses.append(val_loss)
        sample = None
        if tokenizer is not None and config.start_context and config.sample_tokens:
            ids = generate(plain_model, text_to_token_ids(config.start_context, tokenizer), config.sample_tokens)
            sample = token_ids_to_text(ids, tokenizer)
            history.samples.append(sample)
        notify("eval", train_loss=train_loss, val_loss=val_loss, sample=sample)

    def set_learning_rate() -> None:
        """Give the optimizer the rate of the next step, `history.global_step`, on the schedule."""
        lr = lr_at_step(history.global_step, total_steps, config.lr, config.warmup_steps, config.min_lr)
        for group in optimizer.param_groups:
            group["lr"] = lr

    set_learning_rate()
    if not history.steps or (history.global_step % config.eval_freq == 0 and history.steps[-1] != history.global_step):
        evaluate()  # the untrained model's losses (about ln(vocab_size)), or one a stopped run still owed
    model.train()
    while history.global_step < total_steps:
        for batches in epoch_batches(train_loader, history, config.accumulate_steps):
            loss, grad_norm = train_step(model, batches, optimizer, loss_fn, autocast, scaler, config.grad_clip)
            if not math.isfinite(loss):  # the weights are garbage now: stop before anything saves them
                raise ValueError(
                    f"training diverged: the loss became {loss} at step {history.global_step + 1} (learning rate "
                    f"{optimizer.param_groups[0]['lr']:.2g}); lower the learning rate, or clip the gradients "
                    "(TrainingConfig.grad_clip, e.g. 1.0)"
                )
            # Where the loop stands, before any callback sees it (a checkpoint saved then resumes exactly).
            history.global_step += 1
            history.total_tokens += sum(batch_tokens(batch) for batch in batches) * world_size
            history.batch_in_epoch += len(batches)
            epoch_done = history.batch_in_epoch == steps_per_epoch * config.accumulate_steps
            if epoch_done:
                history.epoch, history.batch_in_epoch = history.epoch + 1, 0
            history.grad_scaler_state = scaler.state_dict() if scaler.is_enabled() else None
            set_learning_rate()  # the next step's
            notify("step", loss=loss if distributed is None else distributed.all_reduce_mean(loss), grad_norm=grad_norm)
            if epoch_done:
                notify("epoch_end")
            if history.global_step % config.eval_freq == 0:
                evaluate()
            if history.global_step >= total_steps:
                break
    if history.steps[-1] != history.global_step:
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
