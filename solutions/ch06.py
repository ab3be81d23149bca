"""Solutions to the chapter 6 exercises."""

import torch


def last_token_states(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(batch, seq, emb) outputs and (batch, seq) mask (1 = token, 0 = padding) -> (batch, emb)."""
    batch, seq, _ = hidden.shape
    positions = torch.arange(seq).expand(batch, seq)
    # The largest position holding a real token; padding positions count as -1.
    last = torch.where(attention_mask.bool(), positions, -1).amax(dim=1)
    return hidden[torch.arange(batch), last]


def lora_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, lora_A: torch.Tensor, lora_B: torch.Tensor, alpha: float
) -> torch.Tensor:
    """(..., d_in) -> (..., d_out): the frozen layer plus the update (alpha / rank) B A."""
    rank = lora_A.shape[0]
    # Two thin products (d_in -> rank -> d_out) rather than the full (d_out, d_in) matrix B A.
    return x @ weight.T + bias + (alpha / rank) * (x @ lora_A.T @ lora_B.T)


def batch_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """(n, classes) logits, (n,) labels -> the fraction of examples classified correctly."""
    return (logits.argmax(dim=-1) == labels).float().mean().item()
