"""Chapter 4: the GPT model: layer normalization, GELU, the feed-forward network, the transformer block,
the whole model and a summary of its size.

The model maps (batch, seq) token ids to (batch, seq, vocab_size) logits: one score per vocabulary token
for the token that follows each position. It is built from the chapter 1 embedding and the chapter 3
multi-head causal attention.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .embeddings import GPTEmbedding
from .multihead_attention import MultiHeadCausalAttention
from .utils import check_int, check_number

if TYPE_CHECKING:
    from .kv_cache import KVCache

__all__ = ["GPTConfig", "LayerNorm", "GELU", "FeedForward", "TransformerBlock", "GPTModel", "ModelSummary", "model_summary"]

CHAPTER = 4


@dataclass
class GPTConfig:
    """The model's hyperparameters. The defaults are the course's model (27,326,464 parameters)."""

    vocab_size: int = 50257  # GPT-2's BPE vocabulary
    context_length: int = 64  # the longest sequence the model reads at once
    emb_dim: int = 256  # the width of every token vector
    n_heads: int = 4  # attention heads per block
    n_layers: int = 2  # transformer blocks
    drop_rate: float = 0.1  # dropout probability, used only in training mode
    qkv_bias: bool = False  # bias terms in the query, key and value projections
    tie_weights: bool = False  # reuse the token embedding as the output layer
    # None = language model head over the vocabulary; k = a k-class classifier head (chapter 6).
    num_classes: int | None = None

    def __post_init__(self):
        for name in ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers"):
            check_int(f"GPTConfig.{name}", getattr(self, name))
        if self.emb_dim % self.n_heads != 0:
            raise ValueError(
                f"GPTConfig.emb_dim ({self.emb_dim}) must be divisible by n_heads ({self.n_heads}): "
                "each head gets emb_dim // n_heads dimensions"
            )
        check_number("GPTConfig.drop_rate", self.drop_rate, 0, 1, high_open=True)
        check_int("GPTConfig.num_classes", self.num_classes, allow_none=True)
        if self.num_classes is not None and self.tie_weights:
            raise ValueError(
                f"GPTConfig.tie_weights=True cannot go with num_classes={self.num_classes}: a classifier head has "
                f"{self.num_classes} rows and the token embedding {self.vocab_size}, so they cannot share one "
                "tensor; use tie_weights=False"
            )

    @classmethod
    def gpt2_small(cls, **overrides) -> "GPTConfig":
        """OpenAI's smallest GPT-2 (124 M parameters with tied weights); keyword arguments override fields."""
        settings = dict(context_length=1024, emb_dim=768, n_heads=12, n_layers=12, qkv_bias=True)
        return cls(**{**settings, **overrides})


