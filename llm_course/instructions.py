"""Chapter 7: instruction fine-tuning and preference tuning (DPO): data, prompts, batches, exact evaluation.

An instruction entry has an `instruction`, an `input` (may be empty), the expected `output` and a `task`
(its family). Each entry becomes one training sequence, prompt + response + <|endoftext|>, in the layout
of Stanford's Alpaca data set without its one-sentence preamble (about 20 tokens of a 64-token context):

    ### Instruction:
    Spell the word letter by letter.

    ### Input:
    house

    ### Response:
    h o u s e<|endoftext|>

The course ships its own data set (llm_course/assets/instructions.json, written by
scripts/make_instruction_data.py, CC0-1.0). Most of its families have one right answer, so a model is scored
offline by exact match on held-out items. Preference pairs (a right answer against a wrong one) built from
the same entries train a model with direct preference optimization against a frozen copy of itself.

Fine-tuning needs no loss of its own: the batches are (inputs, targets) like pretraining's, and the course's
next-token cross-entropy already skips every target equal to -100 (F.cross_entropy's default ignore_index),
which is how collate_instructions leaves padding, and optionally the prompt, out of the loss.
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
import re
from collections import defaultdict
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .generation import generate
from .tokenizers import ENDOFTEXT, encode_text

__all__ = [
    "INSTRUCTION_DATA",
    "FREE_FORM",
    "EOS_ID",
    "IGNORE_INDEX",
    "check_instruction_entries",
    "load_instruction_data",
    "split_instruction_data",
    "format_prompt",
    "eos_id_of",
    "InstructionDataset",
    "collate_instructions",
    "create_instruction_loader",
    "generate_responses",
    "generate_response",
    "normalize_answer",
    "score_responses",
    "evaluate_exact_match",
    "make_preference_pairs",
    "PreferenceDataset",
    "collate_preferences",
    "create_preference_loader",
    "sequence_logprobs",
    "dpo_loss",
    "preference_metrics",
    "frozen_copy",
    "dpo_batch_loss",
    "dpo_loss_fn",
    "evaluate_preferences",
]

CHAPTER = 7

INSTRUCTION_DATA = Path(__file__).parent / "assets" / "instructions.json"
FREE_FORM = "free-form"  # the family of entries without one right answer: never scored by exact match
EOS_ID = 50256  # GPT-2's <|endoftext|>: ends every response and pads every batch (eos_id_of finds any tokenizer's)
IGNORE_INDEX = -100  # F.cross_entropy's default ignore_index: targets with this value add nothing to the loss

FIELDS = ("instruction", "input", "output")
PAIR_FIELDS = ("instruction", "input", "chosen", "rejected")


# ---------------------------------------------------------------------------------------------------------
# Data: checking, loading and splitting


def check_instruction_entries(entries, fields: Sequence[str] = FIELDS) -> list[dict[str, str]]:
    """Check a list of entries and return copies with a `task` (FREE_FORM where an entry has none).

    Every entry needs string `fields` (instruction, input, output); instruction and output may not be blank, and
    no field may contain <|endoftext|>, which marks the end of a response. Errors name the entry by its index.
    """
    if not isinstance(entries, list):
        raise ValueError(
            f"the instruction data must be a list of entries, got {type(entries).__name__}: "
            f"give a list of objects with {', '.join(fields)} fields"
        )
    if not entries:
        raise ValueError(f"the instruction data set is empty: it needs at least one entry with {', '.join(fields)} fields")
    checked = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ValueError(
                f"entry {index} is a {type(entry).__name__}, not an object with {', '.join(fields)} fields: {entry!r:.80}"
            )
        for field in fields:
            if field not in entry:
                raise ValueError(
                    f"entry {index} has no {field!r} field: every entry needs {', '.join(fields)} "
                    f'(input may be ""), got the fields {sorted(entry)}'
                )
        for field in (*fields, "task"):
            value = entry.get(field, "")
            if not isinstance(value, str):
                raise ValueError(
                    f"entry {index}: the field {field!r} must be a string, got {type(value).__name__} {value!r:.60}"
                )
            if ENDOFTEXT in value:
                raise ValueError(
                    f"entry {index}: the field {field!r} contains {ENDOFTEXT}, which marks the end of a response: remove it"
                )
            if field in fields and field != "input" and not value.strip():
                raise ValueError(f"entry {index}: the field {field!r} is empty: write it, or drop the entry")
        checked.append({**entry, "task": entry.get("task") or FREE_FORM})
    return checked


def load_instruction_data(path: str | os.PathLike | None = None) -> list[dict[str, str]]:
    """The entries of an instruction data file: the course's (INSTRUCTION_DATA) by default, or your JSON file.

    The file holds a JSON list of entries, or an object whose "entries" field is that list (the course's file
    adds its license and description). Each entry has string fields instruction, input and output, and
    optionally task (its family; FREE_FORM when missing). Errors say where the file or the entry is wrong.
    """
    path = Path(INSTRUCTION_DATA if path is None else path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"no instruction data file at {path}: check the path (relative paths start at {Path.cwd()})"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not UTF-8 text: save it as UTF-8") from err
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        line = text.splitlines()[err.lineno - 1] if text.strip() else ""
        raise ValueError(
            f"{path} is not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}: {line.strip()[:80]!r}"
        ) from None
    if isinstance(data, dict):
        if "entries" not in data:
            raise ValueError(f'{path} holds a JSON object without an "entries" list: put the entries in a list')
        data = data["entries"]
    try:
        return check_instruction_entries(data)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def split_instruction_data(
    entries: list[dict[str, str]], seed: int = 123, val_fraction: float = 0.1, test_fraction: float = 0.1
) -> dict[str, list[dict[str, str]]]:
    """Split entries into "train", "validation" and "test", reproducibly, family by family.

    Entries with the same (instruction, input) pair are one group and always land in the same split, so no
    question is trained on and then tested. Each family holds out round(fraction * groups) groups for test and
    for validation, at least one each when the family has enough groups, so every family is tested. The
    split depends only on the entries and the seed (not on their order); each split keeps the data's order.
    """
    for name, fraction in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
            raise ValueError(f"{name} must be a number in [0, 1), got {fraction!r}")
    if val_fraction + test_fraction >= 1:
        raise ValueError(
            f"val_fraction + test_fraction = {val_fraction + test_fraction} leaves nothing to train on: keep it below 1"
        )
    entries = check_instruction_entries(entries)
    groups: dict[tuple[str, str], str] = {}  # (instruction, input) -> the family of its first entry
    for entry in entries:
        groups.setdefault((entry["instruction"], entry["input"]), entry["task"])
    families: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for key, task in groups.items():
        families[task].append(key)

    split_of: dict[tuple[str, str], str] = {}
    for task, keys in families.items():
        keys.sort()
        random.Random(f"{seed}:{task}").shuffle(keys)  # one generator per family: adding a family moves no other
        n_test = max(1, round(len(keys) * test_fraction)) if test_fraction and len(keys) > 1 else 0
        n_val = max(1, round(len(keys) * val_fraction)) if val_fraction and len(keys) - n_test > 1 else 0
        for position, key in enumerate(keys):
            split_of[key] = "test" if position < n_test else "validation" if position < n_test + n_val else "train"
    splits: dict[str, list[dict[str, str]]] = {"train": [], "validation": [], "test": []}
    for entry in entries:
        splits[split_of[entry["instruction"], entry["input"]]].append(entry)
    return splits


# ---------------------------------------------------------------------------------------------------------
# Prompts and batches


def format_prompt(entry: dict[str, str]) -> str:
    """The Alpaca-style prompt of an entry, ending where the model's response begins.

    The Input section is left out when the input is empty, as in Alpaca.
    """
    prompt = f"### Instruction:\n{entry['instruction']}\n\n"
    if entry.get("input"):
        prompt += f"### Input:\n{entry['input']}\n\n"
    return prompt + "### Response:\n"


def eos_id_of(tokenizer) -> int:
    """The id of the tokenizer's end-of-text token, which ends every response (50256 for GPT-2)."""
    ids = encode_text(tokenizer, ENDOFTEXT)
    if len(ids) != 1:
        raise ValueError(
            f"this tokenizer has no single {ENDOFTEXT} token, which instruction tuning needs to end answers: pass "
            "the id of the token that should end them as eos_id"
        )
    return ids[0]


