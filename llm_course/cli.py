"""Chapter 4: the `llm-course` command: pretrain a GPT (`train`) and continue a prompt with it (`generate`).

    llm-course train                     # the course model on the default corpus, into models/
    llm-course generate --prompt "..."   # continue a prompt with models/gpt-course.pt
    llm-course student-edition ...       # and the other commands of COMMAND_MODULES (`llm-course --help`)

`python -m llm_course ...` runs the same command, and `torchrun --nproc_per_node=N -m llm_course train ...`
trains with N processes (one per GPU), each on its share of every batch (see llm_course/distributed.py).
The training options are `TrainingConfig`'s fields; `train` hands them to `pretrain` (llm_course/pipeline.py).
"""

from __future__ import annotations

import argparse
import codecs
import os
import re
import sys
import textwrap
from typing import Callable, Sequence

import torch
from torch import nn

from . import chat, classifier_cli, classroom
from .checkpoints import MODELS_DIR, load_checkpoint
from .cpu_memory import reuse_freed_memory
from .data import CORPUS_SIZES
from .distributed import close_distributed
from .generation import generate_stream, text_to_token_ids
from .model import GPTModel
from .pipeline import ARCHITECTURES, DEFAULT_OUTPUT, MODEL_SIZES, PRESETS, PROG, pretrain, resumed_config, tokenizer_named
from .training import PRECISIONS, TrainingConfig
from .utils import get_device

__all__ = ["main"]

CHAPTER = 4


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (`llm-course: error: ...`), without the usage block."""

    def error(self, message: str):
        self.exit(2, f"{PROG}: error: {message} (see `{self.prog} --help`)\n")


def _parse_number(kind: type, low: float, high: float = float("inf"), low_open: bool = False) -> Callable[[str], float]:
    """An argparse type for ints or floats in [low, high] (or (low, high] with low_open)."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}")
        if value != value or (value <= low if low_open else value < low) or value > high:
            interval = f"{'(' if low_open else '['}{low:g}, {high:g}{']' if high != float('inf') else ')'}"
            raise argparse.ArgumentTypeError(f"expected a value in {interval}, got {text}")
        return value

    return parse


POSITIVE_INT = _parse_number(int, 1)
NON_NEGATIVE_INT = _parse_number(int, 0)
POSITIVE_NUMBER = _parse_number(float, 0, low_open=True)
NON_NEGATIVE_NUMBER = _parse_number(float, 0)

# The training options: flag -> (TrainingConfig field, argparse type, help). Their defaults are TrainingConfig's.
TRAINING_OPTIONS: dict[str, tuple[str, Callable | None, str]] = {
    "--epochs": ("num_epochs", POSITIVE_INT, "passes over the training text"),
    "--max-steps": ("max_steps", POSITIVE_INT, "stop after this many optimizer steps in all"),
    "--batch-size": ("batch_size", POSITIVE_INT, "windows per batch (per process under torchrun)"),
    "--context-length": ("max_length", POSITIVE_INT, "tokens per training window (default: the model's context)"),
    "--stride": ("stride", POSITIVE_INT, "tokens between window starts (default: the context length)"),
    "--train-ratio": ("train_ratio", _parse_number(float, 0, 1, low_open=True), "share of the tokens that trains"),
    "--lr": ("lr", POSITIVE_NUMBER, "AdamW's (peak) learning rate"),
    "--weight-decay": ("weight_decay", NON_NEGATIVE_NUMBER, "AdamW's weight decay, on weight matrices only"),
    "--eval-freq": ("eval_freq", POSITIVE_INT, "evaluate every N optimizer steps"),
    "--eval-iter": ("eval_iter", POSITIVE_INT, "batches per split in each evaluation"),
    "--prompt": ("start_context", str, "start of the samples generated at each evaluation and at the end"),
    "--sample-tokens": ("sample_tokens", NON_NEGATIVE_INT, "tokens per sample at each evaluation"),
    "--seed": ("seed", int, "random seed"),
    "--warmup-steps": ("warmup_steps", NON_NEGATIVE_INT, "steps over which the learning rate climbs to --lr"),
    "--min-lr": ("min_lr", NON_NEGATIVE_NUMBER, "after the warmup, a cosine decay from --lr to this value at the "
                 "last step (default: a constant rate)"),
    "--grad-clip": ("grad_clip", POSITIVE_NUMBER, "rescale the gradients whenever their global norm exceeds this"),
    "--accumulate": ("accumulate_steps", POSITIVE_INT, "batches whose gradients add up to one optimizer step"),
    "--precision": ("precision", None, "fp32; bf16: the forward pass under bf16 autocast (CPU or GPU); fp16: fp16 "
                    "autocast with loss scaling, CUDA only"),
    "--grad-checkpointing": ("grad_checkpointing", None, "recompute each block's activations in the backward pass: "
                             "less memory, about a third more compute"),
}  # fmt: skip
FLAG_OF = {name: flag for flag, (name, _, _) in TRAINING_OPTIONS.items()}
# --tokenizer choices -> the names checkpoints record (pipeline.tokenizer_named)
TOKENIZERS = {"gpt2": "gpt2", "course": "course-bpe-4096"}