class LayerNorm(nn.Module):
    """Normalize each token vector to mean 0 and variance 1, then scale and shift it (learned, per dimension).

    (..., emb_dim) -> (..., emb_dim). The variance is the biased one (divide by emb_dim), as in GPT-2.
    """

    def __init__(self, emb_dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps  # keeps the division finite for a constant vector
        self.scale = nn.Parameter(torch.ones(emb_dim))
        self.shift = nn.Parameter(torch.zeros(emb_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # scale * (x - mean) / sqrt(var + eps) + shift, in one fused kernel that keeps only the mean and the
        # inverse standard deviation for the backward pass (the formula written out keeps five tensors).
        return F.layer_norm(x, self.scale.shape, self.scale, self.shift, self.eps)


class GELU(nn.Module):
    """The Gaussian error linear unit, in the tanh approximation GPT-2 was trained with (elementwise)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # 0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x**3))), in one fused kernel that keeps only x
        # for the backward pass.
        return F.gelu(x, approximate="tanh")


class FeedForward(nn.Module):
    """Two linear layers with a GELU between them, applied to each token on its own:
    (batch, seq, emb_dim) -> (batch, seq, 4 * emb_dim) -> (batch, seq, emb_dim)."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(cfg.emb_dim, 4 * cfg.emb_dim),
            GELU(),
            nn.Linear(4 * cfg.emb_dim, cfg.emb_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class TransformerBlock(nn.Module):
    """Attention, then a feed-forward network, each after a layer norm (pre-norm) and inside a residual
    connection: (batch, seq, emb_dim) -> (batch, seq, emb_dim)."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.norm1 = LayerNorm(cfg.emb_dim)
        self.att = MultiHeadCausalAttention(
            cfg.emb_dim, cfg.emb_dim, cfg.context_length, cfg.drop_rate, cfg.n_heads, cfg.qkv_bias
        )
        self.norm2 = LayerNorm(cfg.emb_dim)
        self.ff = FeedForward(cfg)
        self.drop_resid = nn.Dropout(cfg.drop_rate)

    def forward(self, x: torch.Tensor, kv_cache: KVCache | None = None) -> torch.Tensor:
        # Each sublayer adds its output to its input (x + f(x)): gradients flow straight through the sum,
        # which keeps deep stacks trainable.
        # With a cache (generation, chapter 5), x holds only the new tokens; attention also sees the earlier ones.
        x = x + self.drop_resid(self.att(self.norm1(x), kv_cache))
        x = x + self.drop_resid(self.ff(self.norm2(x)))
        return x


class GPTModel(nn.Module):
    """A GPT: embeddings, `n_layers` transformer blocks, a final layer norm and a linear output layer.

    forward: (batch, seq) token ids, seq <= context_length -> (batch, seq, vocab_size) logits.
    Set `model.gradient_checkpointing = True` to trade compute for memory in training (see forward).
    """

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        if not isinstance(cfg, GPTConfig):
            raise TypeError(f"GPTModel needs a GPTConfig, got {type(cfg).__name__}: use GPTModel(GPTConfig(...))")
        self.cfg = cfg
        self.gradient_checkpointing = False  # a way to run, not part of the architecture: not in cfg
        self.embedding = GPTEmbedding(cfg.vocab_size, cfg.emb_dim, cfg.context_length)
        self.drop_emb = nn.Dropout(cfg.drop_rate)
        self.blocks = nn.ModuleList([TransformerBlock(cfg) for _ in range(cfg.n_layers)])
        self.final_norm = LayerNorm(cfg.emb_dim)
        self.out_head = nn.Linear(cfg.emb_dim, cfg.num_classes or cfg.vocab_size, bias=False)
        self.apply(self._init_weights)
        # The layers that write into the residual stream (attention's out_proj, the feed-forward's last layer)
        # start with a standard deviation sqrt(2 * n_layers) times smaller, as in GPT-2: the stream adds up
        # 2 * n_layers of their outputs, which together then add about as much variance as one unscaled layer
        # would, however deep the model.
        for block in self.blocks:
            for layer in (block.att.out_proj, block.ff.layers[2]):
                nn.init.normal_(layer.weight, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layers))
        if cfg.tie_weights:
            # One Parameter in two places: the gradients of both uses add up in the same tensor.
            self.out_head.weight = self.embedding.token_embedding.weight

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # GPT-2's initialization: small random weights, so the untrained model's logits are near zero and its
        # predictions near uniform (loss close to ln(vocab_size)).
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, token_ids: torch.Tensor, kv_cache: list[KVCache] | None = None) -> torch.Tensor:
        """`kv_cache`, one KVCache per block (chapter 5), holds the earlier tokens of the sequence: token_ids
        are the tokens that follow them, at the positions after them."""
        start = 0 if kv_cache is None else kv_cache[0].length
        x = self.drop_emb(self.embedding(token_ids, start))  # (batch, seq, emb_dim)
        checkpointing = self.gradient_checkpointing and self.training and torch.is_grad_enabled() and kv_cache is None
        for i, block in enumerate(self.blocks):
            if checkpointing:
                # Keep only the block's input for the backward pass and recompute its inner activations
                # there (about one more forward pass of compute). The RNG state is replayed, so the
                # recomputed dropout masks are the same and so are the gradients.
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x, None if kv_cache is None else kv_cache[i])  # (batch, seq, emb_dim)
        return self.out_head(self.final_norm(x))  # (batch, seq, vocab_size)


# Bytes per parameter for (weights, gradients, AdamW's two moment estimates) in each way of training.
# bf16 autocast computes in bf16 but keeps all three in fp32, so it needs the same memory for them as fp32
# (it saves activation memory and time); only training purely in bf16 halves them.
TRAINING_BYTES = {"fp32": (4, 4, 8), "bf16 autocast": (4, 4, 8), "pure bf16": (2, 2, 4)}


@dataclass
class ModelSummary:
    """A model's size: parameter counts by part, training memory by format and a printable table.

    `parts` maps each part to its parameters (the output head counts 0 when it shares the token
    embedding), so its values sum to `total`. `memory[way]` gives bytes for the weights, the gradients,
    AdamW's two moment estimates and their total, for each way of training in TRAINING_BYTES.
    """

    cfg: GPTConfig
    parts: dict[str, int]
    total: int
    memory: dict[str, dict[str, int]]

    def __str__(self) -> str:
        cfg = self.cfg
        lines = [
            f"GPTModel: {cfg.n_layers} blocks, {cfg.n_heads} heads, emb_dim {cfg.emb_dim}, "
            f"context {cfg.context_length}, vocabulary {cfg.vocab_size:,}, "
            f"weights {'tied' if cfg.tie_weights else 'untied'}",
            "",
            f"{'part':<42}{'parameters':>14}{'share':>8}",
        ]
        for part, count in self.parts.items():
            lines.append(f"{part:<42}{count:>14,}{count / self.total:>8.1%}")
        lines.append(f"{'total':<42}{self.total:>14,}")
        lines += ["", f"{'training memory (MB)':<26}" + "".join(f"{key:>14}" for key in self.memory["fp32"])]
        for way, sizes in self.memory.items():
            lines.append(f"{way:<26}" + "".join(f"{size / 1e6:>14,.1f}" for size in sizes.values()))
        lines.append("(bf16 autocast keeps these in fp32 and saves on the activations, which come on top and")
        lines.append(" grow with batch size and sequence length)")
        return "\n".join(lines)


def model_summary(model: GPTModel) -> ModelSummary:
    """Count `model`'s parameters by part and estimate the memory that training it with AdamW needs.

    Works on a model built on the meta device (`with torch.device("meta"): GPTModel(cfg)`), which has
    shapes but no data, so even large configurations are summarized instantly.
    """
    if not isinstance(model, GPTModel):
        raise TypeError(f"model_summary expects a GPTModel, got {type(model).__name__}")

    def count(module: nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    blocks = model.blocks
    tied = model.out_head.weight is model.embedding.token_embedding.weight
    parts = {
        "token embedding": count(model.embedding.token_embedding),
        "position embedding": count(model.embedding.position_embedding),
        f"attention ({len(blocks)} blocks)": sum(count(block.att) for block in blocks),
        f"feed-forward ({len(blocks)} blocks)": sum(count(block.ff) for block in blocks),
        f"layer norms ({len(blocks)} blocks)": sum(count(block.norm1) + count(block.norm2) for block in blocks),
        "final layer norm": count(model.final_norm),
        "output head (shared with token embedding)" if tied else "output head": 0 if tied else count(model.out_head),
    }
    total = count(model)  # parameters() lists a shared tensor once
    memory = {}
    for way, (weight_bytes, gradient_bytes, state_bytes) in TRAINING_BYTES.items():
        sizes = {"weights": total * weight_bytes, "gradients": total * gradient_bytes, "AdamW state": total * state_bytes}
        memory[way] = {**sizes, "total": sum(sizes.values())}
    return ModelSummary(cfg=model.cfg, parts=parts, total=total, memory=memory)
