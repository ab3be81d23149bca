"""Chapter 4: the `llm-course` command: pretrain a GPT (`train`) and continue a prompt with it (`generate`).

    llm-course train                     # the course model on the default corpus, into models/
    llm-course generate --prompt "..."   # continue a prompt with models/gpt-course.pt

`python -m llm_course ...` runs the same command, and `torchrun --nproc_per_node=N -m llm_course train ...`
trains with N processes (one per GPU), each on its share of every batch (see llm_course/distributed.py).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import textwrap
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Sequence

import torch

from .checkpoints import MODELS_DIR, capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint
from .data import CORPUS_SIZES, load_corpus, load_text
from .distributed import DistributedContext, close_distributed, init_distributed, is_distributed_launch
from .distributed import shard_loaders, wrap_model
from .generation import generate, text_to_token_ids, token_ids_to_text
from .gpt2_bpe import gpt2_tokenizer
from .model import GPTConfig, GPTModel
from .training import (
    PRECISIONS,
    TrainingConfig,
    TrainingHistory,
    create_train_val_loaders,
    perplexity,
    plot_losses,
    train_model,
    warmup_cosine_schedule,
)
from .token_store import cached_token_file, create_token_loaders
from .utils import get_device, set_seed

__all__ = ["MODEL_SIZES", "main"]

CHAPTER = 4

PROG = "llm-course"
DEFAULT_CHECKPOINT_NAME = "gpt-course.pt"
STREAMED_CORPORA = ("medium", "full")  # read from a cached token file instead of a list of token ids in memory


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
}


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (`llm-course: error: ...`), without the usage block."""

    def error(self, message: str):
        self.exit(2, f"{PROG}: error: {message} (see `{self.prog} --help`)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def _number(low: float, high: float, low_open: bool, high_open: bool) -> Callable[[str], float]:
    """A type function for floats in an interval, e.g. (0, inf) or [0, inf)."""
    interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number in {interval}, got {text!r}") from None
        too_low = value <= low if low_open else value < low
        too_high = value >= high if high_open else value > high
        if too_low or too_high or value != value:
            raise argparse.ArgumentTypeError(f"expected a number in {interval}, got {text}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    defaults = TrainingConfig()
    parser = _Parser(
        prog=PROG,
        description="Pretrain the course's GPT on unlabeled text, and generate text with it.",
        epilog=f"`{PROG} COMMAND --help` describes each command's options.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    train = commands.add_parser(
        "train",
        help="pretrain a GPT and save it (checkpoint, loss curve, sample) to models/",
        description=textwrap.fill(
            "Pretrain a GPT with next-token prediction on the bundled corpus (the State of the Union addresses) "
            "or your own text, with the course's settings unless told otherwise. Shows a progress bar, writes a "
            "checkpoint, a loss-curve PNG and a generated sample, and prints the sample at the end.",
            width=78,
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="model sizes:\n"
        + "\n".join(f"  {name:<11} {text}" for name, (text, _) in MODEL_SIZES.items())
        + "\n\ncorpus sizes:\n"
        + "\n".join(f"  {name:<11} {text}" for name, text in CORPUS_SIZES.items()),
    )
    source = train.add_mutually_exclusive_group()
    source.add_argument(
        "--corpus",
        choices=list(CORPUS_SIZES),
        default="small",
        help="slice of the bundled corpus to train on (default: small)",
    )
    source.add_argument(
        "--text", metavar="PATH_OR_URL", help="train on this UTF-8 text file or URL instead of the corpus"
    )
    train.add_argument(
        "--model-size", choices=list(MODEL_SIZES), default="course", help="model size, see below (default: course)"
    )
    train.add_argument(
        "--epochs",
        type=_positive_int,
        default=defaults.num_epochs,
        help=f"passes over the training text (default: {defaults.num_epochs})",
    )
    train.add_argument(
        "--batch-size",
        type=_positive_int,
        default=defaults.batch_size,
        help=f"windows per batch, per process under torchrun; an optimizer step takes --accumulate batches "
        f"(default: {defaults.batch_size})",
    )
    train.add_argument(
        "--context-length",
        type=_positive_int,
        default=defaults.max_length,
        help=f"tokens per training window, at most the model's context length (default: {defaults.max_length})",
    )
    train.add_argument(
        "--stride",
        type=_positive_int,
        default=None,
        help="tokens between window starts (default: half the context length)",
    )
    train.add_argument(
        "--lr",
        type=_number(0, float("inf"), True, True),
        default=defaults.lr,
        help=f"AdamW learning rate (default: {defaults.lr})",
    )
    train.add_argument(
        "--warmup-steps",
        type=_non_negative_int,
        default=0,
        help="optimizer steps over which the learning rate climbs linearly to --lr (default: 0)",
    )
    train.add_argument(
        "--min-lr",
        type=_number(0, float("inf"), False, True),
        default=None,
        help="after the warmup, the learning rate follows a cosine from --lr down to this value at the last "
        "step (default: --lr, a constant rate)",
    )
    train.add_argument(
        "--grad-clip",
        metavar="NORM",
        type=_number(0, float("inf"), True, True),
        default=None,
        help="rescale the gradients whenever their global norm exceeds NORM; the norm before clipping is shown "
        "in the progress bar (default: no clipping)",
    )
    train.add_argument(
        "--accumulate",
        metavar="N",
        type=_positive_int,
        default=1,
        help="batches whose gradients are added up for each optimizer step: N x --batch-size windows per "
        "step in the memory of one batch (default: 1)",
    )
    train.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="fp32; bf16: the forward pass under bf16 autocast (CPU or GPU); fp16: fp16 autocast with loss "
        "scaling, CUDA only (default: fp32)",
    )
    train.add_argument(
        "--grad-checkpointing",
        action="store_true",
        help="keep only each transformer block's input and recompute the rest in the backward pass: less "
        "memory, about a third more compute",
    )
    train.add_argument(
        "--resume",
        metavar="PATH",
        help="continue the run saved in this checkpoint (e.g. the -interrupted.pt that Ctrl-C writes) with its "
        "stored settings; only --output, --device, --precision, --grad-checkpointing, --max-new-tokens and "
        "--quiet may change",
    )
    train.add_argument(
        "--weight-decay",
        type=_number(0, float("inf"), False, True),
        default=defaults.weight_decay,
        help=f"AdamW weight decay (default: {defaults.weight_decay})",
    )
    train.add_argument(
        "--train-ratio",
        type=_number(0, 1, True, True),
        default=defaults.train_ratio,
        help=f"share of the text used for training; the rest validates (default: {defaults.train_ratio})",
    )
    train.add_argument(
        "--eval-freq",
        type=_positive_int,
        default=defaults.eval_freq,
        help=f"evaluate every N optimizer steps (default: {defaults.eval_freq})",
    )
    train.add_argument(
        "--eval-iter",
        type=_positive_int,
        default=defaults.eval_iter,
        help=f"batches per split in each evaluation (default: {defaults.eval_iter})",
    )
    train.add_argument(
        "--prompt", default=defaults.start_context, help="start of the generated samples (default: %(default)r)"
    )
    train.add_argument(
        "--max-new-tokens", type=_non_negative_int, default=50, help="tokens in the final sample (default: 50)"
    )
    train.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: the best available)")
    train.add_argument("--seed", type=int, default=defaults.seed, help=f"random seed (default: {defaults.seed})")
    train.add_argument(
        "--output",
        metavar="PATH",
        default=str(MODELS_DIR / DEFAULT_CHECKPOINT_NAME),
        help="checkpoint file (.pt), or a folder to write gpt-course.pt into; the loss curve (-loss.png) and the "
        "sample (-sample.txt) are written next to it (default: %(default)s)",
    )
    train.add_argument("--quiet", action="store_true", help="no progress bar and no evaluation lines")

    gen = commands.add_parser(
        "generate",
        help="continue a prompt with a trained checkpoint",
        description="Load a checkpoint written by `llm-course train`; print the prompt followed by its continuation.",
    )
    gen.add_argument(
        "--checkpoint",
        metavar="PATH",
        default=str(MODELS_DIR / DEFAULT_CHECKPOINT_NAME),
        help="checkpoint to load (default: %(default)s)",
    )
    gen.add_argument("--prompt", required=True, help="the text to continue")
    gen.add_argument("--max-new-tokens", type=_non_negative_int, default=50, help="tokens to generate (default: 50)")
    gen.add_argument(
        "--temperature",
        type=_number(0, float("inf"), False, True),
        default=0.0,
        help="0 picks the most likely token (greedy); higher values sample more freely (default: 0)",
    )
    gen.add_argument("--top-k", type=_positive_int, default=None, help="sample only among the k most likely tokens")
    gen.add_argument(
        "--top-p",
        type=_number(0, 1, True, False),
        default=None,
        help="sample only among the most likely tokens whose probabilities add up to p (nucleus sampling)",
    )
    gen.add_argument("--seed", type=int, default=None, help="random seed for sampling (default: unseeded)")
    gen.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: the best available)")
    return parser


