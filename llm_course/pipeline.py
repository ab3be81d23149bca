"""Chapter 4: the pretraining pipeline behind `llm-course train`, as one plain function.

`pretrain(config, ...)` reads the text, tokenizes it, builds the model, the optimizer and the loaders,
trains with `train_model`, and writes a checkpoint, a loss curve and a sample. A checkpoint it wrote
continues exactly where it stopped (`resume=`). Ctrl-C, SIGTERM and SIGHUP finish the current step and
write a resumable `-interrupted.pt` first. Under torchrun every process runs it, and only rank 0 prints and
writes files (see llm_course/distributed.py).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from .checkpoints import (
    MODELS_DIR,
    CheckpointError,
    capture_rng_state,
    check_checkpoint_location,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from .data import CORPUS_SIZES, load_corpus, load_text
from .distributed import DistributedContext, init_distributed, is_distributed_launch, shard_loaders, wrap_model
from .generation import generate, text_to_token_ids, token_ids_to_text
from .bpe import course_tokenizer
from .gpt2_bpe import gpt2_tokenizer
from .model import GPTConfig, GPTModel
from .progress import ProgressBar
from .token_store import cached_token_file, text_sha256
from .training import TrainingConfig, TrainingHistory, configure_optimizer, create_train_val_loaders, perplexity
from .training import plot_losses, train_model
from .utils import get_device, set_seed

__all__ = [
    "ARCHITECTURES",
    "MODEL_SIZES",
    "PRESETS",
    "PretrainResult",
    "RESUMABLE_OPTIONS",
    "fine_tuning_base",
    "pretrain",
    "tokenizer_named",
]

CHAPTER = 4

PROG = "llm-course"
DEFAULT_OUTPUT = MODELS_DIR / "gpt-course.pt"
STREAMED_CORPORA = ("medium", "full")  # read from a cached token file instead of a list of token ids in memory

# The architectures a model size can be built in: GPT-2's, or Llama's changes to it (chapter 8, GPTConfig.to_llama).
ARCHITECTURES = ("gpt2", "llama")
# Named model sizes: name -> (description for --help, function returning its GPTConfig).
MODEL_SIZES: dict[str, tuple[str, Callable[[], GPTConfig]]] = {
    "tiny": (
        "1 block, width 32, 2 heads, context 64 (3.2 M parameters): a smoke test that trains in seconds",
        lambda: GPTConfig(context_length=64, emb_dim=32, n_heads=2, n_layers=1),
    ),
    "course": ("2 blocks, width 256, 4 heads, context 64 (27.3 M parameters): the course's model", GPTConfig),
    "gpt2-small": (
        "GPT-2 small: 12 blocks, width 768, 12 heads, context 1024 (163 M parameters): slow without a GPU",
        GPTConfig.gpt2_small,
    ),
    "base": (
        "4 blocks, width 256, 4 heads, context 128, tied embeddings (4.2 M parameters with the course tokenizer): "
        "--preset base",
        lambda: GPTConfig(context_length=128, emb_dim=256, n_heads=4, n_layers=4, tie_weights=True),
    ),
}

# The TrainingConfig fields a resumed run may change; the others define its data and batches.
RESUMABLE_OPTIONS = (
    "num_epochs", "max_steps", "eval_freq", "eval_iter", "start_context", "sample_tokens", "lr", "weight_decay",
    "betas", "warmup_steps", "min_lr", "grad_clip", "precision", "grad_checkpointing",
)  # fmt: skip


@dataclass
class PretrainResult:
    """What `pretrain` wrote and measured (the paths are None in the processes other than rank 0)."""

    history: TrainingHistory
    checkpoint: Path | None
    loss_plot: Path | None
    sample: str | None


def _output_paths(output: str | Path) -> tuple[Path, Path, Path, Path]:
    """(checkpoint, interrupted checkpoint, loss-curve PNG, sample text) for `output`, a .pt file or a folder."""
    path = Path(output).expanduser()
    if path.suffix not in (".pt", ".pth"):
        path = path / DEFAULT_OUTPUT.name
    stem = path.with_suffix("")
    return path, Path(f"{stem}-interrupted.pt"), Path(f"{stem}-loss.png"), Path(f"{stem}-sample.txt")


class _StopAtStepBoundary:
    """While active, Ctrl-C (SIGINT), SIGTERM and SIGHUP ask training to stop once the current step is done.

    `check`, a train_model callback, then raises KeyboardInterrupt at the next event, where the model,
    optimizer and history agree, so the checkpoint saved then resumes exactly. A second signal interrupts
    at once (`hard`: the state may be mid-step, so nothing is saved).

    Under torchrun every process gets its signal at a slightly different moment, so at each event the
    processes agree (one all-reduce) and all stop at the same one: a process that stopped alone would
    leave the others waiting for it in their next gradient exchange.
    """

    SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))

    def __init__(self, distributed: DistributedContext | None = None, log: Callable[[str], None] = print):
        self.requested = self.hard = False
        self.distributed = distributed
        self.log = log
        self.previous: dict[int, Any] = {}

    def _handle(self, signum, frame):
        if self.requested:
            self.hard = True
            raise KeyboardInterrupt
        self.requested = True
        if self.distributed is None or self.distributed.is_main:  # one message, not one per process
            name = signal.Signals(signum).name
            self.log(f"\n{PROG}: {name}: stopping after this step (again to stop at once, unsaved)")

    def check(self, event: dict) -> None:
        requested = self.requested
        if self.distributed is not None:  # every process emits the same events in the same order
            requested = self.distributed.all_reduce_mean(float(requested)) > 0
        if requested:
            raise KeyboardInterrupt

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
            self.previous = {number: signal.signal(number, self._handle) for number in self.SIGNALS}
        return self

    def __exit__(self, *exc_info):
        for number, handler in self.previous.items():
            signal.signal(number, handler)


def _token_ids(corpus: str, text_source: str | None, tokenizer):
    """(token ids, the text's SHA-256, a description) of the training text."""
    text = load_text(text_source) if text_source else load_corpus(corpus)
    if hasattr(tokenizer, "to_tiktoken"):  # the course's BPETokenizer: the same ids from tiktoken's faster code
        tokenizer = tokenizer.to_tiktoken()
    if text_source is None and corpus in STREAMED_CORPORA:
        # Millions of tokens: tokenized once into a uint16 file in the cache; windows are read from it on demand.
        token_file = cached_token_file(text, f"sotu-{corpus}", tokenizer)
        ids = token_file.tokens()
    else:
        ids = tokenizer.encode(text, allowed_special={"<|endoftext|>"})
    description = f"{text_source or f'the {corpus} corpus'} ({len(text):,} characters, {len(ids):,} tokens)"
    return ids, text_sha256(text), description


def pretrain(
    config: TrainingConfig,
    *,
    model_size: str = "course",
    architecture: str = "gpt2",
    corpus: str = "small",
    text: str | None = None,
    output: str | Path = DEFAULT_OUTPUT,
    resume: tuple[GPTModel, dict[str, Any]] | None = None,
    device: str | None = None,
    final_sample_tokens: int = 50,
    quiet: bool = False,
    log: Callable[[str], None] = print,
    tokenizer: str = "gpt2",
) -> PretrainResult:
    """Pretrain a GPT of `model_size` and `architecture` (see ARCHITECTURES) on the bundled `corpus` (or on
    `text`, a path or URL) with `config`, and write `output` (a .pt file, or a folder for gpt-course.pt) with its loss curve and a sample.
    `tokenizer` names the tokenizer (see `tokenizer_named`); the model's vocabulary is its size, and the
    checkpoint records its name.

    `resume` is `load_checkpoint(path)` of a checkpoint this function wrote: the run continues from it
    with its model size, text and data settings (the caller merges the options it may change into
    `config`), and its text must be the same. Raises ValueError (or OSError) with a message that says
    what to do when something does not fit; KeyboardInterrupt after saving the interrupted checkpoint.
    """
    if model_size not in MODEL_SIZES:
        raise ValueError(f"unknown model size {model_size!r}; choose one of {', '.join(MODEL_SIZES)}")
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; choose one of {', '.join(ARCHITECTURES)}")
    if text is None and corpus not in CORPUS_SIZES:
        raise ValueError(f"unknown corpus size {corpus!r}; choose one of {', '.join(CORPUS_SIZES)}")
    context = init_distributed(device) if is_distributed_launch() else None  # started by torchrun
    main_process = context is None or context.is_main  # the one process that prints and writes files
    device = get_device(device) if context is None else context.device
    tokenizer_name, tokenizer = tokenizer, tokenizer_named(tokenizer)
    model_config = dataclasses.replace(MODEL_SIZES[model_size][1](), vocab_size=tokenizer.n_vocab)
    if architecture == "llama":
        model_config = model_config.to_llama()
    if config.max_length > model_config.context_length:
        raise ValueError(
            f"max_length {config.max_length} exceeds the {model_size} model's context length "
            f"{model_config.context_length}: use {model_config.context_length} or less"
        )
    checkpoint_path, interrupted_path, plot_path, sample_path = _output_paths(output)
    # Each process its own seed (its own dropout masks); DDP gives every process rank 0's initial weights.
    set_seed(config.seed + (0 if context is None else context.rank))

    token_ids, sha256, source = _token_ids(corpus, text, tokenizer)
    if resume is not None and resume[1]["training"]["run"]["text_sha256"] != sha256:
        raise CheckpointError(
            f"the training text is not the one the resumed run started with ({source}): resume with the "
            "same --corpus or --text, or start a new run without --resume"
        )
    train_loader, val_loader = create_train_val_loaders(
        token_ids, batch_size=config.batch_size, max_length=config.max_length, stride=config.stride,
        train_ratio=config.train_ratio,
    )  # fmt: skip
    if context is not None:  # each process trains on its own share of every batch
        train_loader, val_loader = shard_loaders(
            train_loader, val_loader, rank=context.rank, world_size=context.world_size, seed=config.seed
        )
    steps_per_epoch = len(train_loader) // config.accumulate_steps
    if steps_per_epoch == 0:
        raise ValueError(
            f"the training split has {len(train_loader)} batches, fewer than accumulate_steps "
            f"{config.accumulate_steps}: accumulate fewer batches, or use a smaller batch size or more text"
        )
    total_steps = config.num_epochs * steps_per_epoch
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    if config.warmup_steps > total_steps:
        raise ValueError(f"warmup_steps {config.warmup_steps} exceeds the run's {total_steps} optimizer steps")

    model = GPTModel(model_config).to(device)
    optimizer = configure_optimizer(model, config)
    history = TrainingHistory()
    if resume is not None:
        stored_model, checkpoint = resume
        model.load_state_dict(stored_model.state_dict())
        optimizer.load_state_dict(checkpoint["optimizer_state"])
        for group, decay in zip(optimizer.param_groups, (config.weight_decay, 0.0)):  # the settings typed now
            group.update(weight_decay=decay, betas=config.betas)
        history = TrainingHistory(**checkpoint["training"]["history"])
        # Last: building the model above drew random numbers. Under torchrun each process continues its own
        # random stream (its own dropout masks), saved by rank 0 for every process.
        rank_states = checkpoint["training"].get("rank_rng_states")
        same_processes = context is not None and rank_states is not None and len(rank_states) == context.world_size
        restore_rng_state(rank_states[context.rank] if same_processes else checkpoint["rng_state"])
    n_params = sum(p.numel() for p in model.parameters())
    if main_process:  # fail now, not after training: weights and AdamW's two moments, in fp32
        check_checkpoint_location(checkpoint_path, expected_bytes=3 * 4 * n_params)
    effective_batch = config.batch_size * config.accumulate_steps * (1 if context is None else context.world_size)
    if main_process:
        log(
            f"Training the {model_size} model ({n_params / 1e6:.1f} M parameters, {tokenizer_name} tokenizer) on "
            f"{source} on {device} in {config.precision}: {config.num_epochs} epoch(s) of {steps_per_epoch} steps of {effective_batch} x "
            f"{config.max_length} tokens, learning rate {config.lr:g}"
            + (f" ({config.warmup_steps} warmup steps, cosine decay to {config.min_lr:g})" if config.min_lr else "")
            + (f". Resuming at step {history.global_step}." if resume is not None else ".")
        )

    run = {"model_size": model_size, "architecture": architecture, "corpus": None if text else corpus, "text": text,
           "text_sha256": sha256, "output": str(checkpoint_path), "tokenizer": tokenizer_name}  # fmt: skip

    def save(path: Path, rank_rng_states: list[dict] | None) -> None:
        training = {"config": asdict(config), "history": asdict(history), "run": run}
        if rank_rng_states is not None:
            training["rank_rng_states"] = rank_rng_states
        save_checkpoint(path, model, optimizer, training=training, tokenizer=tokenizer_name)

    started = time.perf_counter()
    stopper = _StopAtStepBoundary(context, log=lambda message: print(message, file=sys.stderr))
    callbacks = [stopper.check]
    if main_process and not quiet:
        callbacks.insert(0, ProgressBar(log_evals=True))
    try:
        with stopper:
            train_model(
                model if context is None else wrap_model(model, context),
                train_loader,
                val_loader,
                optimizer,
                config,
                tokenizer=tokenizer,
                history=history,
                callbacks=callbacks,
                distributed=context,
                progress=False,
            )
    except KeyboardInterrupt:
        if stopper.hard:
            raise
        # Under torchrun all processes stopped at the same event (see _StopAtStepBoundary): collect their
        # random states for rank 0's checkpoint.
        rank_rng_states = None if context is None else context.gather(capture_rng_state())
        if main_process:
            save(interrupted_path, rank_rng_states)
            launcher = PROG if context is None else f"torchrun --nproc_per_node={context.world_size} -m llm_course"
            print(
                f"\nInterrupted after step {history.global_step} of {total_steps}: saved a resumable checkpoint to "
                f"{interrupted_path}. Continue with `{launcher} train --resume {interrupted_path}`.",
                file=sys.stderr,
            )
        raise
    rank_rng_states = None if context is None else context.gather(capture_rng_state())
    if not main_process:
        context.barrier()  # rank 0 reports, samples and saves; the others wait to leave together
        return PretrainResult(history, None, None, None)
    save(checkpoint_path, rank_rng_states)  # first: nothing that follows can lose the finished run
    interrupted_path.unlink(missing_ok=True)  # the run it would resume is complete now
    minutes = (time.perf_counter() - started) / 60
    log(
        f"Trained for {history.global_step} steps ({history.total_tokens:,} tokens) in {minutes:.1f} min: "
        f"training loss {history.train_losses[-1]:.3f}, validation loss {history.val_losses[-1]:.3f} "
        f"(perplexity {perplexity(history.val_losses[-1]):,.1f})."
    )
    import matplotlib

    matplotlib.use("Agg")  # a pipeline draws into files, never into windows
    import matplotlib.pyplot as plt

    fig = plot_losses(history, title=f"{model_size} model on {source.split(' (')[0]}")
    fig.savefig(plot_path, dpi=120)
    plt.close(fig)
    prompt = config.start_context or "The"
    ids = generate(model, text_to_token_ids(prompt, tokenizer), final_sample_tokens, temperature=0.8, top_k=40,
                   generator=torch.Generator().manual_seed(config.seed))  # fmt: skip
    sample = token_ids_to_text(ids, tokenizer)
    sample_path.write_text(sample + "\n", encoding="utf-8")
    log(f"Saved the checkpoint to {checkpoint_path}, the loss curve to {plot_path} and the sample to {sample_path}.")
    log(f"\nGenerated text (temperature 0.8, top-k 40):\n\n{sample}")
    if context is not None:
        context.barrier()  # a process that leaves while another still talks to it can crash it
    return PretrainResult(history, checkpoint_path, plot_path, sample)


def resumed_config(checkpoint: dict[str, Any], typed: dict[str, Any], source: str) -> TrainingConfig:
    """The TrainingConfig of a stored run with the options a user typed now applied (those in
    RESUMABLE_OPTIONS); a typed option that would change the run's data or batches is an error."""
    stored = checkpoint.get("training")
    if stored is None:
        raise CheckpointError(
            f"{source} holds a model but no training run that this llm-course can resume (it was not written by "
            f"`{PROG} train`, or by an older version): start a new run"
        )
    settings = dict(stored["config"])
    for name, value in typed.items():
        if name not in RESUMABLE_OPTIONS and value != settings[name]:
            raise ValueError(
                f"TrainingConfig.{name} {value} differs from the resumed run's {settings[name]}: it defines the "
                "run's data and batches, which a resumed run keeps; leave it out, or start a new run without --resume"
            )
    return dataclasses.replace(TrainingConfig(**settings), **typed)


def tokenizer_named(name: str):
    """The tokenizer a checkpoint names: "gpt2" (tiktoken's GPT-2 encoding) or the course's own BPE."""
    tokenizers = {"gpt2": gpt2_tokenizer, "course-bpe-4096": course_tokenizer}
    if name not in tokenizers:
        raise ValueError(f"unknown tokenizer {name!r}: this llm-course knows {', '.join(tokenizers)}")
    return tokenizers[name]()


BASE_PRESET_NAME = "base.pt"  # the best base model the course trains (`llm-course train --preset base`)
# `llm-course train --preset NAME`: a named run's settings; the options typed with it still apply.
# "base": the base model chapters 6 and 7 fine-tune, sized for about 30 minutes on 2 idle CPU cores. The course
# tokenizer makes the output layer 12 times smaller than GPT-2's, so the compute goes into 4 blocks and a context
# of 128. In `llm-course train --preset base` one step of 16 x 128 tokens took 0.90 s of single-thread CPU time
# (30 steps against 5, measured on a shared machine), so about 0.5 s on 2 idle cores: 3,000 steps (6.1 M tokens,
# about 2.4 passes over the full corpus's training split) and the evaluations take some 25 to 30 minutes.
# The tokenizer was chosen at equal CPU time (README; benchmarks/tokenizer_bpb.py): after 5 minutes GPT-2's vocabulary
# scores 1.978 bits per byte against 2.020, after 30 minutes (3,000 steps against 817) the course's 1.767 against 1.810.
PRESETS: dict[str, dict[str, Any]] = {
    "base": {
        "run": {"model_size": "base", "corpus": "full", "tokenizer": "course-bpe-4096",
                "output": MODELS_DIR / BASE_PRESET_NAME},
        "training": {"batch_size": 16, "max_length": 128, "num_epochs": 3, "max_steps": 3000, "lr": 1e-3,
                     "warmup_steps": 100, "min_lr": 1e-4, "grad_clip": 1.0, "eval_freq": 250, "eval_iter": 10},
    },
}  # fmt: skip
QUICK_BASE_NAME = "ch04_pretrained.pt"  # chapter 4's run, which the chapter 4 notebook saves too
QUICK_BASE_ENV = "LLM_COURSE_QUICK_BASE"  # set (to anything) to always use the quick base: the stored notebooks do


def fine_tuning_base(models_dir: str | Path = MODELS_DIR, log: Callable[[str], None] = print) -> tuple[GPTModel, Any, str]:
    """The pretrained model that chapters 6 and 7 fine-tune: (model in eval mode, its tokenizer, a description).

    `<models_dir>/base.pt`, when `llm-course train --preset base` has written it (unless $LLM_COURSE_QUICK_BASE
    is set); otherwise the quick base: chapter 4's run (the course model, TrainingConfig's defaults, the small
    corpus), read from `<models_dir>/ch04_pretrained.pt` when the chapter 4 notebook saved it, else trained
    once (a couple of minutes) and saved there. Both train the same way from the same seed, so the quick base
    is the same model either way. The notebooks run in notebooks/ and pass models_dir="../models".
    """
    models_dir = Path(models_dir)
    preset = models_dir / BASE_PRESET_NAME
    if preset.is_file() and not os.environ.get(QUICK_BASE_ENV):
        model, checkpoint = load_checkpoint(preset)
        description = f"the preset base model {preset} ({checkpoint.get('tokenizer', 'gpt2')} tokenizer)"
        return model, tokenizer_named(checkpoint.get("tokenizer", "gpt2")), description
    config, quick = TrainingConfig(), models_dir / QUICK_BASE_NAME
    model = None
    if quick.is_file():
        stored_model, checkpoint = load_checkpoint(quick)
        if checkpoint.get("training", {}).get("config") == asdict(config):
            model = stored_model
    if model is None:
        log(f"Pretraining the quick base (chapter 4's run) into {quick}, once: a couple of minutes...")
        pretrain(config, output=quick, final_sample_tokens=1, quiet=True, log=lambda message: None)
        model, _ = load_checkpoint(quick)
    description = "the quick base: chapter 4's course model, pretrained on Washington's addresses"
    return model, gpt2_tokenizer(), description
