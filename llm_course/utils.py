"""Chapter 1: helpers every chapter uses: picking a device, seeding random number generators, and checking
arguments where they enter the package (configs, public functions, the command line).
"""

from __future__ import annotations

import math
import random

import torch

__all__ = ["check_int", "check_number", "get_device", "set_seed"]

CHAPTER = 1

DEVICE_TYPES = ("cpu", "cuda", "mps")


def check_int(name: str, value, minimum: int = 1, allow_none: bool = False) -> None:
    """Raise a ValueError naming `name` unless `value` is an integer >= minimum (or None, if allowed)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        expected = f"an integer >= {minimum}" + (" or None" if allow_none else "")
        raise ValueError(f"{name} must be {expected}, got {value!r}")


def check_number(
    name: str,
    value,
    low: float = -math.inf,
    high: float = math.inf,
    *,
    low_open: bool = False,
    high_open: bool = False,
    allow_none: bool = False,
) -> None:
    """Raise a ValueError naming `name` unless `value` is a finite number in the interval from low to high
    (open or closed at each end), or None if allowed."""
    if value is None and allow_none:
        return
    interval = f"{'(' if low_open or low == -math.inf else '['}{low:g}, {high:g}{')' if high_open or high == math.inf else ']'}"
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not is_number or (value <= low if low_open else value < low) or (value >= high if high_open else value > high):
        expected = f"a number in {interval}" + (" or None" if allow_none else "")
        raise ValueError(f"{name} must be {expected}, got {value!r}")


def get_device(preferred: str | torch.device | None = None) -> torch.device:
    """Return `preferred` if given, else the best available device: cuda, then mps, then cpu."""
    if preferred is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(preferred)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in DEVICE_TYPES:
        raise ValueError(f"unknown device {str(preferred)!r}: use 'cpu', 'cuda', 'cuda:N' or 'mps'")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(preferred)!r} was requested but no CUDA GPU is available: use 'cpu'")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device {str(preferred)!r} does not exist: this machine has {torch.cuda.device_count()} GPU(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {str(preferred)!r} was requested but Apple's MPS backend is not available: use 'cpu'")
    return device


def set_seed(seed: int) -> None:
    """Seed Python's and torch's random number generators (CPU and all GPUs)."""
    random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