def _output_paths(output: str) -> tuple[Path, Path, Path]:
    """(checkpoint, loss-curve PNG, sample text) for --output, a .pt file or a folder."""
    path = Path(output)
    if path.suffix != ".pt":
        path = path / DEFAULT_CHECKPOINT_NAME
    return path, path.with_name(f"{path.stem}-loss.png"), path.with_name(f"{path.stem}-sample.txt")


# The options that define a run: `--resume` takes them from the checkpoint, and they may not be changed.
RUN_OPTIONS = (
    "corpus", "text", "model_size", "epochs", "batch_size", "context_length", "stride", "lr", "weight_decay",
    "train_ratio", "eval_freq", "eval_iter", "prompt", "seed", "warmup_steps", "min_lr", "grad_clip", "accumulate",
)  # fmt: skip


def _resumed_args(args: argparse.Namespace, stored: dict, parser: argparse.ArgumentParser) -> argparse.Namespace:
    """`args` with the run's settings taken from a checkpoint's `training_args`."""
    merged, defaults = vars(args).copy(), vars(parser.parse_args(["train"]))
    for name in RUN_OPTIONS:
        given, default = merged[name], defaults[name]
        if given != default and given != stored.get(name, default):
            option = "--" + name.replace("_", "-")
            raise ValueError(
                f"{option} {given} differs from the resumed run's {stored.get(name, default)}: --resume continues "
                f"the stored run with its settings; leave {option} out, or start a new run without --resume"
            )
        merged[name] = stored.get(name, default)
    if args.output == defaults["output"]:
        merged["output"] = stored.get("output", args.output)
    return argparse.Namespace(**merged)