def _tokenize(
    index: int, prompt: str, response: str, tokenizer, context_length: int | None, eos_id: int
) -> tuple[list[int], int]:
    """(prompt + response + end-of-text token ids, prompt length), checked against the model's context."""
    prompt_ids = encode_text(tokenizer, prompt)
    response_ids = encode_text(tokenizer, response) + [eos_id]
    if context_length is not None:
        # The model reads every token but the last one and must read the whole prompt to answer.
        if len(prompt_ids) >= context_length:
            raise ValueError(
                f"entry {index}: its prompt is {len(prompt_ids)} tokens long, but the model's context is "
                f"{context_length} tokens, which must hold the prompt and the answer: shorten the instruction "
                "and input, or drop the entry"
            )
        if len(prompt_ids) + len(response_ids) - 1 > context_length:
            raise ValueError(
                f"entry {index}: its prompt ({len(prompt_ids)} tokens) and response with end-of-text "
                f"({len(response_ids)} tokens) need {len(prompt_ids) + len(response_ids) - 1} input tokens, more "
                f"than the model's context of {context_length}: shorten the response, or drop the entry"
            )
    return prompt_ids + response_ids, len(prompt_ids)


class InstructionDataset(Dataset):
    """Tokenized instruction entries. Item i is (token_ids, prompt_length): the token ids (a list of ints) of
    entry i's prompt, response and end-of-text token, and how many of them are the prompt.

    With `context_length` (the model's), an entry that does not fit is an error naming the entry. `eos_id`
    None is the tokenizer's end-of-text token (`eos_id_of`), kept in `self.eos_id` for padding.
    """

    def __init__(
        self, entries: list[dict[str, str]], tokenizer, context_length: int | None = None, eos_id: int | None = None
    ):
        self.entries = check_instruction_entries(entries)
        self.eos_id = eos_id_of(tokenizer) if eos_id is None else eos_id
        self.examples = [
            _tokenize(index, format_prompt(entry), entry["output"], tokenizer, context_length, self.eos_id)
            for index, entry in enumerate(self.entries)
        ]

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> tuple[list[int], int]:
        return self.examples[index]


