"""Solutions to the chapter 4 exercises."""

import math

import torch
import torch.nn.functional as F


def greedy_next_token(logits: torch.Tensor) -> torch.Tensor:
    """(batch, seq, vocab) logits -> (batch, 1) int64 ids of the most likely next tokens."""
    return logits[:, -1, :].argmax(dim=-1, keepdim=True)


def top_k_probs(logits: torch.Tensor, k: int) -> torch.Tensor:
    """(batch, vocab) logits -> (batch, vocab) probabilities over each row's k most likely tokens."""
    k = min(k, logits.shape[-1])
    kth_largest = torch.topk(logits, k, dim=-1).values[:, -1:]  # (batch, 1): each row's own threshold
    return torch.softmax(logits.masked_fill(logits < kth_largest, float("-inf")), dim=-1)


def temperature_probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """(batch, vocab) logits -> (batch, vocab) probabilities at this temperature (0 = greedy)."""
    if temperature == 0:
        return torch.zeros_like(logits).scatter_(-1, logits.argmax(dim=-1, keepdim=True), 1.0)
    return torch.softmax(logits / temperature, dim=-1)  # softmax subtracts the maximum: no overflow


def perplexity_from_logits(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """(batch, seq, vocab) logits, (batch, seq) target ids -> exp(mean cross-entropy)."""
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())  # the mean over batch * seq predictions
    return math.exp(loss.item())
