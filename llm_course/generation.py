"""Chapter 4: generating text with a GPT model: greedy decoding, temperature, top-k and top-p (nucleus) sampling.

The model gives logits for the next token; a decoding strategy turns them into one chosen token, which is
appended to the sequence and fed back in, one token at a time.
"""

from __future__ import annotations

import math
from contextlib import contextmanager, nullcontext
from typing import Iterator

import torch
from torch import nn

from .kv_cache import KVCache
from .model import GPTModel
from .tokenizers import encode_text

__all__ = [
    "prompt_logits",
    "decoding_layout",
    "generate",
    "next_token_probs",
    "sample_next_token",
    "text_to_token_ids",
    "token_ids_to_text",
    "next_token_table",
]

CHAPTER = 4


def _check_sampling_args(temperature: float, top_k: int | None, top_p: float | None) -> None:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 <= temperature < math.inf:
        raise ValueError(f"temperature must be a finite number >= 0 (0 means greedy), got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be None or an integer >= 1, got {top_k!r}")
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1):
        raise ValueError(f"top_p must be None or a number in (0, 1], got {top_p!r}")


def next_token_probs(
    logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None
) -> torch.Tensor:
    """The distribution a decoding strategy samples from: (batch, vocab) logits -> (batch, vocab) probabilities.

    Temperature 0 puts all the probability on the most likely token (greedy). Otherwise the logits are divided
    by the temperature (below 1 sharpens the distribution, above 1 flattens it), then `top_k` keeps the k most
    likely tokens and `top_p` keeps the smallest set of most likely tokens whose probabilities add up to at
    least top_p (the most likely token is always kept). The kept probabilities are renormalized to sum to 1.
    """
    _check_sampling_args(temperature, top_k, top_p)
    if temperature == 0:
        return torch.zeros_like(logits).scatter_(-1, logits.argmax(dim=-1, keepdim=True), 1.0)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth_largest = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth_largest, float("-inf"))
    if top_p is not None and top_p < 1:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        sorted_probs = torch.softmax(sorted_logits, dim=-1)
        # A token is dropped when the tokens ranked above it already reach top_p.
        drop = sorted_probs.cumsum(dim=-1) - sorted_probs >= top_p
        drop[..., 0] = False
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return torch.softmax(logits, dim=-1)