# Commands that live next to the code they run: each module has COMMANDS, add_commands(subparsers) and run(args).
COMMAND_MODULES = (classroom, classifier_cli, chat)


def _add_training_options(train: argparse.ArgumentParser) -> None:
    defaults = TrainingConfig()
    for flag, (name, parse, text) in TRAINING_OPTIONS.items():
        default = getattr(defaults, name)
        text += "" if "(default" in text or default in (None, False) else f" (default: {default!r})"
        if name == "grad_checkpointing":
            train.add_argument(flag, dest=name, action="store_true", default=argparse.SUPPRESS, help=text)
        elif name == "precision":
            train.add_argument(flag, dest=name, choices=PRECISIONS, default=argparse.SUPPRESS, help=text)
        else:
            train.add_argument(flag, dest=name, type=parse, default=argparse.SUPPRESS, help=text)


def build_parser() -> argparse.ArgumentParser:
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
            "checkpoint, a loss-curve PNG and a generated sample, and prints the sample at the end. Ctrl-C "
            "(or SIGTERM, SIGHUP) finishes the current step and writes a checkpoint that --resume continues.",
            width=78,
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="model sizes:\n"
        + "\n".join(f"  {name:<11} {text}" for name, (text, _) in MODEL_SIZES.items())
        + "\n\ncorpus sizes:\n"
        + "\n".join(f"  {name:<11} {text}" for name, text in CORPUS_SIZES.items()),
    )
    source = train.add_mutually_exclusive_group()
    source.add_argument("--corpus", choices=list(CORPUS_SIZES), default=argparse.SUPPRESS,
                        help="slice of the bundled corpus to train on (default: small)")  # fmt: skip
    source.add_argument("--text", metavar="PATH_OR_URL", default=argparse.SUPPRESS,
                        help="train on this UTF-8 text file or URL instead of the corpus")  # fmt: skip
    train.add_argument("--model-size", choices=list(MODEL_SIZES), default=argparse.SUPPRESS,
                       help="model size, see below (default: course)")  # fmt: skip
    train.add_argument("--tokenizer", choices=list(TOKENIZERS), default=argparse.SUPPRESS,
                       help="gpt2: GPT-2's 50,257 tokens; course: the course's 4,096 tokens learned from the corpus, "
                       "about 20%% more tokens per word but a 12 times smaller output layer (default: gpt2)")  # fmt: skip
    train.add_argument("--preset", choices=list(PRESETS), help="a named run: base trains the best base model the "
                       "course can in about 30 minutes on 2 CPU cores, into models/base.pt (chapters 6 and 7 use it); "
                       "options typed with it still apply")  # fmt: skip
    train.add_argument("--architecture", choices=ARCHITECTURES, default=argparse.SUPPRESS,
                       help="gpt2, or llama: RMSNorm, rotary embeddings, SwiGLU, grouped-query attention and no "
                       "biases, at the same size (chapter 8) (default: gpt2)")  # fmt: skip
    _add_training_options(train)
    train.add_argument(
        "--resume",
        metavar="PATH",
        help="continue the run saved in this checkpoint (e.g. the -interrupted.pt that Ctrl-C writes); the options "
        "you type now (epochs, learning rate, evaluation, precision...) apply, the data and batch options stay",
    )
    train.add_argument("--max-new-tokens", type=NON_NEGATIVE_INT, default=50, help="tokens in the final sample "
                       "(default: 50)")  # fmt: skip
    train.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: the best available)")
    train.add_argument(
        "--output",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help=f"checkpoint file (.pt), or a folder to write {DEFAULT_OUTPUT.name} into; the loss curve (-loss.png) and "
        f"the sample (-sample.txt) are written next to it (default: {DEFAULT_OUTPUT}, or the resumed run's)",
    )
    train.add_argument("--quiet", action="store_true", help="no progress bar and no evaluation lines")

    gen = commands.add_parser(
        "generate",
        help="continue a prompt with a trained checkpoint",
        description="Load a checkpoint written by `llm-course train`; print the prompt followed by its continuation, "
        "token by token (Ctrl-C stops it, keeping what was written).",
    )
    gen.add_argument("--checkpoint", metavar="PATH", default=str(MODELS_DIR / DEFAULT_OUTPUT.name),
                     help="checkpoint to load (default: %(default)s)")  # fmt: skip
    gen.add_argument("--prompt", required=True, help="the text to continue")
    gen.add_argument("--max-new-tokens", type=NON_NEGATIVE_INT, default=50, help="tokens to generate (default: 50)")
    gen.add_argument(
        "--temperature",
        type=NON_NEGATIVE_NUMBER,
        default=None,
        help="0 picks the most likely token (greedy); higher values sample more freely (default: 0, or 1 when "
        "--top-k or --top-p is given)",
    )
    gen.add_argument("--top-k", type=POSITIVE_INT, default=None, help="sample only among the k most likely tokens")
    gen.add_argument("--top-p", type=_parse_number(float, 0, 1, low_open=True), default=None,
                     help="sample only among the most likely tokens whose probabilities add up to p (nucleus)")  # fmt: skip
    gen.add_argument("--seed", type=int, default=None, help="random seed for sampling (default: unseeded)")
    gen.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                     help="bf16 halves the weights' memory and reads them faster (default: fp32)")  # fmt: skip
    gen.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: the best available)")
    for module in COMMAND_MODULES:
        module.add_commands(commands)
    return parser


