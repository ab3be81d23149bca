"""Chapter 7 exercises: masking padded targets, a response's log-probability, the DPO loss, exact match.

The references are written with torch and `re` here (DPO as in Rafailov et al. 2023; the answer
normalisation of the SQuAD evaluation script), so the checks stand alone.
"""

from __future__ import annotations

import re
import string

import torch
import torch.nn.functional as F

from .. import Exercise, ExerciseCase
from .inputs import randint, randn

IGNORE_INDEX = -100  # cross_entropy's default ignore_index
EOT = 50256  # GPT-2's <|endoftext|>, the course's padding token


def mask_padding_targets_reference(targets: torch.Tensor, pad_id: int) -> torch.Tensor:
    is_pad = targets == pad_id
    later_pad = is_pad & (is_pad.cumsum(dim=1) > 1)
    return targets.masked_fill(later_pad, IGNORE_INDEX)


def mask_padding_targets_cases() -> list[ExerciseCase]:
    return [
        ExerciseCase("one answer followed by 3 padding tokens", (torch.tensor([[11, 12, 13, EOT, EOT, EOT]]), EOT)),
        ExerciseCase("no padding: unchanged", (torch.tensor([[5, 6, 7, 8]]), EOT)),
        ExerciseCase("a batch padded to its longest answer",
                     (torch.tensor([[1, 2, 3, 4, EOT], [1, 2, EOT, EOT, EOT], [9, EOT, EOT, EOT, EOT]]), EOT)),
        ExerciseCase("a single padding token stays", (torch.tensor([[3, 1, 4, 1, EOT]]), EOT)),
        ExerciseCase("another padding id", (torch.tensor([[7, 0, 0], [7, 7, 0]]), 0)),
    ]


