"""Chapter 6: the classifier commands: fine-tune a GPT on a CSV file of labelled texts, and label new texts.

    llm-course train-classifier reviews.csv                     # models/classifier.pt, from the base model
    llm-course classify "A text to label" "and another one"     # with models/classifier.pt
    llm-course classify --input texts.txt --checkpoint models/classifier.pt

The CSV file has a `text` and a `label` column (and optionally `group`, see `load_classification_csv`).
Every text longer than the model's context keeps its first `context_length` tokens, in training and when
classifying (both commands say how many were cut). Nothing is written until training has succeeded: the
checkpoint is saved atomically, once, at the end, and it never replaces the base model it started from.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from .checkpoints import MODELS_DIR, CheckpointError, load_checkpoint, save_checkpoint
from .classification import (
    TRAINABLE_LAYERS,
    create_classification_loaders,
    classification_accuracy,
    classification_loss,
    classify_texts,
    load_classification_csv,
    majority_baseline,
    make_classifier,
    set_trainable_layers,
)
from .lora import add_lora, merge_lora
from .model import GPTModel
from .pipeline import PROG, fine_tuning_base, tokenizer_named
from .tokenizers import encode_text
from .training import TrainingConfig, train_model
from .utils import get_device, set_seed

# The command-line plumbing (COMMANDS, add_commands, run) stays in this module, like cli.py's and classroom.py's.
__all__ = ["train_classifier"]

CHAPTER = 6

COMMANDS = ("train-classifier", "classify")
DEFAULT_CLASSIFIER = MODELS_DIR / "classifier.pt"
LAYER_CHOICES = (*TRAINABLE_LAYERS, "lora")


def _classifier_base(base: GPTModel, num_classes: int, source: str) -> GPTModel:
    """`base` with a head of `num_classes` outputs: a new head for a language model, its own for a classifier
    with exactly that many classes; a classifier built for another number of classes is refused."""
    if base.cfg.num_classes is None:
        return make_classifier(base, num_classes)
    if base.cfg.num_classes < num_classes:
        raise ValueError(
            f"the data has {num_classes} classes, more than the {base.cfg.num_classes} that the classifier {source} "
            "was built for: start from a language model (leave out --base) to get a head with a class for each label"
        )
    if base.cfg.num_classes > num_classes:
        raise ValueError(
            f"the classifier {source} has {base.cfg.num_classes} classes but the data only {num_classes}: its "
            "class ids would not match the labels; start from a language model (leave out --base)"
        )
    return base


def train_classifier(
    csv_path: str | Path,
    output: str | Path = DEFAULT_CLASSIFIER,
    base: str | Path | None = None,
    layers: str = "last_block",
    config: TrainingConfig | None = None,
    lora_rank: int = 8,
    lora_alpha: float = 16,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    balance: bool = False,
    device: str | None = None,
    models_dir: str | Path = MODELS_DIR,
    quiet: bool = False,
) -> dict:
    """Fine-tune a classifier on a CSV file of labelled texts and save it to `output`; return its report
    (the class names, accuracies, the majority baseline, trainable parameters and seconds).

    The base is the checkpoint `base` (a language model, or a classifier with as many classes as the data),
    else `fine_tuning_base(models_dir)`. `layers` is one of set_trainable_layers' choices or "lora" (merged
    before saving, so the checkpoint is a plain GPTModel). Everything is checked before training, and the
    checkpoint is written once, at the end, next to nothing else: a failure leaves every file as it was.
    """
    config = config or TrainingConfig(num_epochs=3, lr=5e-4, eval_freq=50, eval_iter=5, start_context=None)
    if layers not in LAYER_CHOICES:
        raise ValueError(f"layers must be one of {', '.join(LAYER_CHOICES)}, got {layers!r}")
    output = Path(output).expanduser()
    if base is not None and output.resolve() == Path(base).expanduser().resolve():
        raise ValueError(f"the output {output} is the base model itself: write the classifier to another file")
    if output.is_dir():
        output = output / DEFAULT_CLASSIFIER.name
    log = (lambda message: None) if quiet else print
    data = load_classification_csv(csv_path, val_fraction, test_fraction, balance, seed=config.seed, verbose=not quiet)
    if base is None:
        model, tokenizer, description = fine_tuning_base(models_dir, log=log)
        tokenizer_name = "gpt2"
    else:
        model, checkpoint = load_checkpoint(base)
        tokenizer_name = checkpoint.get("tokenizer", "gpt2")
        tokenizer, description = tokenizer_named(tokenizer_name), f"the checkpoint {base}"
    log(f"base: {description}")
    max_length = min(config.max_length, model.cfg.context_length)
    set_seed(config.seed)
    model = _classifier_base(model, data.num_classes, str(base)).to(get_device(device))
    if layers == "lora":
        add_lora(model, rank=lora_rank, alpha=lora_alpha)
    else:
        set_trainable_layers(model, layers)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    loaders = create_classification_loaders(data, tokenizer, max_length, config.batch_size, config.seed, not quiet)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.lr,
                                  weight_decay=config.weight_decay, betas=config.betas)  # fmt: skip
    started = time.perf_counter()
    history = train_model(model, loaders[0], loaders[1], optimizer, config, loss_fn=classification_loss,
                          progress=not quiet)  # fmt: skip
    seconds = time.perf_counter() - started
    if layers == "lora":
        merge_lora(model)
    splits = [(name, split, loader) for name, split, loader in zip(("train", "val", "test"),
                                                                     (data.train, data.val, data.test), loaders) if len(split)]  # fmt: skip
    accuracy = {name: classification_accuracy(model, loader) for name, _, loader in splits}
    majority = {name: majority_baseline(data.train.labels, split.labels) for name, split, _ in splits}
    report = dict(label_names=data.label_names, accuracy=accuracy, majority_baseline=majority, layers=layers,
                  trainable_parameters=trainable, seconds=seconds, steps=history.global_step,
                  csv=str(csv_path), base=description)  # fmt: skip
    model.requires_grad_(True)
    path = save_checkpoint(output, model.cpu(), tokenizer=tokenizer_name, classifier=report)
    for name, _, _ in splits:
        log(f"{name:<5} accuracy {accuracy[name]:.3f}   (always the most common class: {majority[name]:.3f})")
    log(f"trained {trainable:,} parameters ({layers}) for {history.global_step} steps in {seconds:.1f} s; saved {path}")
    return report


def _read_texts(args: argparse.Namespace) -> list[str]:
    if args.texts and args.input:
        raise ValueError("give the texts either as arguments or with --input, not both")
    if args.input:
        source = sys.stdin if args.input == "-" else open(Path(args.input).expanduser(), encoding="utf-8")
        with source:
            return [line.rstrip("\n") for line in source if line.strip()]
    if not args.texts:
        raise ValueError("no texts to classify: give them as arguments, or one per line with --input FILE")
    return args.texts


def _classify_command(args: argparse.Namespace) -> None:
    model, checkpoint = load_checkpoint(args.checkpoint, device=get_device(args.device))
    if model.cfg.num_classes is None:
        raise CheckpointError(
            f"{args.checkpoint} is a language model, not a classifier: train one with `{PROG} train-classifier FILE.csv`"
        )
    report = checkpoint.get("classifier", {})
    names = report.get("label_names") or [str(i) for i in range(model.cfg.num_classes)]
    tokenizer = tokenizer_named(checkpoint.get("tokenizer", "gpt2"))
    texts = _read_texts(args)
    for i, text in enumerate(texts):
        if not text.strip():
            raise ValueError(f"text {i + 1} is empty: every text needs at least one word")
    context = model.cfg.context_length
    cut = sum(len(encode_text(tokenizer, text)) > context for text in texts)
    if cut:
        print(f"note: {cut} of {len(texts)} texts are longer than the model's {context} tokens; each was "
              f"classified on its first {context}", file=sys.stderr)  # fmt: skip
    probabilities = torch.softmax(classify_texts(model, tokenizer, texts, batch_size=args.batch_size), dim=-1)
    for text, row in zip(texts, probabilities):
        best = int(row.argmax())
        preview = " ".join(text.split())
        preview = preview if len(preview) <= 60 else preview[:57] + "..."
        print(f"{names[best]}\t{row[best]:.3f}\t{preview}")


def _train_command(args: argparse.Namespace) -> None:
    get_device(args.device)  # a bad device fails before any data is read
    settings = {name: getattr(args, name) for name in ("num_epochs", "batch_size", "lr", "seed", "max_length")
                if getattr(args, name) is not None}  # fmt: skip
    config = TrainingConfig(**{"num_epochs": 3, "eval_freq": 50, "eval_iter": 5, "start_context": None, **settings})
    train_classifier(args.csv, output=args.output, base=args.base, layers=args.layers, config=config,
                     lora_rank=args.lora_rank, lora_alpha=args.lora_alpha, val_fraction=args.val_fraction,
                     test_fraction=args.test_fraction, balance=args.balance, device=args.device, quiet=args.quiet)  # fmt: skip


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add train-classifier and classify to a command line's subcommands; `run(args)` then runs the one chosen."""
    from .cli import POSITIVE_INT, POSITIVE_NUMBER, _parse_number  # cli.py imports this module

    fraction = _parse_number(float, 0, 1)
    train = commands.add_parser(
        "train-classifier", help="fine-tune a GPT to classify texts, on a CSV file with text and label columns",
        description="Fine-tune the base model (models/base.pt, or chapter 4's quick base, trained once if needed) "
                    "into a classifier of the CSV file's labels, split into train, validation and test by row (or "
                    "by its `group` column), and save it. Texts longer than the model's context keep their first "
                    "context-length tokens. The checkpoint is written only once training has succeeded.")  # fmt: skip
    train.add_argument("csv", metavar="CSV", help="UTF-8 CSV file with a header line `text,label` (and optionally `group`)")
    train.add_argument("--output", metavar="PATH", default=str(DEFAULT_CLASSIFIER),
                       help="the classifier checkpoint to write (default: %(default)s)")  # fmt: skip
    train.add_argument("--base", metavar="PATH", help="start from this checkpoint instead of the course's base model")
    train.add_argument("--layers", choices=LAYER_CHOICES, default="last_block",
                       help="what to train: every layer, the last block and final norm, the head alone, or LoRA "
                            "matrices (default: %(default)s; the head always trains)")  # fmt: skip
    train.add_argument("--epochs", dest="num_epochs", type=POSITIVE_INT, help="passes over the training texts (default: 3)")
    train.add_argument("--batch-size", type=POSITIVE_INT, help="texts per batch (default: 8)")
    train.add_argument("--lr", type=POSITIVE_NUMBER, help="AdamW's learning rate (default: 5e-4)")
    train.add_argument("--max-length", type=POSITIVE_INT,
                       help="tokens kept of each text (default and most: the model's context length)")  # fmt: skip
    train.add_argument("--lora-rank", type=POSITIVE_INT, default=8, help="rank of the LoRA matrices (default: 8)")
    train.add_argument("--lora-alpha", type=POSITIVE_NUMBER, default=16, help="LoRA's alpha (default: 16)")
    train.add_argument("--val-fraction", type=fraction, default=0.1, help="share of the rows that validate (default: 0.1)")
    train.add_argument("--test-fraction", type=fraction, default=0.1, help="share of the rows that test (default: 0.1)")
    train.add_argument("--balance", action="store_true", help="drop random texts of the larger classes in each split")
    train.add_argument("--seed", type=int, help="random seed (default: 123)")
    train.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: the best available)")
    train.add_argument("--quiet", action="store_true", help="print nothing but errors")
    train.set_defaults(classifier_command=_train_command)

    classify = commands.add_parser(
        "classify", help="label texts with a classifier from train-classifier",
        description="Print one line per text: its most likely label, that label's probability and the text's start. "
                    "A text longer than the model's context is classified on its first context-length tokens.")  # fmt: skip
    classify.add_argument("texts", metavar="TEXT", nargs="*", help="texts to classify (or use --input)")
    classify.add_argument("--input", metavar="FILE", help="read the texts from this UTF-8 file, one per line (- for stdin)")
    classify.add_argument("--checkpoint", metavar="PATH", default=str(DEFAULT_CLASSIFIER),
                          help="classifier checkpoint (default: %(default)s)")  # fmt: skip
    classify.add_argument("--batch-size", type=POSITIVE_INT, default=8, help="texts per batch (default: 8)")
    classify.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: the best available)")
    classify.set_defaults(classifier_command=_classify_command)


def run(args: argparse.Namespace) -> int:
    """Run the command parsed into `args`; return 0, or 1 after an error (printed as one line), 130 when
    interrupted (nothing is saved then)."""
    try:
        args.classifier_command(args)
    except (ValueError, OSError, RuntimeError) as err:
        print(f"{PROG}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted; nothing was saved", file=sys.stderr)
        return 130
    return 0
