"""Chapter 7: talking to an instruction-tuned model: a notebook chat widget and two commands.

    llm-course instruct-train --checkpoint models/gpt-course.pt --output models/gpt-course-instruct.pt
    llm-course chat --checkpoint models/gpt-course-instruct.pt --instruction "Write the word backwards." --input house
    llm-course chat --checkpoint models/gpt-course-instruct.pt    # one instruction per line until an empty line

Both use chapter 7's lesson code (llm_course/instructions.py): the same Alpaca-style prompt, the same batches,
the course's one training loop, greedy answers that stop at the end-of-text token. `InstructionChat` is the
same conversation in a notebook cell: a text box for the instruction, one for the input, and the answers.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any, Callable, TextIO

import torch
from torch import nn

from .checkpoints import load_checkpoint, save_checkpoint
from .instructions import (
    FREE_FORM,
    InstructionDataset,
    create_instruction_loader,
    eos_id_of,
    evaluate_exact_match,
    generate_response,
    load_instruction_data,
    split_instruction_data,
)
from .pipeline import PROG, tokenizer_named
from .training import TrainingConfig, configure_optimizer, train_model
from .utils import get_device, set_seed

__all__ = ["InstructionChat", "chat_loop", "instruct_train"]

CHAPTER = 7

COMMANDS = ("chat", "instruct-train")


class InstructionChat:
    """A chat box for an instruction-tuned model: type an instruction (and an optional input), press "Answer", and the model's greedy response (`generate_response`) appears under the earlier ones.

    `ask(instruction, input)` does the same from code and returns the answer; `history` holds every
    (instruction, input, answer). Its plain-text form (a terminal, a static notebook view) lists the history.
    """

    def __init__(self, model: nn.Module, tokenizer, max_new_tokens: int = 32, examples: tuple[tuple[str, str], ...] = ()):
        import ipywidgets as widgets

        self.model, self.tokenizer, self.max_new_tokens = model, tokenizer, max_new_tokens
        self.eos_id = eos_id_of(tokenizer)
        self.history: list[tuple[str, str, str]] = []
        layout = widgets.Layout(width="480px")
        self.instruction = widgets.Text(placeholder="an instruction, e.g. Write the word backwards.",
                                        description="instruction", layout=layout)  # fmt: skip
        self.input = widgets.Text(placeholder="its input (may stay empty), e.g. house", description="input", layout=layout)
        self.button = widgets.Button(description="Answer", button_style="primary")
        self.log = widgets.HTML()
        self.button.on_click(lambda _: self._answer_boxes())
        self.box = widgets.VBox([self.instruction, widgets.HBox([self.input, self.button]), self.log])
        for instruction, given in examples:
            self.ask(instruction, given)

    def ask(self, instruction: str, input: str = "") -> str:
        """The model's answer to `instruction` (and `input`), added to the history and the widget."""
        if not instruction.strip():
            raise ValueError("the instruction is empty: type what the model should do")
        answer = generate_response(self.model, self.tokenizer, instruction, input, self.max_new_tokens, self.eos_id)
        self.history.append((instruction, input, answer))
        self._redraw()
        return answer

    def _answer_boxes(self) -> None:
        if not self.instruction.value.strip():
            return
        try:
            self.ask(self.instruction.value, self.input.value)
        except ValueError as err:  # an instruction longer than the context, say: show it rather than raise in a callback
            self.history.append((self.instruction.value, self.input.value, f"(error: {err})"))
            self._redraw()
        self.input.value = ""

    def _redraw(self) -> None:
        import html

        rows = []
        for instruction, given, answer in reversed(self.history):  # the newest on top
            question = html.escape(instruction) + (f" <i>{html.escape(given)}</i>" if given else "")
            rows.append(f"<p><b>you:</b> {question}<br><b>model:</b> <code>{html.escape(answer)}</code></p>")
        self.log.value = "".join(rows)

    def describe(self) -> str:
        lines = [f"chat with the model ({len(self.history)} answers)"]
        for instruction, given, answer in self.history:
            lines.append(f"  {instruction}" + (f" [{given}]" if given else "") + f" -> {answer!r}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.describe()

    def _repr_mimebundle_(self, **kwargs) -> dict:
        bundle = self.box._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = self.describe()
        return bundle


# --- instruction-tuning a checkpoint ---------------------------------------------------------------------


def instruct_train(
    checkpoint: str | Path,
    output: str | Path,
    data: str | Path | None = None,
    config: TrainingConfig | None = None,
    mask_instruction: bool = False,
    device: torch.device | str | None = None,
    evaluate: bool = True,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Instruction-fine-tune the GPT in `checkpoint` on `data` (the course's data set by default) and save it.

    The entries are split as `split_instruction_data` does; the train split trains through `train_model`,
    the validation split gives the evaluated loss, and (with `evaluate`) the test split is scored by exact
    match before and after. Returns what was measured: accuracy_before and accuracy_after (per family),
    seconds (the training time), steps, train_loss and val_loss (the last evaluation) and output (the path).
    The saved checkpoint records the tokenizer, the base, the accuracies and the steps.
    """
    # Chapter 7's recipe: two passes, warmup to 1e-3 and cosine decay to 1e-4 (lr 1e-4 or 3e-4, or masking the
    # instructions, did no better in exact match with the course's small models).
    config = config or TrainingConfig(num_epochs=2, lr=1e-3, warmup_steps=20, min_lr=1e-4, eval_freq=50, eval_iter=5,
                                      start_context=None)
    device = get_device(device)
    model, stored = load_checkpoint(checkpoint, device=device)
    tokenizer_name = stored.get("tokenizer", "gpt2")
    tokenizer = tokenizer_named(tokenizer_name)
    entries = load_instruction_data(data)
    try:  # every entry must fit the model's context: check them all now, so that errors give the file's numbering
        InstructionDataset(entries, tokenizer, model.cfg.context_length)
    except ValueError as err:
        raise ValueError(f"{data or 'the instruction data'}: {err}") from None
    splits = split_instruction_data(entries, seed=config.seed)
    if not splits["train"] or not splits["validation"]:
        raise ValueError(f"the data set has {len(entries)} entries, too few to split into train and validation: give "
                         "at least a handful of entries per family")  # fmt: skip
    set_seed(config.seed)
    context = model.cfg.context_length
    loaders = {
        name: create_instruction_loader(splits[name], tokenizer, config.batch_size, shuffle=name == "train",
                                        mask_instruction=mask_instruction, context_length=context)
        for name in ("train", "validation")
    }  # fmt: skip
    steps = config.num_epochs * len(loaders["train"])
    steps = steps if config.max_steps is None else min(steps, config.max_steps)
    if config.warmup_steps > steps:  # a short run (few entries, or --max-steps): warm up over its first tenth
        log(f"the run has {steps} steps, fewer than warmup_steps {config.warmup_steps}: warming up over {steps // 10}")
        config = dataclasses.replace(config, warmup_steps=steps // 10)
    scored = [entry for entry in splits["test"] if entry["task"] != FREE_FORM]
    result: dict[str, Any] = {"output": str(output)}
    if evaluate and scored:
        result["accuracy_before"] = evaluate_exact_match(model, tokenizer, scored)
        log(f"exact match on {len(scored)} test items before: {_mean(result['accuracy_before']):.1%}")
    model.train()
    optimizer = configure_optimizer(model, config)
    started = time.perf_counter()
    history = train_model(model, loaders["train"], loaders["validation"], optimizer, config, progress=progress)
    result["seconds"] = time.perf_counter() - started
    model.eval()
    result.update(steps=history.global_step, train_loss=history.train_losses[-1], val_loss=history.val_losses[-1])
    log(f"trained {history.global_step} steps in {result['seconds']:.1f} s; validation loss {result['val_loss']:.3f}")
    if evaluate and scored:
        result["accuracy_after"] = evaluate_exact_match(model, tokenizer, scored)
        log(f"exact match on {len(scored)} test items after: {_mean(result['accuracy_after']):.1%}")
    saved = save_checkpoint(
        output, model, tokenizer=tokenizer_name,
        instruction_tuning={"base": str(checkpoint), "data": str(data or "the course's data set"),
                            "mask_instruction": mask_instruction, "steps": history.global_step,
                            **{key: result[key] for key in ("accuracy_before", "accuracy_after") if key in result}},
    )  # fmt: skip
    log(f"saved the instruction-tuned model to {saved}")
    return result


def _mean(accuracies: dict[str, float]) -> float:
    return sum(accuracies.values()) / len(accuracies)


# --- the commands -----------------------------------------------------------------------------------------


def _load_chat_model(path: str, device: str | None) -> tuple[nn.Module, Any]:
    model, stored = load_checkpoint(path, device=get_device(device))
    return model.eval(), tokenizer_named(stored.get("tokenizer", "gpt2"))


def chat_loop(model: nn.Module, tokenizer, max_new_tokens: int, stdin: TextIO, stdout: TextIO) -> None:
    """Answer instructions read from `stdin`, one per line, until an empty line or the end of the input. A line
    `instruction | input` gives the input after a bar."""
    eos_id = eos_id_of(tokenizer)
    interactive = stdin.isatty()
    while True:
        if interactive:
            stdout.write("instruction> ")
            stdout.flush()
        line = stdin.readline()
        if not line.strip():
            return
        instruction, _, given = line.strip().partition(" | ")
        try:
            answer = generate_response(model, tokenizer, instruction.strip(), given.strip(), max_new_tokens, eos_id)
        except ValueError as err:  # a prompt longer than the context: say so and keep chatting
            stdout.write(f"{PROG}: error: {err}\n")
        else:
            stdout.write(answer + "\n")
        stdout.flush()


def _chat_command(args: argparse.Namespace) -> None:
    model, tokenizer = _load_chat_model(args.checkpoint, args.device)
    if args.instruction is not None:
        if not args.instruction.strip():
            raise ValueError("argument --instruction: the instruction is empty; say what the model should do")
        print(generate_response(model, tokenizer, args.instruction, args.input, args.max_new_tokens))
    else:
        if args.input:
            raise ValueError("--input needs --instruction (in a chat session, write `instruction | input` on a line)")
        chat_loop(model, tokenizer, args.max_new_tokens, sys.stdin, sys.stdout)


def _instruct_train_command(args: argparse.Namespace) -> None:
    config = TrainingConfig(num_epochs=args.epochs, max_steps=args.max_steps, batch_size=args.batch_size, lr=args.lr,
                            warmup_steps=args.warmup_steps, min_lr=args.min_lr, eval_freq=args.eval_freq, eval_iter=5,
                            start_context=None, seed=args.seed)  # fmt: skip
    instruct_train(args.checkpoint, args.output, args.data, config, mask_instruction=args.mask_instruction,
                   device=args.device, evaluate=not args.no_eval, progress=not args.quiet)  # fmt: skip


def add_commands(commands: argparse._SubParsersAction) -> None:
    from .cli import NON_NEGATIVE_INT, POSITIVE_INT, POSITIVE_NUMBER

    chat = commands.add_parser(
        "chat",
        help="answer instructions with an instruction-tuned checkpoint",
        description="Load a checkpoint written by `llm-course instruct-train` and answer instructions in the "
        "Alpaca-style prompt the model was tuned on, greedily, stopping at the end-of-text token. With "
        "--instruction, answer it once; otherwise read one instruction per line (`instruction | input` for an "
        "input) until an empty line or Ctrl-D.",
    )
    chat.add_argument("--checkpoint", metavar="PATH", required=True, help="the instruction-tuned checkpoint")
    chat.add_argument("--instruction", help="answer this instruction and exit")
    chat.add_argument("--input", default="", help="the instruction's input, e.g. the word to spell (default: none)")
    chat.add_argument("--max-new-tokens", type=POSITIVE_INT, default=32, help="longest answer in tokens (default: 32)")
    chat.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: the best available)")

    train = commands.add_parser(
        "instruct-train",
        help="instruction-fine-tune a checkpoint on the course's (or your) instruction data",
        description="Fine-tune a pretrained checkpoint (from `llm-course train`) on Alpaca-style instruction "
        "entries: the course's data set, or a JSON file of {instruction, input, output} entries. Prints the "
        "exact-match accuracy on the held-out test entries before and after, and saves the tuned model.",
    )
    train.add_argument("--checkpoint", metavar="PATH", required=True, help="the pretrained checkpoint to tune")
    train.add_argument("--output", metavar="PATH", required=True, help="where to save the tuned checkpoint (.pt)")
    train.add_argument("--data", metavar="PATH", help="a JSON file of instruction entries (default: the course's)")
    train.add_argument("--epochs", type=POSITIVE_INT, default=2, help="passes over the train split (default: 2)")
    train.add_argument("--max-steps", type=POSITIVE_INT, default=None, help="stop after this many steps")
    train.add_argument("--batch-size", type=POSITIVE_INT, default=8, help="entries per batch (default: 8)")
    train.add_argument("--lr", type=POSITIVE_NUMBER, default=1e-3, help="AdamW's peak learning rate (default: 1e-3)")
    train.add_argument("--warmup-steps", type=NON_NEGATIVE_INT, default=20, help="steps of linear warmup (default: 20)")
    train.add_argument("--min-lr", type=POSITIVE_NUMBER, default=1e-4,
                       help="the cosine decay's final learning rate (default: 1e-4)")
    train.add_argument("--eval-freq", type=POSITIVE_INT, default=50, help="evaluate the losses every N steps")
    train.add_argument("--seed", type=NON_NEGATIVE_INT, default=123, help="random seed of the split and the shuffle")
    train.add_argument("--mask-instruction", action="store_true", help="train on the response tokens only")
    train.add_argument("--no-eval", action="store_true", help="skip the exact-match evaluation before and after")
    train.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: the best available)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    try:
        if args.command == "chat":
            _chat_command(args)
        else:
            _instruct_train_command(args)
    except (ValueError, OSError) as err:
        print(f"{PROG}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted", file=sys.stderr)
        return 130
    return 0