def collate_instructions(
    batch: list[tuple[list[int], int]],
    pad_id: int = EOS_ID,
    ignore_index: int = IGNORE_INDEX,
    mask_instruction: bool = False,
    max_length: int | None = None,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad a list of InstructionDataset items into (inputs, targets), two (batch, seq) LongTensors.

    seq is the longest item's length minus one (dynamic padding: a batch of short items stays short). Targets
    are the inputs shifted by one token. Each row's last real target is its own end-of-text token, kept so
    that the model learns to stop; the padding after it gets `ignore_index`, which the loss skips. With
    `mask_instruction`, the targets inside the prompt get `ignore_index` too: the loss then covers exactly
    the response and its end-of-text token. `max_length` cuts longer batches to that many positions.
    """
    if not batch:
        raise ValueError("the batch is empty: give at least one (token_ids, prompt_length) item")
    if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1):
        raise ValueError(f"max_length must be None or an integer >= 1, got {max_length!r}")
    for ids, prompt_length in batch:
        if len(ids) < 2 or not 0 < prompt_length < len(ids):
            raise ValueError(
                f"each item must be (token_ids, prompt_length) with at least two tokens and a prompt shorter than "
                f"the item, got {len(ids)} tokens and prompt_length {prompt_length!r}: use InstructionDataset's items"
            )
    width = max(len(ids) for ids, _ in batch) - 1
    inputs = torch.full((len(batch), width), pad_id, dtype=torch.long)
    targets = torch.full((len(batch), width), ignore_index, dtype=torch.long)
    for row, (ids, prompt_length) in enumerate(batch):
        ids = torch.tensor(ids, dtype=torch.long)
        inputs[row, : len(ids) - 1] = ids[:-1]
        targets[row, : len(ids) - 1] = ids[1:]  # ends with the item's end-of-text token
        if mask_instruction:
            targets[row, : prompt_length - 1] = ignore_index  # the targets that are prompt tokens
    if max_length is not None:
        inputs, targets = inputs[:, :max_length], targets[:, :max_length]
    if device is not None:
        inputs, targets = inputs.to(device), targets.to(device)
    return inputs, targets


def create_instruction_loader(
    entries: list[dict[str, str]],
    tokenizer,
    batch_size: int = 8,
    shuffle: bool = True,
    mask_instruction: bool = False,
    context_length: int | None = None,
    drop_last: bool = False,
    eos_id: int | None = None,
) -> DataLoader:
    """A DataLoader of (inputs, targets) batches from instruction entries (see collate_instructions).

    `eos_id` (None: the tokenizer's end-of-text token) ends every response and pads the batches. Shuffling
    draws from torch's global generator, so `torch.manual_seed` makes the order reproducible. The batches stay
    on the CPU; the training loss moves them to the model's device.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    dataset = InstructionDataset(entries, tokenizer, context_length, eos_id)
    collate = partial(collate_instructions, pad_id=dataset.eos_id, mask_instruction=mask_instruction)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, collate_fn=collate)


# ---------------------------------------------------------------------------------------------------------
# Answers and exact-match evaluation


def generate_responses(
    model: nn.Module,
    tokenizer,
    entries: list[dict[str, str]],
    max_new_tokens: int = 32,
    eos_id: int | None = None,
    batch_size: int = 64,
) -> list[str]:
    """The model's greedy response text to each entry's prompt (instruction and input; the output is unused).

    A response ends at the end-of-text token `eos_id` (None: the tokenizer's; not included) or after
    max_new_tokens tokens, whichever comes first, and never runs past the model's context (so the prompt is
    never cut). Prompts of the same token length are generated together in batches of up to `batch_size`: no
    padding, so the same response as alone.
    """
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    entries = check_instruction_entries(entries, fields=("instruction", "input"))
    eos_id = eos_id_of(tokenizer) if eos_id is None else eos_id
    context_length = model.cfg.context_length
    by_length: dict[int, list[tuple[int, list[int]]]] = defaultdict(list)
    for index, entry in enumerate(entries):
        prompt_ids = encode_text(tokenizer, format_prompt(entry))
        if len(prompt_ids) >= context_length:
            raise ValueError(
                f"entry {index}: its prompt is {len(prompt_ids)} tokens long, but the model's context is "
                f"{context_length} tokens, which must hold the prompt and the answer: shorten the instruction and input"
            )
        by_length[len(prompt_ids)].append((index, prompt_ids))

    responses = [""] * len(entries)
    for prompt_length, prompts in by_length.items():
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start : start + batch_size]
            idx = torch.tensor([ids for _, ids in chunk], dtype=torch.long)  # (chunk, prompt_length)
            out = generate(model, idx, min(max_new_tokens, context_length - prompt_length), eos_id=eos_id)
            for (index, _), row in zip(chunk, out[:, prompt_length:].tolist()):
                responses[index] = tokenizer.decode(row[: row.index(eos_id)] if eos_id in row else row)
    return responses