class _StopAtStepBoundary:
    """While active, Ctrl-C (SIGINT) asks training to stop once the current step is complete.

    `check`, a train_model callback, then raises KeyboardInterrupt at the next event, where the model,
    optimizer and history agree, so the checkpoint saved then resumes exactly. A second Ctrl-C interrupts
    at once (`hard`: the state may be mid-step, so nothing is saved).

    Under torchrun every process gets its Ctrl-C at a slightly different moment, so at each event the
    processes agree (one all-reduce) and all stop at the same one: a process that stopped alone would
    leave the others waiting for it in their next gradient exchange.
    """

    def __init__(self, distributed: DistributedContext | None = None):
        self.requested = self.hard = False
        self.distributed = distributed

    def _handle(self, signum, frame):
        if self.requested:
            self.hard = True
            raise KeyboardInterrupt
        self.requested = True
        if self.distributed is None or self.distributed.is_main:  # one message, not one per process
            print(f"\n{PROG}: stopping after this step (Ctrl-C again to stop at once, unsaved)", file=sys.stderr)

    def check(self, event: dict) -> None:
        requested = self.requested
        if self.distributed is not None:  # every process emits the same events in the same order
            requested = self.distributed.all_reduce_mean(float(requested)) > 0
        if requested:
            raise KeyboardInterrupt

    def __enter__(self):
        in_main_thread = threading.current_thread() is threading.main_thread()
        self.previous = signal.signal(signal.SIGINT, self._handle) if in_main_thread else None
        return self

    def __exit__(self, *exc_info):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def _train(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    import matplotlib

    matplotlib.use("Agg")  # a command line program draws into files, never into windows
    import matplotlib.pyplot as plt

    context = init_distributed(args.device) if is_distributed_launch() else None  # started by torchrun
    main_process = context is None or context.is_main  # the one process that prints and writes files
    device = get_device(args.device) if context is None else context.device
    resumed = None
    if args.resume:
        _, resumed = load_checkpoint(args.resume)  # fails early, with a clear message, on a bad file
        if "history" not in resumed or "training_args" not in resumed:
            raise ValueError(f"{args.resume} holds a model but no training run: it was not written by `{PROG} train`")
        args = _resumed_args(args, resumed["training_args"], parser)
    config = MODEL_SIZES[args.model_size][1]()
    stride = args.stride or max(1, args.context_length // 2)
    checkpoint_path, plot_path, sample_path = _output_paths(args.output)
    interrupted_path = checkpoint_path.with_name(f"{checkpoint_path.stem}-interrupted.pt")
    checkpoint_path.parent.mkdir(parents=True, exist_ok=True)  # fail now rather than after training
    # Each process its own seed (its own dropout masks); DDP gives every process rank 0's initial weights.
    set_seed(args.seed + (0 if context is None else context.rank))

    text = load_text(args.text) if args.text else load_corpus(args.corpus)
    source = args.text or f"the {args.corpus} corpus"
    tokenizer = gpt2_tokenizer()
    if args.text is None and args.corpus in STREAMED_CORPORA:
        # Millions of tokens: tokenized once into a uint16 file in the cache; windows are read from it on demand.
        train_loader, val_loader = create_token_loaders(
            cached_token_file(text, f"sotu-{args.corpus}", tokenizer),
            batch_size=args.batch_size,
            max_length=args.context_length,
            stride=stride,
            train_ratio=args.train_ratio,
        )
    else:
        train_loader, val_loader = create_train_val_loaders(
            text,
            tokenizer,
            batch_size=args.batch_size,
            max_length=args.context_length,
            stride=stride,
            train_ratio=args.train_ratio,
        )
    if context is not None:  # each process trains on its own share of every batch
        train_loader, val_loader = shard_loaders(
            train_loader, val_loader, rank=context.rank, world_size=context.world_size, seed=args.seed
        )
    steps_per_epoch = len(train_loader) // args.accumulate
    if steps_per_epoch == 0:
        raise ValueError(
            f"the training split has {len(train_loader)} batches, fewer than --accumulate {args.accumulate}: "
            "accumulate fewer batches, or use a smaller --batch-size or more text"
        )
    total_steps = args.epochs * steps_per_epoch
    if args.warmup_steps > total_steps:
        raise ValueError(f"--warmup-steps {args.warmup_steps} exceeds the run's {total_steps} optimizer steps")
    min_lr = args.lr if args.min_lr is None else args.min_lr

    model = GPTModel(config).to(device)
    model.gradient_checkpointing = args.grad_checkpointing
    # The fused implementation updates every parameter in one pass: several times faster on a CPU.
    fused = device.type in ("cpu", "cuda")
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay, fused=fused)
    scheduler = warmup_cosine_schedule(optimizer, total_steps, args.warmup_steps, min_lr)
    grad_scaler = torch.amp.GradScaler("cuda") if args.precision == "fp16" else None
    history = TrainingHistory()
    if resumed is not None:
        load_checkpoint(args.resume, device, optimizer=optimizer, model=model, scheduler=scheduler)
        history = TrainingHistory(**resumed["history"])
        if grad_scaler is not None and resumed.get("grad_scaler_state"):
            grad_scaler.load_state_dict(resumed["grad_scaler_state"])
        # Last: building the model above drew random numbers. Under torchrun each process continues its own
        # random stream (its own dropout masks), saved by rank 0 for every process.
        rank_states = resumed.get("rank_rng_states")
        same_processes = context is not None and rank_states is not None and len(rank_states) == context.world_size
        restore_rng_state(rank_states[context.rank] if same_processes else resumed["rng_state"])
    n_params = sum(p.numel() for p in model.parameters())
    effective_batch = args.batch_size * args.accumulate * (1 if context is None else context.world_size)
    schedule = f"learning rate {args.lr:g}"
    if args.warmup_steps or min_lr != args.lr:
        schedule += f" ({args.warmup_steps} warmup steps, cosine decay to {min_lr:g})"
    if main_process:
        print(
            f"Training the {args.model_size} model ({n_params / 1e6:.1f} M parameters) on {source} "
            f"({len(text):,} characters) on {device} in {args.precision}: {args.epochs} epoch(s) of {steps_per_epoch} "
            f"steps of {effective_batch} x {args.context_length} tokens, {schedule}."
            + (f" Resuming at step {history.global_step}." if resumed is not None else "")
        )

    def save(path: Path, rank_rng_states: list[dict] | None) -> None:
        extra = {"grad_scaler_state": grad_scaler.state_dict()} if grad_scaler is not None else {}
        if rank_rng_states is not None:
            extra["rank_rng_states"] = rank_rng_states
        save_checkpoint(
            path,
            model,
            optimizer,
            scheduler,
            history=asdict(history),
            training_args=vars(args),
            tokenizer="gpt2",
            **extra,
        )

    started = time.perf_counter()
    stopper = _StopAtStepBoundary(context)
    try:
        with stopper:
            train_model(
                model if context is None else wrap_model(model, context),
                train_loader,
                val_loader,
                optimizer,
                device,
                args.epochs,
                args.eval_freq,
                args.eval_iter,
                args.prompt,
                tokenizer,
                callbacks=[stopper.check],
                history=history,
                scheduler=scheduler,
                grad_clip=args.grad_clip,
                accumulate_steps=args.accumulate,
                precision=args.precision,
                grad_scaler=grad_scaler,
                distributed=context,
                progress=main_process and not args.quiet,
                verbose=main_process and not args.quiet,
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
        return
    minutes = (time.perf_counter() - started) / 60
    print(
        f"Trained for {history.global_step} steps ({history.total_tokens:,} tokens) in {minutes:.1f} min: "
        f"training loss {history.train_losses[-1]:.3f}, validation loss {history.val_losses[-1]:.3f} "
        f"(perplexity {perplexity(history.val_losses[-1]):,.1f})."
    )

    generator = torch.Generator().manual_seed(args.seed)
    ids = generate(
        model,
        text_to_token_ids(args.prompt, tokenizer),
        args.max_new_tokens,
        temperature=0.8,
        top_k=40,
        generator=generator,
    )
    sample = token_ids_to_text(ids, tokenizer)
    save(checkpoint_path, rank_rng_states)
    fig = plot_losses(history, title=f"{args.model_size} model on {source}")
    fig.savefig(plot_path, dpi=120)
    plt.close(fig)
    sample_path.write_text(sample + "\n", encoding="utf-8")
    print(f"Saved the checkpoint to {checkpoint_path}, the loss curve to {plot_path} and the sample to {sample_path}.")
    print(f"\nGenerated text (temperature 0.8, top-k 40):\n\n{sample}")
    if context is not None:
        context.barrier()  # a process that leaves while another still talks to it can crash it


def _generate(args: argparse.Namespace) -> None:
    device = get_device(args.device)
    model, _ = load_checkpoint(args.checkpoint, device=device)
    tokenizer = gpt2_tokenizer()
    ids = text_to_token_ids(args.prompt, tokenizer)
    generator = None
    if args.seed is not None:
        generator = torch.Generator().manual_seed(args.seed)
    ids = generate(
        model,
        ids.to(device),
        args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        generator=generator,
    )
    print(token_ids_to_text(ids, tokenizer))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line `llm-course ARGS` (argv defaults to sys.argv[1:]); return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.prompt:
        parser.error("argument --prompt: the prompt is empty; give at least one word")
    try:
        device = get_device(args.device)
    except ValueError as err:
        parser.error(f"argument --device: {err}")
    if args.command == "train":
        if args.precision == "fp16" and device.type != "cuda":
            parser.error(f"--precision fp16 needs a CUDA GPU, but the device is {device}: use --precision bf16")
        if args.min_lr is not None and args.min_lr > args.lr:
            parser.error(f"--min-lr {args.min_lr} exceeds --lr {args.lr}: the schedule decays from --lr to --min-lr")
        model_context = MODEL_SIZES[args.model_size][1]().context_length
        if args.context_length > model_context:
            parser.error(
                f"--context-length {args.context_length} exceeds the {args.model_size} model's context length "
                f"{model_context}: use {model_context} or less"
            )
    try:
        if args.command == "train":
            _train(args, parser)
        else:
            _generate(args)
    except (ValueError, OSError, RuntimeError) as err:
        # Our errors say what to do; a traceback would only hide that. CheckpointError is a ValueError;
        # FileNotFoundError, PermissionError and ConnectionError are OSErrors.
        message = " ".join(str(err).split())
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if os.environ.get("RANK", "0") == "0":  # under torchrun, one message rather than one per process
            print(f"\n{PROG}: interrupted", file=sys.stderr)
        return 130
    finally:
        close_distributed()  # leave the process group of a torchrun run (nothing to do otherwise)
    return 0
