"""Solutions to the chapter 7 exercises."""

import re
import string

import torch
import torch.nn.functional as F


def mask_padding_targets(targets: torch.Tensor, pad_id: int) -> torch.Tensor:
    """(batch, seq) target ids -> the same with every pad_id after the first of its row set to -100."""
    is_pad = targets == pad_id
    # cumsum counts the padding tokens so far in each row: the first one counts 1.
    return targets.masked_fill(is_pad & (is_pad.cumsum(dim=1) > 1), -100)


def sequence_logprob(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(batch, seq, vocab) logits, (batch, seq) targets with -100 = ignore -> (batch,) summed log-probabilities."""
    kept = targets != -100
    safe_targets = torch.where(kept, targets, 0)  # any valid index; those positions are zeroed below
    log_probs = torch.log_softmax(logits, dim=-1).gather(-1, safe_targets.unsqueeze(-1)).squeeze(-1)
    return (log_probs * kept).sum(dim=1)


def preference_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """Four (batch,) tensors of summed log-probabilities -> the mean DPO loss, a 0-dimensional tensor."""
    margin = (policy_chosen - reference_chosen) - (policy_rejected - reference_rejected)
    return -F.logsigmoid(beta * margin).mean()  # logsigmoid stays finite where log(sigmoid()) gives -inf


def clean_answer(text: str) -> str:
    """Lower-case, no punctuation, no articles, single spaces."""
    text = text.lower().translate(str.maketrans("", "", string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())