def generate_response(
    model: nn.Module,
    tokenizer,
    instruction: str,
    input: str = "",
    max_new_tokens: int = 32,
    eos_id: int | None = None,
) -> str:
    """The model's greedy response to one instruction (and optional input), in the training prompt format."""
    return generate_responses(model, tokenizer, [{"instruction": instruction, "input": input}], max_new_tokens, eos_id)[0]


def normalize_answer(text: str) -> str:
    """The form in which answers are compared: leading and trailing white space removed, nothing else.

    Case, punctuation and inner spacing count, because the tasks ask for them (capitals, a spelling, a list).
    """
    return text.strip()


def score_responses(entries: list[dict[str, str]], responses: list[str]) -> dict[str, float]:
    """Exact-match accuracy per family: the share of entries whose normalized response equals the
    normalized output. FREE_FORM entries have no single right answer and are left out."""
    entries = check_instruction_entries(entries)
    if len(responses) != len(entries):
        raise ValueError(f"got {len(responses)} responses for {len(entries)} entries: give one response per entry")
    correct: dict[str, list[bool]] = defaultdict(list)
    for entry, response in zip(entries, responses):
        if entry["task"] != FREE_FORM:
            correct[entry["task"]].append(normalize_answer(response) == normalize_answer(entry["output"]))
    if not correct:
        raise ValueError(f"every entry is {FREE_FORM!r}: exact match needs entries of families with one right answer")
    return {task: sum(hits) / len(hits) for task, hits in correct.items()}