def _with_flags(message: str) -> str:
    """An error message about TrainingConfig fields, in terms of the command's flags."""
    return re.sub(r"TrainingConfig\.(\w+)", lambda match: FLAG_OF.get(match.group(1), match.group(1)), message)


def _train(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    typed = {name: getattr(args, name) for name in FLAG_OF if hasattr(args, name)}
    run = {name: getattr(args, name) for name in ("model_size", "architecture", "corpus", "text", "output")
           if hasattr(args, name)}  # fmt: skip
    if hasattr(args, "tokenizer"):
        run["tokenizer"] = TOKENIZERS[args.tokenizer]
    resume = None
    if args.resume and args.preset:
        parser.error("--preset starts a new run; leave it out with --resume, which continues the run's own settings")
    if args.resume:
        resume = load_checkpoint(args.resume)  # read once; fails early, with a clear message, on a bad file
        try:
            config = resumed_config(resume[1], typed, args.resume)
        except ValueError as err:
            raise ValueError(_with_flags(str(err))) from err
        # Older runs did not record GPT-2's tokenizer, and runs before chapter 8 were all gpt2 architecture.
        stored_run = {"tokenizer": "gpt2", "architecture": "gpt2", **resume[1]["training"]["run"]}
        if stored_run["model_size"] not in MODEL_SIZES:
            raise ValueError(f"{args.resume} was trained as model size {stored_run['model_size']!r}, which this version "
                             f"of the course does not have ({', '.join(MODEL_SIZES)}): resume it with the version "
                             "that wrote it")  # fmt: skip
        for name in ("model_size", "architecture", "corpus", "text", "tokenizer"):
            if name in run and run[name] != stored_run[name]:
                flag = "--" + name.replace("_", "-")
                raise ValueError(f"{flag} {run[name]} differs from the resumed run's {stored_run[name]}: leave it "
                                 "out, or start a new run without --resume")  # fmt: skip
        run = {**stored_run, "output": run.get("output", stored_run["output"])}
    else:
        if args.preset:
            typed = {**PRESETS[args.preset]["training"], **typed}
            run = {**PRESETS[args.preset]["run"], **run}
        run = {"model_size": "course", "corpus": "small", "text": None, "output": DEFAULT_OUTPUT, "tokenizer": "gpt2",
               "architecture": "gpt2", **run}  # fmt: skip
        model_context = MODEL_SIZES[run["model_size"]][1]().context_length
        typed.setdefault("max_length", model_context)
        if typed["max_length"] > model_context:
            parser.error(f"--context-length {typed['max_length']} exceeds the {run['model_size']} model's context "
                         f"length {model_context}: use {model_context} or less")  # fmt: skip
        try:
            config = TrainingConfig(**typed)
        except ValueError as err:
            parser.error(_with_flags(str(err)))
    if config.precision == "fp16" and get_device(args.device).type != "cuda":
        parser.error(f"--precision fp16 needs a CUDA GPU, but the device is {get_device(args.device)}: use bf16")
    pretrain(
        config,
        model_size=run["model_size"],
        architecture=run["architecture"],
        corpus=run["corpus"] or "small",
        text=run["text"],
        output=run["output"],
        resume=resume,
        device=args.device,
        final_sample_tokens=args.max_new_tokens,
        quiet=args.quiet,
        tokenizer=run["tokenizer"],
    )


def _fit_vocabulary(model: GPTModel, tokenizer_size: int) -> None:
    """Keep only the output rows of token ids the tokenizer has. A vocabulary padded for speed (50,304 rows for
    GPT-2's 50,257 tokens) then never yields an id that cannot be decoded, and every real token's score stays
    exactly what it was."""
    weight = model.out_head.weight
    if weight.shape[0] > tokenizer_size:
        model.out_head = nn.Linear(weight.shape[1], tokenizer_size, bias=False, device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            model.out_head.weight.copy_(weight[:tokenizer_size])


def _generate(args: argparse.Namespace) -> None:
    device = get_device(args.device)
    model, checkpoint = load_checkpoint(args.checkpoint, device=device)
    if args.precision == "bf16":
        model = model.to(torch.bfloat16)
    tokenizer = tokenizer_named(checkpoint.get("tokenizer", "gpt2"))  # the one the model was trained with
    _fit_vocabulary(model, tokenizer.n_vocab)
    sampling = args.top_k is not None or args.top_p is not None
    temperature = args.temperature if args.temperature is not None else (1.0 if sampling else 0.0)
    if temperature == 0 and sampling:
        raise ValueError("--top-k and --top-p choose among tokens to sample, but --temperature 0 is greedy: give a "
                         "temperature above 0, or leave out --top-k and --top-p")  # fmt: skip
    generator = None if args.seed is None else torch.Generator().manual_seed(args.seed)
    ids = text_to_token_ids(args.prompt, tokenizer)
    out = sys.stdout
    if hasattr(out, "reconfigure"):  # a console that cannot show a character (cp1252) shows "?" instead
        out.reconfigure(errors="replace")
    out.write(args.prompt)
    out.flush()
    # Tokens may split a character's UTF-8 bytes: decode the bytes incrementally, so each piece prints whole.
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    try:
        for next_id in generate_stream(model, ids, args.max_new_tokens, temperature=temperature, top_k=args.top_k,
                                       top_p=args.top_p, generator=generator):  # fmt: skip
            out.write(decoder.decode(tokenizer.decode_single_token_bytes(next_id.item())))
            out.flush()
    finally:
        out.write(decoder.decode(b"", final=True) + "\n")
        out.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line `llm-course ARGS` (argv defaults to sys.argv[1:]); return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    for module in COMMAND_MODULES:
        if args.command in module.COMMANDS:
            return module.run(args)
    if getattr(args, "start_context", None) == "" or getattr(args, "prompt", None) == "":
        parser.error("argument --prompt: the prompt is empty; give at least one word")
    try:
        get_device(args.device)
    except ValueError as err:
        parser.error(f"argument --device: {err}")
    reuse_freed_memory()  # each training step reuses the large blocks the previous one freed (CPU, Linux)
    try:
        if args.command == "train":
            _train(args, parser)
        else:
            _generate(args)
    except BrokenPipeError:
        # The reader went away (`llm-course generate ... | head`): it has what it wanted. Point stdout at
        # /dev/null so that Python's final flush does not complain about the closed pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
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
