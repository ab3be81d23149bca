"""Chapter 1: helpers every chapter uses: picking a device and seeding random number generators."""

from __future__ import annotations

import random

import torch

__all__ = ["get_device", "set_seed"]

CHAPTER = 1


def get_device(preferred: str | None = None) -> torch.device:
    """Return `preferred` if given, else the best available device: cuda, then mps, then cpu."""
    if preferred is not None:
        try:
            device = torch.device(preferred)
        except RuntimeError as err:
            raise ValueError(f"unknown device {preferred!r}: use 'cpu', 'cuda', 'cuda:0' or 'mps'") from err
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("device 'cuda' was requested but no CUDA GPU is available: use 'cpu'")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise ValueError("device 'mps' was requested but Apple's MPS backend is not available: use 'cpu'")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def set_seed(seed: int) -> None:
    """Seed Python's and torch's random number generators (CPU and all GPUs)."""
    random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