def evaluate_exact_match(
    model: nn.Module,
    tokenizer,
    entries: list[dict[str, str]],
    max_new_tokens: int = 32,
    eos_id: int | None = None,
    batch_size: int = 64,
) -> dict[str, float]:
    """Exact-match accuracy per family of the model's greedy responses (generate_responses, score_responses)."""
    scored = [entry for entry in check_instruction_entries(entries) if entry["task"] != FREE_FORM]
    if not scored:
        raise ValueError(f"every entry is {FREE_FORM!r}: exact match needs entries of families with one right answer")
    return score_responses(scored, generate_responses(model, tokenizer, scored, max_new_tokens, eos_id, batch_size))


# ---------------------------------------------------------------------------------------------------------
# Preference pairs


def _misspell(word: str, rng: random.Random) -> str:
    """The word with two neighbouring, different characters swapped (the word itself if none differ)."""
    spots = [i for i in range(len(word) - 1) if word[i] != word[i + 1]]
    if not spots:
        return word
    i = rng.choice(spots)
    return word[:i] + word[i + 1] + word[i] + word[i + 2 :]


def _off_by_one(number: str, rng: random.Random) -> str:
    value = int(number)
    return str(value + 1 if value == 0 else value + rng.choice((-1, 1)))


def _worse_answer(entry: dict[str, str], rng: random.Random, outputs: list[str]) -> str:
    """A wrong or worse answer to an entry, of the kind a weak model gives: off by one, misspelled, the
    instruction not followed, or the right answer to another question of the same family."""
    task, output, given = entry["task"], entry["output"], entry["input"]
    if re.fullmatch(r"-?\d+", output) and task != "larger_number":
        return _off_by_one(output, rng)
    if task == "spell_word":
        return " ".join(_misspell(output.replace(" ", ""), rng))
    if task == "reverse_word":
        return _misspell(output, rng)
    if task == "larger_number":
        return min(given.split(" or "), key=int)  # the smaller one
    if task in ("uppercase", "title_case", "bullet_list"):
        return given  # the instruction not followed
    if task == "sort_words":
        words = given.split(", ")
        return ", ".join(words if words != sorted(words) else words[::-1])
    others = [other for other in outputs if other != output]
    return rng.choice(others) if others else ""


def make_preference_pairs(entries: list[dict[str, str]], seed: int = 123) -> list[dict[str, str]]:
    """One preference pair per entry: {instruction, input, task, chosen: the right output, rejected: a worse one}.

    The rejected answer is off by one for numbers, a misspelling for spelled and reversed words, the smaller
    number, the input left unchanged for formatting tasks, and otherwise (facts, free-form answers) another
    answer of the same family. Entries where no different answer exists are skipped.
    """
    entries = check_instruction_entries(entries)
    rng = random.Random(seed)
    outputs_by_task: dict[str, list[str]] = defaultdict(list)
    for entry in entries:
        outputs_by_task[entry["task"]].append(entry["output"])
    for outputs in outputs_by_task.values():
        outputs[:] = sorted(set(outputs))
    pairs = []
    for entry in entries:
        rejected = _worse_answer(entry, rng, outputs_by_task[entry["task"]])
        if rejected.strip() and normalize_answer(rejected) != normalize_answer(entry["output"]):
            pair = {key: entry[key] for key in ("instruction", "input", "task")}
            pairs.append({**pair, "chosen": entry["output"], "rejected": rejected})
    return pairs


