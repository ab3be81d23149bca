"""Chapter 4: saving and loading trained models (checkpoints), safely.

A checkpoint holds the model's configuration and weights, the optimizer's state, the random number
generators' states and, from `llm-course train`, the run's settings and progress, so that training can
continue exactly where it stopped. Saving is atomic: the file is written under a temporary name in the same folder and
renamed over the old one only once complete, so a crash mid-write leaves the previous checkpoint intact.
Loading uses `torch.load(..., weights_only=True)`, which refuses any pickled object that could run code.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import pickle
import random
import re
import shutil
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from .model import GPTConfig, GPTModel

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "MODELS_DIR",
    "capture_rng_state",
    "check_checkpoint_location",
    "load_checkpoint",
    "restore_rng_state",
    "save_checkpoint",
]

CHAPTER = 4

MODELS_DIR = Path("models")  # relative: the models/ folder of the repository you run from
# Bump when the layout below changes, and teach load_checkpoint the old one. Format 2 (llm-course 0.2):
# one W_qkv per attention layer where format 1 had separate W_query, W_key and W_value. Format 3
# (llm-course 0.3): the same weights; a training run stores its TrainingConfig (no scheduler state: the
# learning rate follows from the step).
CHECKPOINT_FORMAT = 3
RESERVED_KEYS = ("format_version", "model_config", "model_state", "optimizer_state", "rng_state")
PLAIN_TYPES = (str, int, float, bool, type(None), torch.Tensor)


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: missing, truncated, corrupt, unsafe or incompatible."""


def capture_rng_state() -> dict[str, Any]:
    """The states of Python's and torch's random number generators (CPU, and every GPU when present)."""
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put the random number generators back into a state from `capture_rng_state`."""
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _check_plain(value: Any, where: str) -> None:
    """Refuse values that `torch.load(weights_only=True)` would refuse to read back."""
    if isinstance(value, (dict, OrderedDict)):
        for key, item in value.items():
            _check_plain(key, f"a key of {where}")
            _check_plain(item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
    elif not isinstance(value, PLAIN_TYPES):
        raise TypeError(
            f"{where} is a {type(value).__name__}; a checkpoint stores only tensors, numbers, strings, lists "
            "and dicts (use dataclasses.asdict for a dataclass), so that loading it can never run code"
        )


def save_checkpoint(
    path: str | os.PathLike, model: GPTModel, optimizer: torch.optim.Optimizer | None = None, **extra
) -> Path:
    """Atomically write `model` (config and weights), the optimizer's state, the RNG states and `extra`
    (plain data such as `history=dataclasses.asdict(history)`) to `path`; return the path.

    The folder is created if needed; an existing file is replaced only once the new one is complete.
    """
    if not isinstance(model, GPTModel):
        raise TypeError(f"save_checkpoint saves a GPTModel, got {type(model).__name__}")
    for key in extra:
        if key in RESERVED_KEYS:
            raise ValueError(f"{key!r} is a name the checkpoint uses itself; give your extra value another name")
    _check_plain(extra, "extra")
    payload = {
        "format_version": CHECKPOINT_FORMAT,
        "model_config": dataclasses.asdict(model.cfg),
        "model_state": model.state_dict(),
        "optimizer_state": None if optimizer is None else optimizer.state_dict(),
        "rng_state": capture_rng_state(),
        **extra,
    }
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_partials(path)
    # The temporary file's name holds this process's id, so that a later save can tell an abandoned one.
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(payload, file)
            file.flush()
            os.fsync(file.fileno())  # the bytes are on disk before the rename makes them the checkpoint
        os.chmod(temporary, 0o644)  # mkstemp creates files only their owner may read
        os.replace(temporary, path)  # atomic: readers see the old file or the new one, never half of one
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    if os.name == "posix":  # make the rename itself durable
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    return path


def check_checkpoint_location(path: str | os.PathLike, expected_bytes: int = 0) -> Path:
    """Fail now, saying what to do, if a checkpoint of about `expected_bytes` cannot be written at `path`.

    A long training run calls this before its first step, so that it never ends in a file it cannot write:
    a folder where the file should go, a folder it may not write to, or a disk without room.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder: give the checkpoint a file name, such as {path / 'model.pt'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path.parent):  # the one sure test: write a file there
            pass
    except OSError as err:
        raise OSError(f"cannot write a checkpoint into {path.parent} ({err.strerror or err}): choose a folder "
                      "you can write to") from err  # fmt: skip
    free = shutil.disk_usage(path.parent).free
    if expected_bytes > free:
        raise OSError(f"no space left for the checkpoint in {path.parent}: it needs about "
                      f"{expected_bytes / 1e6:,.0f} MB and {free / 1e6:,.0f} MB are free; free some space or "
                      "choose another folder")  # fmt: skip
    return path