def sample_next_token(
    logits: torch.Tensor,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Choose one token per row: (batch, vocab) logits -> (batch, 1) token ids (see `next_token_probs`)."""
    if temperature == 0:
        _check_sampling_args(temperature, top_k, top_p)
        return logits.argmax(dim=-1, keepdim=True)  # greedy: top-k and top-p always keep the argmax
    probs = next_token_probs(logits, temperature, top_k, top_p)
    if generator is not None and generator.device != probs.device:
        # Draw on the generator's device, so a CPU generator also works for a model on a GPU.
        return torch.multinomial(probs.to(generator.device), 1, generator=generator).to(probs.device)
    return torch.multinomial(probs, 1, generator=generator)


@contextmanager
def decoding_layout(model: nn.Module) -> Iterator[None]:
    """While active, a GPTModel on the CPU stores its widening weight matrices (each block's att.W_qkv and
    ff.layers[0]) column by column in memory: same shapes and values, other strides.

    A cached generation step multiplies one token vector by every weight matrix, so its time goes into
    reading the weights from memory, and on the benchmarks' x86 CPU the matrix library (MKL) reads a wide
    matrix 1.4-1.8x faster in this order (benchmarks/generation.py --row-major compares). Training wants
    the usual order (PyTorch's fused AdamW copies every non-contiguous gradient), so the original tensors
    come back afterwards, untouched. The copies cost a fraction of a second for GPT-2 small and, while
    they exist, the memory of those matrices once more (about 200 MB for GPT-2 small).
    """
    blocks = model.blocks if isinstance(model, GPTModel) and model.out_head.weight.device.type == "cpu" else []
    weights = [layer.weight for block in blocks for layer in (block.att.W_qkv, block.ff.layers[0])]
    originals = [weight.data for weight in weights]
    try:
        for weight in weights:
            weight.data = weight.data.t().contiguous().t()
        yield
    finally:
        for weight, original in zip(weights, originals):
            weight.data = original


def generate(
    model: nn.Module,
    idx: torch.Tensor,
    max_new_tokens: int,
    context_size: int | None = None,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
) -> torch.Tensor:
    """Extend each sequence of `idx` by up to `max_new_tokens` tokens: (batch, seq) -> (batch, seq + new).

    The model reads at most the last `context_size` tokens (default: its context_length). Temperature 0 is
    greedy decoding; otherwise tokens are sampled (see `next_token_probs`), reproducibly when a seeded
    `generator` is given. With `eos_id`, a sequence that emits it is finished: it is padded with eos_id
    while the others go on, and generation stops as soon as every sequence has finished (so a single
    sequence ends right after its eos_id). The model runs in eval mode (no dropout), without gradients,
    and is put back in its previous mode afterwards.

    With `use_cache` (and a GPTModel), a key/value cache per block means the window of tokens is read once and
    then each step feeds only the newest token. Once the window is full and slides, every token moves to a
    new position, so the cache is refilled from the window at each step: the result is always exactly that
    of `use_cache=False`, which re-reads the whole window at every step. Cached generation also runs under
    `decoding_layout`, which lays out the weights for one-token steps.
    """
    if not isinstance(idx, torch.Tensor) or idx.dim() != 2 or idx.dtype != torch.long or 0 in idx.shape:
        shape = tuple(idx.shape) if isinstance(idx, torch.Tensor) else type(idx).__name__
        raise ValueError(
            f"idx must be a non-empty (batch, seq) LongTensor of token ids, got {shape}"
            + (f" with dtype {idx.dtype}" if isinstance(idx, torch.Tensor) else "")
            + ": use text_to_token_ids(text, tokenizer), which adds the batch dimension"
        )
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
    _check_sampling_args(temperature, top_k, top_p)
    model_context = getattr(getattr(model, "cfg", None), "context_length", None)
    if context_size is None:
        if model_context is None:
            raise ValueError("pass context_size: the model has no cfg.context_length to take it from")
        context_size = model_context
    if isinstance(context_size, bool) or not isinstance(context_size, int) or context_size < 1:
        raise ValueError(f"context_size must be an integer >= 1, got {context_size!r}")
    if model_context is not None and context_size > model_context:
        raise ValueError(f"context_size {context_size} exceeds the model's context_length {model_context}")
    if eos_id is not None and (isinstance(eos_id, bool) or not isinstance(eos_id, int)):
        raise ValueError(f"eos_id must be None or a token id (int), got {eos_id!r}")

    parameter = next(model.parameters(), None)
    if parameter is not None:
        idx = idx.to(parameter.device)
    was_training = model.training
    model.eval()
    finished = torch.zeros(idx.shape[0], dtype=torch.bool, device=idx.device)
    try:
        with torch.no_grad(), decoding_layout(model) if use_cache else nullcontext():
            cache = None
            for _ in range(max_new_tokens):
                if not use_cache or not isinstance(model, GPTModel):
                    logits = model(idx[:, -context_size:])
                elif cache is None or cache[0].length == context_size:
                    # (Re)fill the caches from the window: at the start, and at each step once the window slides.
                    cache = [KVCache(context_size) for _ in model.blocks]
                    logits = model(idx[:, -context_size:], kv_cache=cache)
                else:
                    logits = model(idx[:, -1:], kv_cache=cache)  # only the newest token: (batch, 1, vocab)
                logits = logits[:, -1, :]  # (batch, vocab): the last position only
                next_id = sample_next_token(logits, temperature, top_k, top_p, generator)  # (batch, 1)
                if eos_id is not None:
                    next_id = next_id.masked_fill(finished.unsqueeze(1), eos_id)
                    finished |= next_id.squeeze(1) == eos_id
                idx = torch.cat([idx, next_id], dim=1)
                if finished.all():
                    break
    finally:
        model.train(was_training)
    return idx


def text_to_token_ids(text: str, tokenizer) -> torch.Tensor:
    """Encode `text` into a (1, n) LongTensor: a batch of one sequence, ready for the model."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return torch.tensor(encode_text(tokenizer, text), dtype=torch.long).unsqueeze(0)


def token_ids_to_text(token_ids, tokenizer) -> str:
    """Decode one sequence of token ids, a (1, n) or (n,) tensor or a list of ints, back into text."""
    if isinstance(token_ids, torch.Tensor):
        if token_ids.dim() == 2 and token_ids.shape[0] == 1:
            token_ids = token_ids.squeeze(0)
        if token_ids.dim() != 1:
            raise ValueError(
                f"expected one sequence of shape (n,) or (1, n), got {tuple(token_ids.shape)}: decode each row separately"
            )
        token_ids = token_ids.tolist()
    return tokenizer.decode(list(token_ids))


def prompt_logits(model: nn.Module, tokenizer, prompt: str) -> torch.Tensor:
    """The model's (1, vocab) logits for the token after `prompt` (its last context_length tokens), in eval mode."""
    ids = text_to_token_ids(prompt, tokenizer)
    if ids.shape[1] == 0:
        raise ValueError("the prompt is empty: give at least one token of text")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = model(ids[:, -model.cfg.context_length :].to(device))
    finally:
        model.train(was_training)
    return logits[:, -1, :].float().cpu()  # (1, vocab)


def next_token_table(model: nn.Module, tokenizer, prompt: str, k: int = 10) -> list[tuple[str, float]]:
    """The model's k most likely next tokens after `prompt`, as (token text, probability) pairs, most likely first."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    probs = torch.softmax(prompt_logits(model, tokenizer, prompt)[0], dim=-1)  # (vocab,)
    top = torch.topk(probs, min(k, probs.numel()))
    return [(tokenizer.decode([i]), p) for i, p in zip(top.indices.tolist(), top.values.tolist())]