class PreferenceDataset(Dataset):
    """Tokenized preference pairs. Item i is (chosen, rejected), each a (token_ids, prompt_length) item as in
    InstructionDataset: the same prompt followed by the chosen or the rejected response and end-of-text."""

    def __init__(
        self, pairs: list[dict[str, str]], tokenizer, context_length: int | None = None, eos_id: int | None = None
    ):
        self.pairs = check_instruction_entries(pairs, fields=PAIR_FIELDS)
        self.eos_id = eos_id_of(tokenizer) if eos_id is None else eos_id
        self.examples = []
        for index, pair in enumerate(self.pairs):
            prompt = format_prompt(pair)
            chosen = _tokenize(index, prompt, pair["chosen"], tokenizer, context_length, self.eos_id)
            rejected = _tokenize(index, prompt, pair["rejected"], tokenizer, context_length, self.eos_id)
            self.examples.append((chosen, rejected))

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> tuple[tuple[list[int], int], tuple[list[int], int]]:
        return self.examples[index]


def collate_preferences(
    batch: list[tuple[tuple[list[int], int], tuple[list[int], int]]],
    pad_id: int = EOS_ID,
    ignore_index: int = IGNORE_INDEX,
    max_length: int | None = None,
    device: torch.device | str | None = None,
) -> dict[str, torch.Tensor]:
    """Pad PreferenceDataset items into chosen_inputs, chosen_targets, rejected_inputs, rejected_targets.

    Each pair of tensors is collate_instructions' (inputs, targets) with the prompt masked: DPO compares the
    probabilities of the two responses, so only response tokens count. The two sides are padded separately.
    """
    if not batch:
        raise ValueError("the batch is empty: give at least one (chosen, rejected) item")
    collate = partial(
        collate_instructions, pad_id=pad_id, ignore_index=ignore_index, mask_instruction=True, max_length=max_length, device=device
    )
    chosen_inputs, chosen_targets = collate([chosen for chosen, _ in batch])
    rejected_inputs, rejected_targets = collate([rejected for _, rejected in batch])
    return {
        "chosen_inputs": chosen_inputs,
        "chosen_targets": chosen_targets,
        "rejected_inputs": rejected_inputs,
        "rejected_targets": rejected_targets,
    }


def create_preference_loader(
    pairs: list[dict[str, str]],
    tokenizer,
    batch_size: int = 8,
    shuffle: bool = True,
    context_length: int | None = None,
    eos_id: int | None = None,
) -> DataLoader:
    """A DataLoader of collate_preferences batches (shuffled by torch's global generator); `eos_id` (None:
    the tokenizer's end-of-text token) ends every response and pads the batches."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    dataset = PreferenceDataset(pairs, tokenizer, context_length, eos_id)
    collate = partial(collate_preferences, pad_id=dataset.eos_id)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, collate_fn=collate)


# ---------------------------------------------------------------------------------------------------------
# Direct preference optimization (DPO)


def sequence_logprobs(
    model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """The log-probability of each row's response: (batch, seq) inputs and targets -> (batch,) sums of the
    log-probabilities the model gives the targets, skipping targets equal to ignore_index."""
    logits = model(inputs)  # (batch, seq, vocab)
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    counted = targets != ignore_index  # (batch, seq)
    picked = log_probs.gather(-1, targets.masked_fill(~counted, 0).unsqueeze(-1)).squeeze(-1)  # (batch, seq)
    return (picked * counted).sum(dim=-1)


def _check_beta(beta: float) -> None:
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0 < beta < math.inf:
        raise ValueError(f"beta must be a positive number (0.1 is usual), got {beta!r}")


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    beta: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The DPO loss of a batch and its (batch,) chosen and rejected rewards, from (batch,) log-probabilities.

    A response's reward is beta * (log p_policy - log p_reference): how much more likely the policy has made it
    than the frozen reference. The loss, mean(-log sigmoid(chosen reward - rejected reward)), is ln 2 while
    the policy equals the reference and falls as the policy prefers the chosen answers more than the reference
    does. beta sets how far it may move from the reference. The rewards are detached: they are measurements.
    """
    _check_beta(beta)
    chosen_rewards = beta * (policy_chosen_logps - reference_chosen_logps)
    rejected_rewards = beta * (policy_rejected_logps - reference_rejected_logps)
    loss = -F.logsigmoid(chosen_rewards - rejected_rewards).mean()
    return loss, chosen_rewards.detach(), rejected_rewards.detach()