def sequence_logprob_reference(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    kept = targets != IGNORE_INDEX
    log_probs = torch.log_softmax(logits, dim=-1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (log_probs * kept).sum(dim=1)


def sequence_logprob_cases() -> list[ExerciseCase]:
    prompt_masked = randint(3, 6, 1, 5)
    prompt_masked[0, :2] = IGNORE_INDEX
    mixed = randint(5, 8, 2, 4)
    mixed[0, :1] = IGNORE_INDEX
    mixed[1, 2:] = IGNORE_INDEX
    all_ignored = randint(7, 5, 2, 3)
    all_ignored[1] = IGNORE_INDEX
    return [
        ExerciseCase("every target counts", (randn(1, 1, 3, 5), randint(2, 5, 1, 3))),
        ExerciseCase("the prompt's targets are -100", (randn(3, 1, 5, 6), prompt_masked)),
        ExerciseCase("a batch with different masks", (randn(5, 2, 4, 8), mixed)),
        ExerciseCase("a sequence with every target ignored", (randn(7, 2, 3, 5), all_ignored)),
    ]


def preference_loss_reference(
    policy_chosen: torch.Tensor, policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor, reference_rejected: torch.Tensor, beta: float,
) -> torch.Tensor:
    margin = (policy_chosen - reference_chosen) - (policy_rejected - reference_rejected)
    return -F.logsigmoid(beta * margin).mean()


def preference_loss_cases() -> list[ExerciseCase]:
    def logps(seed: int, batch: int) -> tuple[torch.Tensor, ...]:
        return tuple(-(randn(seed + i, batch).abs() * 20) for i in range(4))

    same = -torch.tensor([12.0, 30.0])
    return [
        ExerciseCase("one pair", (torch.tensor([-10.0]), torch.tensor([-14.0]), torch.tensor([-11.0]),
                                  torch.tensor([-12.0]), 0.1)),
        ExerciseCase("the policy equals the reference: log 2", (same, same - 5, same, same - 5, 0.5)),
        ExerciseCase("a batch of 4 pairs", (*logps(1, 4), 0.1)),
        ExerciseCase("huge margins, where sigmoid() rounds to 0 or 1",
                     (torch.tensor([-10.0, -500.0]), torch.tensor([-500.0, -10.0]), torch.tensor([-20.0, -20.0]),
                      torch.tensor([-20.0, -20.0]), 1.0)),
    ]


def clean_answer_reference(text: str) -> str:
    text = text.lower()
    text = "".join(char for char in text if char not in string.punctuation)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def clean_answer_cases() -> list[ExerciseCase]:
    return [
        ExerciseCase("one word", ("Paris",)),
        ExerciseCase("an article and a full stop", ("The Eiffel Tower.",)),
        ExerciseCase("extra spaces and two articles", ("  an   apple, a pear ",)),
        ExerciseCase("a word that starts like an article", ("Theatre and anthem",)),
        ExerciseCase("punctuation inside a word", ("U.S.A.",)),
        ExerciseCase("tabs and new lines", ("first\nsecond\tthird",)),
        ExerciseCase("nothing left", ("The!",)),
        ExerciseCase("an empty answer", ("",)),
    ]


EXERCISES = (
    Exercise(
        id="7.1",
        title="Mask the padding in the targets",
        function="mask_padding_targets",
        task=(
            "A batch of instruction examples is padded with the end-of-text token to its longest example. "
            "The model should learn to *end* its answer, so the first padding token of each row stays a target, "
            "but the later ones must not count in the loss. Write `mask_padding_targets(targets, pad_id)`: "
            "return a copy of `targets` (batch, seq) in which every `pad_id` after the first one of its row is "
            "replaced by -100 (`cross_entropy`'s `ignore_index`)."
        ),
        stub='''import torch


def mask_padding_targets(targets: torch.Tensor, pad_id: int) -> torch.Tensor:
    """(batch, seq) target ids -> the same with every pad_id after the first of its row set to -100."""
    # YOUR CODE HERE
    raise NotImplementedError()
''',
        reference=mask_padding_targets_reference,
        cases=mask_padding_targets_cases,
    ),
    Exercise(
        id="7.2",
        title="The log-probability of a response",
        function="sequence_logprob",
        task=(
            "DPO compares how likely two responses are. Write `sequence_logprob(logits, targets)`: for each "
            "sequence, the sum over its positions of the log-probability that `logits` (batch, seq, vocab) give "
            "to the target token `targets` (batch, seq), leaving out the positions whose target is -100 (the "
            "prompt and the padding). Return a float tensor of shape (batch,).\n\n"
            "Careful: -100 is no valid index for `gather`."
        ),
        stub='''import torch


def sequence_logprob(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(batch, seq, vocab) logits, (batch, seq) targets with -100 = ignore -> (batch,) summed log-probabilities."""
    # YOUR CODE HERE
    raise NotImplementedError()
''',
        reference=sequence_logprob_reference,
        cases=sequence_logprob_cases,
    ),
    Exercise(
        id="7.3",
        title="The DPO loss",
        function="preference_loss",
        task=(
            "Write `preference_loss(policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta)`, "
            "the loss of direct preference optimisation. Each argument is a (batch,) tensor of summed "
            "log-probabilities of the chosen or rejected response under the policy being trained or the frozen "
            "reference model. The loss of a pair is `-log(sigmoid(beta * margin))`, where `margin` is how much "
            "more the policy than the reference prefers the chosen response: `(policy_chosen - reference_chosen) "
            "- (policy_rejected - reference_rejected)`. Return the mean over the batch as a 0-dimensional tensor.\n\n"
            "Mind huge margins: `sigmoid()` rounds to 0, and `log(0)` is `-inf`."
        ),
        stub='''import torch
import torch.nn.functional as F


def preference_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """Four (batch,) tensors of summed log-probabilities -> the mean DPO loss, a 0-dimensional tensor."""
    # YOUR CODE HERE
    raise NotImplementedError()
''',
        reference=preference_loss_reference,
        cases=preference_loss_cases,
    ),
    Exercise(
        id="7.4",
        title="Normalise an answer for exact match",
        function="clean_answer",
        task=(
            "Exact-match scoring compares a model's answer with the expected one after normalising both, as "
            "the SQuAD benchmark does. Write `clean_answer(text)`, which, in this order: lower-cases the "
            "text; removes every character in `string.punctuation`; removes the words \"a\", \"an\" and \"the\" "
            "(whole words only); and joins the remaining words with single spaces (no space at either end)."
        ),
        stub='''import re
import string


def clean_answer(text: str) -> str:
    """Lower-case, no punctuation, no articles, single spaces."""
    # YOUR CODE HERE
    raise NotImplementedError()
''',
        reference=clean_answer_reference,
        cases=clean_answer_cases,
    ),
)
