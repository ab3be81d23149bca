"""Chapter 4: generating text with a GPT model: greedy decoding, temperature, top-k and top-p (nucleus) sampling.

The model gives logits for the next token; a decoding strategy turns them into one chosen token, which is
appended to the sequence and fed back in, one token at a time.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch import nn

from .kv_cache import KVCache
from .model import GPTModel
from .tokenizers import encode_text
from .utils import check_int, check_number

__all__ = [
    "prompt_logits",
    "generate",
    "generate_stream",
    "next_token_probs",
    "sample_next_token",
    "text_to_token_ids",
    "token_ids_to_text",
    "next_token_table",
]

CHAPTER = 4


def _check_sampling_args(temperature: float, top_k: int | None, top_p: float | None) -> None:
    check_number("temperature (0 means greedy)", temperature, 0)
    check_int("top_k", top_k, allow_none=True)
    check_number("top_p", top_p, 0, 1, low_open=True, allow_none=True)


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


def generate_stream(
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
) -> Iterator[torch.Tensor]:
    """Yield the next token of each sequence of `idx` (batch, seq), one (batch, 1) tensor per step, up to
    `max_new_tokens` times: `generate` collects them, a chat or a command line prints them as they come.

    The arguments are `generate`'s. The model runs in eval mode, without gradients, and is put back in its
    previous mode when the stream ends or is abandoned.
    """
    idx, context_size = _check_generate_args(model, idx, max_new_tokens, context_size, temperature, top_k, top_p, eos_id)
    finished = torch.zeros(idx.shape[0], dtype=torch.bool, device=idx.device)
    cached = use_cache and isinstance(model, GPTModel)
    cache = None
    was_training = model.training
    model.eval()
    try:
        for _ in range(max_new_tokens):
            with torch.inference_mode():
                if not cached:
                    logits = model(idx[:, -context_size:])  # re-read the whole window
                elif cache is None or cache[0].length == context_size:
                    # (Re)fill the caches from the window: at the start, and at each step once the window slides.
                    cache = [KVCache(context_size) for _ in model.blocks]
                    logits = model(idx[:, -context_size:], kv_cache=cache)
                else:
                    logits = model(idx[:, -1:], kv_cache=cache)  # only the newest token: (batch, 1, vocab)
                # (batch, vocab): the last position only, in fp32 even for a bf16 model (sampling needs it)
                next_id = sample_next_token(logits[:, -1, :].float(), temperature, top_k, top_p, generator)
                if eos_id is not None:
                    next_id = next_id.masked_fill(finished.unsqueeze(1), eos_id)  # finished rows repeat eos_id
                    finished |= next_id.squeeze(1) == eos_id
                idx = torch.cat([idx, next_id], dim=1)
            yield next_id.clone()  # a normal tensor: inference-mode tensors cannot join autograd later
            if finished.all():
                return
    finally:
        model.train(was_training)


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
    sequence ends right after its eos_id).

    With `use_cache` (and a GPTModel), a key/value cache per block (chapter 5) means the window of tokens is
    read once and then each step feeds only the newest token. Once the window is full and slides, every
    token moves to a new position, so the cache is refilled from the window at each step: the result is
    always exactly that of `use_cache=False`, which re-reads the whole window at every step.
    """
    new = list(generate_stream(model, idx, max_new_tokens, context_size, temperature, top_k, top_p, eos_id,
                               generator, use_cache))  # fmt: skip
    idx = idx.to(_device_of(model))
    return torch.cat([idx, *new], dim=1) if new else idx


def _device_of(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return torch.device("cpu") if parameter is None else parameter.device


def _check_generate_args(model, idx, max_new_tokens, context_size, temperature, top_k, top_p, eos_id):
    """`idx` on the model's device and the context size to use, after checking every argument."""
    if not isinstance(idx, torch.Tensor) or idx.dim() != 2 or idx.dtype != torch.long or 0 in idx.shape:
        shape = tuple(idx.shape) if isinstance(idx, torch.Tensor) else type(idx).__name__
        raise ValueError(
            f"idx must be a non-empty (batch, seq) LongTensor of token ids, got {shape}"
            + (f" with dtype {idx.dtype}" if isinstance(idx, torch.Tensor) else "")
            + ": use text_to_token_ids(text, tokenizer), which adds the batch dimension"
        )
    check_int("max_new_tokens", max_new_tokens, minimum=0)
    _check_sampling_args(temperature, top_k, top_p)
    model_context = getattr(getattr(model, "cfg", None), "context_length", None)
    if context_size is None:
        if model_context is None:
            raise ValueError("pass context_size: the model has no cfg.context_length to take it from")
        context_size = model_context
    check_int("context_size", context_size)
    if model_context is not None and context_size > model_context:
        raise ValueError(f"context_size {context_size} exceeds the model's context_length {model_context}")
    check_int("eos_id", eos_id, minimum=0, allow_none=True)
    return idx.to(_device_of(model)), context_size


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
    check_int("k", k)
    probs = torch.softmax(prompt_logits(model, tokenizer, prompt)[0], dim=-1)  # (vocab,)
    top = torch.topk(probs, min(k, probs.numel()))
    return [(tokenizer.decode([i]), p) for i, p in zip(top.indices.tolist(), top.values.tolist())]