def preference_metrics(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> dict[str, float]:
    """reward_margin: the mean of chosen minus rejected reward; reward_accuracy: the share of pairs whose chosen
    reward is the larger (0.5 is chance, and ties, as at the start, count as misses)."""
    margins = chosen_rewards - rejected_rewards
    return {"reward_margin": margins.mean().item(), "reward_accuracy": (margins > 0).float().mean().item()}


def frozen_copy(model: nn.Module) -> nn.Module:
    """A copy of the model that never trains: the DPO reference. Eval mode (no dropout), no gradients."""
    reference = copy.deepcopy(model).eval()
    for parameter in reference.parameters():
        parameter.requires_grad_(False)
    return reference


def _response_logps(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(batch,) log-probabilities of the chosen and of the rejected responses of a collate_preferences batch."""
    device = next(model.parameters()).device
    return tuple(
        sequence_logprobs(model, batch[f"{side}_inputs"].to(device), batch[f"{side}_targets"].to(device))
        for side in ("chosen", "rejected")
    )


def dpo_batch_loss(
    policy: nn.Module, reference: nn.Module, batch: dict[str, torch.Tensor], beta: float = 0.1
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """dpo_loss of a collate_preferences batch (moved to the models' device): (loss, chosen_rewards, rejected_rewards).

    Train the policy without dropout (drop_rate=0): with dropout, its log-probabilities differ from the
    reference's before any step, and the rewards measure noise as well as learning.
    """
    policy_chosen, policy_rejected = _response_logps(policy, batch)
    with torch.no_grad():
        reference_chosen, reference_rejected = _response_logps(reference, batch)
    return dpo_loss(policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta)


def dpo_loss_fn(reference: nn.Module, beta: float = 0.1) -> Callable[[nn.Module, dict[str, torch.Tensor]], torch.Tensor]:
    """A `loss_fn(model, batch) -> scalar loss` for the course's training loop: the DPO loss against `reference`."""
    _check_beta(beta)  # now, not in the middle of training

    def loss_fn(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return dpo_batch_loss(model, reference, batch, beta)[0]

    return loss_fn


def evaluate_preferences(
    policy: nn.Module, reference: nn.Module, loader: DataLoader, beta: float = 0.1
) -> dict[str, float]:
    """DPO measurements over a whole preference loader, with dropout off and without gradients.

    loss: the mean DPO loss per pair; reward_margin and reward_accuracy (preference_metrics); chosen_wins: the
    share of pairs where the policy gives the chosen response a higher log-probability than the rejected one,
    which says how often it prefers the right answer, whatever the reference did.
    """
    was_training = policy.training
    policy.eval()
    losses, chosen_rewards, rejected_rewards, wins = [], [], [], []
    try:
        with torch.no_grad():
            for batch in loader:
                policy_chosen, policy_rejected = _response_logps(policy, batch)
                reference_chosen, reference_rejected = _response_logps(reference, batch)
                loss, chosen, rejected = dpo_loss(policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta)
                losses.append(loss * len(chosen))  # a sum, so that a smaller last batch weighs less
                chosen_rewards.append(chosen)
                rejected_rewards.append(rejected)
                wins.append(policy_chosen > policy_rejected)
    finally:
        policy.train(was_training)
    if not losses:
        raise ValueError("the preference loader has no batches: give it at least one pair")
    chosen, rejected = torch.cat(chosen_rewards), torch.cat(rejected_rewards)
    return {
        "loss": (torch.stack(losses).sum() / len(chosen)).item(),
        **preference_metrics(chosen, rejected),
        "chosen_wins": torch.cat(wins).float().mean().item(),
    }
