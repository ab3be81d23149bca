"""Chapter 4: the GPT model: layer normalization, GELU, the feed-forward network, the transformer block,
the whole model and a summary of its size.

The model maps (batch, seq) token ids to (batch, seq, vocab_size) logits: one score per vocabulary token
for the token that follows each position. It is built from the chapter 1 embedding and the chapter 3
multi-head causal attention.

Chapter 8 turns it into a Llama-style model with options of the same config: RMSNorm, rotary position
embeddings, a SwiGLU feed-forward network, grouped-query attention and no biases (`GPTConfig.llama_style()`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .embeddings import GPTEmbedding, TokenEmbedding
from .multihead_attention import MultiHeadCausalAttention
from .utils import check_int, check_number

if TYPE_CHECKING:
    from .kv_cache import KVCache

__all__ = [
    "GPTConfig",
    "LayerNorm",
    "GELU",
    "FeedForward",
    "RMSNorm",
    "SwiGLU",
    "TransformerBlock",
    "GPTModel",
    "ModelSummary",
    "model_summary",
]

CHAPTER = 4
CHAPTERS = {"RMSNorm": 8, "SwiGLU": 8}  # introduced by chapter 8

# Chapter 8's architecture options: each setting and the values it takes (the first is GPT-2's).
ARCHITECTURE_CHOICES = {"norm": ("layernorm", "rmsnorm"), "positions": ("learned", "rope"), "feed_forward": ("gelu", "swiglu")}


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
    # Chapter 8: from GPT-2 to Llama. The defaults are GPT-2's choices.
    norm: str = "layernorm"  # or "rmsnorm": divide by the root mean square, no mean and no shift
    norm_eps: float = 1e-5  # added to the variance (or mean square) inside the square root
    positions: str = "learned"  # or "rope": rotary position embeddings inside attention
    rope_theta: float = 10000.0  # the rotary embeddings' base: larger turns the slow pairs more slowly
    feed_forward: str = "gelu"  # or "swiglu": a gated feed-forward network
    ff_hidden_dim: int | None = None  # None: 4 * emb_dim (gelu), or about 8/3 * emb_dim (swiglu), see ff_dim
    n_kv_heads: int | None = None  # None: n_heads; fewer: grouped-query attention (must divide n_heads)
    bias: bool = True  # bias terms in attention's output projection and the feed-forward layers

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
        for name, choices in ARCHITECTURE_CHOICES.items():
            if getattr(self, name) not in choices:
                raise ValueError(f"GPTConfig.{name} must be one of {', '.join(map(repr, choices))}, got {getattr(self, name)!r}")
        check_number("GPTConfig.norm_eps", self.norm_eps, 0, 1, low_open=True)
        check_number("GPTConfig.rope_theta", self.rope_theta, 0, low_open=True)
        check_int("GPTConfig.ff_hidden_dim", self.ff_hidden_dim, allow_none=True)
        check_int("GPTConfig.n_kv_heads", self.n_kv_heads, allow_none=True)
        if self.n_kv_heads is not None and self.n_heads % self.n_kv_heads != 0:
            raise ValueError(
                f"GPTConfig.n_kv_heads ({self.n_kv_heads}) must divide n_heads ({self.n_heads}): each key/value "
                f"head serves n_heads // n_kv_heads query heads; e.g. use n_kv_heads={self.n_heads // 2 or 1}"
            )
        if self.positions == "rope" and (self.emb_dim // self.n_heads) % 2 != 0:
            raise ValueError(
                f"GPTConfig.positions='rope' rotates pairs of dimensions, but the heads are "
                f"{self.emb_dim // self.n_heads} wide (emb_dim // n_heads): choose an even head width"
            )
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

    @classmethod
    def llama_style(cls, **overrides) -> "GPTConfig":
        """The course's model with Llama's changes (see to_llama), about as large (27.3 M parameters with the
        defaults); keyword arguments override fields."""
        return dataclasses.replace(cls().to_llama(), **overrides)

    def to_llama(self) -> "GPTConfig":
        """This configuration with Llama's architecture (chapter 8): RMSNorm, rotary embeddings, a SwiGLU
        feed-forward network, no biases and, when n_heads is even, half as many key/value heads."""
        return dataclasses.replace(
            self, norm="rmsnorm", positions="rope", feed_forward="swiglu", ff_hidden_dim=None, bias=False,
            qkv_bias=False, n_kv_heads=self.n_heads // 2 if self.n_heads % 2 == 0 else self.n_heads,
        )  # fmt: skip

    @property
    def ff_dim(self) -> int:
        """The feed-forward network's hidden width. SwiGLU has three weight matrices instead of two, so
        Llama takes 2/3 of 4 * emb_dim (rounded up to a multiple of 64) to keep about the same parameters."""
        if self.ff_hidden_dim is not None:
            return self.ff_hidden_dim
        if self.feed_forward == "swiglu":
            return 64 * math.ceil(8 * self.emb_dim / 3 / 64)
        return 4 * self.emb_dim


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
    (batch, seq, emb_dim) -> (batch, seq, ff_dim) -> (batch, seq, emb_dim), where ff_dim = 4 * emb_dim."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(cfg.emb_dim, cfg.ff_dim, bias=cfg.bias),
            GELU(),
            nn.Linear(cfg.ff_dim, cfg.emb_dim, bias=cfg.bias),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class RMSNorm(nn.Module):
    """Llama's normalization (chapter 8): divide each token vector by its root mean square, then scale it
    (learned, per dimension). No mean is subtracted and there is no shift. (..., emb_dim) -> (..., emb_dim)."""

    def __init__(self, emb_dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps  # keeps the division finite for a zero vector
        self.scale = nn.Parameter(torch.ones(emb_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # scale * x / sqrt(mean(x ** 2) + eps), in one fused kernel
        return F.rms_norm(x, self.scale.shape, self.scale, self.eps)


class SwiGLU(nn.Module):
    """Llama's feed-forward network (chapter 8), applied to each token on its own: one projection, through
    SiLU, gates another elementwise, and a third projects back:
    (batch, seq, emb_dim) -> 2 x (batch, seq, ff_dim) -> (batch, seq, ff_dim) -> (batch, seq, emb_dim)."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.gate = nn.Linear(cfg.emb_dim, cfg.ff_dim, bias=cfg.bias)
        self.up = nn.Linear(cfg.emb_dim, cfg.ff_dim, bias=cfg.bias)
        self.down = nn.Linear(cfg.ff_dim, cfg.emb_dim, bias=cfg.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # silu(a) = a * sigmoid(a): near 0 for negative a, near a for positive a, so each hidden feature of
        # up(x) is let through, damped or flipped according to gate(x).
        return self.down(F.silu(self.gate(x)) * self.up(x))


class TransformerBlock(nn.Module):
    """Attention, then a feed-forward network, each after a layer norm (pre-norm) and inside a residual
    connection: (batch, seq, emb_dim) -> (batch, seq, emb_dim). Chapter 8's options choose the norm, the
    feed-forward network and the attention's positions and key/value heads."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        norm = RMSNorm if cfg.norm == "rmsnorm" else LayerNorm
        self.norm1 = norm(cfg.emb_dim, cfg.norm_eps)
        self.att = MultiHeadCausalAttention(
            cfg.emb_dim, cfg.emb_dim, cfg.context_length, cfg.drop_rate, cfg.n_heads, cfg.qkv_bias,
            num_kv_heads=cfg.n_kv_heads, rope_theta=cfg.rope_theta if cfg.positions == "rope" else None,
            out_bias=cfg.bias,
        )  # fmt: skip
        self.norm2 = norm(cfg.emb_dim, cfg.norm_eps)
        self.ff = SwiGLU(cfg) if cfg.feed_forward == "swiglu" else FeedForward(cfg)
        self.drop_resid = nn.Dropout(cfg.drop_rate)

    def forward(self, x: torch.Tensor, kv_cache: KVCache | None = None) -> torch.Tensor:
        # Each sublayer adds its output to its input (x + f(x)): gradients flow straight through the sum,
        # which keeps deep stacks trainable.
        # With a cache (generation, chapter 5), x holds only the new tokens; attention also sees the earlier ones.
        x = x + self.drop_resid(self.att(self.norm1(x), kv_cache))
        x = x + self.drop_resid(self.ff(self.norm2(x)))
        return x


class GPTModel(nn.Module):
    """A GPT: embeddings, `n_layers` transformer blocks, a final layer norm and a linear output layer. With
    rotary embeddings (chapter 8) the embedding has no position vectors: attention turns queries and keys.

    forward: (batch, seq) token ids, seq <= context_length -> (batch, seq, vocab_size) logits.
    Set `model.gradient_checkpointing = True` to trade compute for memory in training (see forward).
    """

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        if not isinstance(cfg, GPTConfig):
            raise TypeError(f"GPTModel needs a GPTConfig, got {type(cfg).__name__}: use GPTModel(GPTConfig(...))")
        self.cfg = cfg
        self.gradient_checkpointing = False  # a way to run, not part of the architecture: not in cfg
        embedding = TokenEmbedding if cfg.positions == "rope" else GPTEmbedding
        self.embedding = embedding(cfg.vocab_size, cfg.emb_dim, cfg.context_length)
        self.drop_emb = nn.Dropout(cfg.drop_rate)
        self.blocks = nn.ModuleList([TransformerBlock(cfg) for _ in range(cfg.n_layers)])
        self.final_norm = (RMSNorm if cfg.norm == "rmsnorm" else LayerNorm)(cfg.emb_dim, cfg.norm_eps)
        self.out_head = nn.Linear(cfg.emb_dim, cfg.num_classes or cfg.vocab_size, bias=False)
        self.apply(self._init_weights)
        # The layers that write into the residual stream (attention's out_proj, the feed-forward's last layer)
        # start with a standard deviation sqrt(2 * n_layers) times smaller, as in GPT-2: the stream adds up
        # 2 * n_layers of their outputs, which together then add about as much variance as one unscaled layer
        # would, however deep the model.
        for block in self.blocks:
            for layer in (block.att.out_proj, block.ff.layers[2] if isinstance(block.ff, FeedForward) else block.ff.down):
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
        "position embedding": count(model.embedding.position_embedding) if isinstance(model.embedding, GPTEmbedding) else 0,
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