def _remove_abandoned_partials(path: Path) -> None:
    """Delete the temporary files of saves to `path` whose process is gone (killed mid-save): each can be as
    large as the checkpoint. A save still running in another process keeps its file."""
    for partial in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = partial.name[len(path.name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and not _process_alive(int(pid)):
            partial.unlink(missing_ok=True)


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this process is not saving that file now
    try:
        os.kill(pid, 0)  # signal 0 only asks whether the process exists (on Windows too, for a process id)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists, or we cannot tell: keep its file
    return True


def _damaged(path: Path, err: Exception) -> CheckpointError:
    """The error for a file torch cannot read back. torch's own message (a zip reader's internals) would not
    tell a user what to do; its size says whether the file is empty, cut short or not a checkpoint at all."""
    size = path.stat().st_size
    state = "empty" if size == 0 else f"{size:,} bytes, truncated or corrupt"
    return CheckpointError(f"{path} is not a readable checkpoint ({state}): save or train it again")


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(
            f"no checkpoint at {path}: train one first (`llm-course train` writes {MODELS_DIR / 'gpt-course.pt'}) "
            f"or check the path (relative paths start at {Path.cwd()})"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # The safe unpickler names the function or class it refused; anything else it cannot parse is damage.
        refused = re.search(r"(GLOBAL \S+|unrecognized function \S+|allowlisted.*?but got \S+)", str(err))
        if refused is None:
            raise _damaged(path, err) from err
        raise CheckpointError(
            f"{path} holds objects other than tensors and plain data ({refused.group(1)}), which could run code "
            "when loaded, so it was refused: only load checkpoints from sources you trust"
        ) from err
    except Exception as err:  # torch reports a damaged file with many different exception types
        raise _damaged(path, err) from err
    if not isinstance(checkpoint, dict) or "format_version" not in checkpoint:
        raise CheckpointError(f"{path} is a PyTorch file but not an llm-course checkpoint (no format_version)")
    if checkpoint["format_version"] not in range(1, CHECKPOINT_FORMAT + 1):
        raise CheckpointError(
            f"{path} has checkpoint format {checkpoint['format_version']!r}, but this llm-course reads formats 1 "
            f"to {CHECKPOINT_FORMAT}: use the llm-course version that wrote it"
        )
    missing = [key for key in RESERVED_KEYS if key not in checkpoint]
    if missing:
        raise CheckpointError(f"{path} is an incomplete checkpoint: it lacks {', '.join(missing)}")
    if checkpoint["format_version"] == 1:
        _stack_qkv_projections(checkpoint["model_state"])
    return checkpoint


def _stack_qkv_projections(state: dict[str, torch.Tensor]) -> None:
    """Turn format 1's separate W_query, W_key and W_value weights (and biases) into format 2's W_qkv."""
    for key in [key for key in state if ".att.W_query." in key]:
        prefix, suffix = key.split("W_query.")
        keys = [f"{prefix}{name}.{suffix}" for name in ("W_query", "W_key", "W_value")]
        if all(part in state for part in keys):  # else load_state_dict reports what is missing
            # The queries' rows, then the keys', then the values'.
            state[f"{prefix}W_qkv.{suffix}"] = torch.cat([state.pop(part) for part in keys])


def _stored_config(path: Path, checkpoint: dict[str, Any]) -> GPTConfig:
    """The checkpoint's GPTConfig, checked against its weights' shapes on the meta device (shapes without data),
    so that a config that does not fit, however large it claims to be, fails before any memory is allocated."""
    stored = checkpoint["model_config"]
    unknown = sorted(set(stored) - {field.name for field in dataclasses.fields(GPTConfig)})
    if unknown:
        raise CheckpointError(
            f"{path} was written by another version of llm-course: its model config has settings this version "
            f"does not know ({', '.join(unknown)}); use the llm-course version that wrote it"
        )
    try:
        config = GPTConfig(**stored)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path} has a model config this llm-course cannot build: {err}") from err
    with torch.device("meta"):
        expected = {key: tuple(value.shape) for key, value in GPTModel(config).state_dict().items()}
    weights = checkpoint["model_state"]
    found = {key: tuple(value.shape) for key, value in weights.items() if isinstance(value, torch.Tensor)}
    missing, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    wrong = [f"{key} {found[key]} instead of {expected[key]}" for key in expected if key in found and found[key] != expected[key]]
    if missing or extra or wrong:
        problems = [f"{len(missing)} missing (e.g. {missing[0]})" if missing else "",
                    f"{len(extra)} unexpected (e.g. {extra[0]})" if extra else "",
                    f"{len(wrong)} of another shape (e.g. {wrong[0]})" if wrong else ""]  # fmt: skip
        raise CheckpointError(
            f"{path}: the weights do not fit the stored model config ({'; '.join(p for p in problems if p)}): the "
            "file is damaged or was not written by save_checkpoint"
        )
    return config


def load_checkpoint(
    path: str | os.PathLike,
    device: torch.device | str | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    model: GPTModel | None = None,
) -> tuple[GPTModel, dict[str, Any]]:
    """Read a checkpoint written by `save_checkpoint`; return (model, checkpoint dict).

    The model is rebuilt from the stored config (or, when `model` is given, the weights are loaded into
    it: its config must match), moved to `device` (default: CPU) and put in eval mode. To resume training,
    pass the model and an `optimizer` over its parameters: its state is restored too; call
    `restore_rng_state(checkpoint["rng_state"])` for the random number generators. Raises CheckpointError,
    saying what is wrong, for a missing, truncated, corrupt, unsafe or incompatible file.
    """
    path = Path(path).expanduser()
    if optimizer is not None and model is None:
        raise ValueError(
            "to restore an optimizer, pass the model it optimizes as well: "
            "load_checkpoint(path, model=model, optimizer=optimizer)"
        )
    checkpoint = _read(path)
    config = _stored_config(path, checkpoint)
    if model is None:
        model = GPTModel(config)
    elif model.cfg != config:
        raise CheckpointError(
            f"{path} was saved from a model with {config}, which differs from the given model's {model.cfg}"
        )
    model.load_state_dict(checkpoint["model_state"])
    model.to("cpu" if device is None else device)
    model.eval()
    if optimizer is not None:
        if checkpoint["optimizer_state"] is None:
            raise CheckpointError(f"{path} was saved without an optimizer state: it cannot resume training")
        if checkpoint["format_version"] == 1:
            raise CheckpointError(
                f"{path} was written by llm-course 0.1 (checkpoint format 1), whose attention layers had separate "
                "query, key and value projections: its weights load, but its optimizer state cannot resume "
                "training here. Start a new run, or resume with llm-course 0.1"
            )
        try:
            optimizer.load_state_dict(checkpoint["optimizer_state"])
        except (ValueError, KeyError, RuntimeError) as err:
            raise CheckpointError(f"{path}: the optimizer state does not fit the given optimizer: {err}") from err
    return model, checkpoint
