"""Chapter 4: OpenAI's GPT-2 weights in the course's model, and the course's weights in GPT-2's format.

The course's `GPTModel` is GPT-2's architecture under other names. Hugging Face's GPT-2 checkpoints
(`transformers.GPT2LMHeadModel` state dicts and the `.safetensors` files on the Hub) differ only in layout:
- keys such as `transformer.h.0.attn.c_attn.weight` (the Hub's files leave out the `transformer.` prefix);
- GPT-2's `Conv1D` layers store their weight as (in, out), where `nn.Linear` stores (out, in);
- the query, key and value projections are one fused `c_attn` layer of width 3 * emb_dim;
- older files also hold each block's causal mask as a buffer `attn.bias` (not a learned weight);
- the output layer `lm_head` shares the token embedding (tied weights) and may be absent from a file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from .model import GPTConfig, GPTModel

__all__ = ["GPT2_MODELS", "from_hf_gpt2", "to_hf_gpt2", "download_gpt2_weights", "load_openai_gpt2"]

CHAPTER = 4

# OpenAI's four GPT-2 sizes on the Hugging Face Hub: repository and number of attention heads.
GPT2_MODELS = {
    "gpt2": ("openai-community/gpt2", 12),  # 124 M parameters
    "gpt2-medium": ("openai-community/gpt2-medium", 16),  # 355 M
    "gpt2-large": ("openai-community/gpt2-large", 20),  # 774 M
    "gpt2-xl": ("openai-community/gpt2-xl", 25),  # 1558 M
}
# Every GPT-2 size uses heads of 64 dimensions: its width fixes its number of heads. Other widths say
# nothing about their heads, so the number is read from a config (or asked for), never guessed.
GPT2_HEADS = {768: 12, 1024: 16, 1280: 20, 1600: 25}

_BLOCK_KEY = re.compile(r"h\.(\d+)\.")


def _hf_block_keys(i: int) -> dict[str, str]:
    """Hugging Face key (without the `transformer.` prefix) of each parameter of block i, by role."""
    return {
        role: f"h.{i}.{name}"
        for role, name in {
            "norm1.scale": "ln_1.weight",
            "norm1.shift": "ln_1.bias",
            "qkv.weight": "attn.c_attn.weight",
            "qkv.bias": "attn.c_attn.bias",
            "out_proj.weight": "attn.c_proj.weight",
            "out_proj.bias": "attn.c_proj.bias",
            "norm2.scale": "ln_2.weight",
            "norm2.shift": "ln_2.bias",
            "fc.weight": "mlp.c_fc.weight",
            "fc.bias": "mlp.c_fc.bias",
            "proj.weight": "mlp.c_proj.weight",
            "proj.bias": "mlp.c_proj.bias",
        }.items()
    }


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        from safetensors.torch import load_file  # only needed for files, so imported here
    except ImportError as error:
        raise ImportError(
            "reading .safetensors files needs the safetensors package: pip install safetensors"
        ) from error
    if not path.is_file():
        raise FileNotFoundError(f"no GPT-2 weights file at {path}")
    return load_file(str(path))


def _normalize_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the `transformer.` prefix and the causal-mask buffers, keeping the learned weights."""
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise TypeError("expected a GPT-2 state dict (a dict of tensors) or the path of a .safetensors file")
    weights = {}
    for key, value in state_dict.items():
        key = key.removeprefix("transformer.")
        if key.endswith(("attn.bias", "attn.masked_bias")) and not key.endswith("c_attn.bias"):
            continue  # causal mask buffers of older transformers versions: no learned state
        weights[key] = value
    if "wte.weight" not in weights or "wpe.weight" not in weights:
        found = ", ".join(list(state_dict)[:5]) or "no keys"
        raise ValueError(
            "this is not a GPT-2 state dict: expected keys such as 'transformer.wte.weight' and "
            f"'transformer.h.0.attn.c_attn.weight', found {found}"
        )
    return weights


def _count_blocks(weights: dict[str, torch.Tensor]) -> int:
    return 1 + max((int(m.group(1)) for key in weights if (m := _BLOCK_KEY.match(key))), default=-1)


def _infer_config(weights: dict[str, torch.Tensor], n_heads: int | None) -> GPTConfig:
    vocab_size, emb_dim = weights["wte.weight"].shape
    context_length = weights["wpe.weight"].shape[0]
    n_layers = _count_blocks(weights)
    if n_layers == 0:
        raise ValueError("this GPT-2 state dict has no transformer blocks (keys 'h.0.*')")
    if n_heads is None:
        if emb_dim not in GPT2_HEADS:
            raise ValueError(
                f"the weights do not say how many heads their width {emb_dim} is split into (only GPT-2's own "
                f"widths {', '.join(map(str, GPT2_HEADS))} do): pass the transformers model itself, a folder with "
                "its config.json, or config=GPTConfig(...) with the right n_heads"
            )
        n_heads = GPT2_HEADS[emb_dim]
    head = weights.get("lm_head.weight")
    tied = head is None or torch.equal(head, weights["wte.weight"])
    return GPTConfig(
        vocab_size=vocab_size,
        context_length=context_length,
        emb_dim=emb_dim,
        n_heads=n_heads,
        n_layers=n_layers,
        drop_rate=0.0,  # the released weights are for inference and fine-tuning; set it yourself to train
        qkv_bias="h.0.attn.c_attn.bias" in weights,
        tie_weights=tied,
    )


def _read_config_json(path: Path) -> int | None:
    """n_heads from a Hugging Face config.json beside a weights file, if there is one."""
    config_file = path.with_name("config.json")
    if not config_file.is_file():
        return None
    return json.loads(config_file.read_text(encoding="utf-8")).get("n_head")


def from_hf_gpt2(state_dict_or_path, config: GPTConfig | None = None) -> GPTModel:
    """Build a `GPTModel` holding the weights of a Hugging Face GPT-2: a `transformers.GPT2LMHeadModel` (or
    `GPT2Model`), its `state_dict()`, or the path of a `.safetensors` file such as the Hub's `model.safetensors`.

    Without `config`, the sizes are read from the weights' shapes and the number of heads from the model's
    config, a `config.json` beside the file, or GPT-2's own widths (heads of 64 dimensions); for other widths
    a bare state dict is refused rather than guessed. Weights the conversion would not use are refused too,
    so that nothing is dropped silently. The model is returned in eval mode.
    """
    n_heads = None
    if hasattr(state_dict_or_path, "state_dict") and hasattr(state_dict_or_path, "config"):  # a transformers model
        n_heads = getattr(state_dict_or_path.config, "n_head", None)
        state_dict_or_path = state_dict_or_path.state_dict()
    elif isinstance(state_dict_or_path, (str, Path)):
        path = Path(state_dict_or_path)
        n_heads = _read_config_json(path)
        state_dict_or_path = _read_safetensors(path)
    weights = _normalize_keys(state_dict_or_path)
    if config is None:
        config = _infer_config(weights, n_heads)
    elif not isinstance(config, GPTConfig):
        raise TypeError(f"config must be a GPTConfig or None, got {type(config).__name__}")

    if _count_blocks(weights) != config.n_layers:
        raise ValueError(
            f"the GPT-2 weights have {_count_blocks(weights)} blocks but the config has n_layers={config.n_layers}: "
            "leave config=None to infer it from the weights"
        )
    head = weights.get("lm_head.weight")
    if config.tie_weights and head is not None and not torch.equal(head, weights["wte.weight"]):
        raise ValueError(
            "the config ties the output layer to the token embedding, but these weights have a separate "
            "lm_head.weight: use a config with tie_weights=False or leave config=None"
        )
    unused = sorted(set(weights) - _hf_keys(config))
    if unused:
        raise ValueError(
            f"the GPT-2 state dict has {len(unused)} weights the course's model has no place for, e.g. {unused[:3]}: "
            "is it another architecture, or a config with fewer blocks than the weights?"
        )
    model = GPTModel(config)
    ours = _to_our_state_dict(weights, config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(ours))
    if missing:
        raise ValueError(f"the GPT-2 state dict lacks weights for {len(missing)} parameters, e.g. {missing[:3]}")
    for key, value in ours.items():
        if value.shape != expected[key].shape:
            raise ValueError(
                f"shape mismatch for {key}: the GPT-2 weights have {tuple(value.shape)}, the config "
                f"{config} needs {tuple(expected[key].shape)}; leave config=None to infer it from the weights"
            )
    model.load_state_dict(ours)
    return model.eval()


def _hf_keys(cfg: GPTConfig) -> set[str]:
    """Every key (without the `transformer.` prefix) that a GPT-2 of `cfg`'s sizes may hold."""
    keys = {"wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias", "lm_head.weight"}
    return keys | {key for i in range(cfg.n_layers) for key in _hf_block_keys(i).values()}


def _to_our_state_dict(weights: dict[str, torch.Tensor], cfg: GPTConfig) -> dict[str, torch.Tensor]:
    """Rename and re-lay-out GPT-2 weights (prefix already removed) into GPTModel's state-dict keys."""
    emb = cfg.emb_dim
    ours = {
        "embedding.token_embedding.weight": weights["wte.weight"],
        "embedding.position_embedding.weight": weights["wpe.weight"],
        "final_norm.scale": weights.get("ln_f.weight"),
        "final_norm.shift": weights.get("ln_f.bias"),
        "out_head.weight": weights.get("lm_head.weight", weights["wte.weight"]),
    }
    for i in range(cfg.n_layers):
        hf = {role: weights.get(key) for role, key in _hf_block_keys(i).items()}
        qkv_weight = hf["qkv.weight"]
        if qkv_weight is not None and qkv_weight.shape != (emb, 3 * emb):
            raise ValueError(
                f"shape mismatch for h.{i}.attn.c_attn.weight: expected ({emb}, {3 * emb}) for emb_dim {emb}, "
                f"got {tuple(qkv_weight.shape)}"
            )
        prefix = f"blocks.{i}."
        # Conv1D computes x @ W with W of shape (in, out); nn.Linear computes x @ W.T: transpose.
        block = {
            "norm1.scale": hf["norm1.scale"],
            "norm1.shift": hf["norm1.shift"],
            "att.W_qkv.weight": None if qkv_weight is None else qkv_weight.t(),
            "att.out_proj.weight": None if hf["out_proj.weight"] is None else hf["out_proj.weight"].t(),
            "att.out_proj.bias": hf["out_proj.bias"],
            "norm2.scale": hf["norm2.scale"],
            "norm2.shift": hf["norm2.shift"],
            "ff.layers.0.weight": None if hf["fc.weight"] is None else hf["fc.weight"].t(),
            "ff.layers.0.bias": hf["fc.bias"],
            "ff.layers.2.weight": None if hf["proj.weight"] is None else hf["proj.weight"].t(),
            "ff.layers.2.bias": hf["proj.bias"],
        }
        if hf["qkv.bias"] is not None and hf["qkv.bias"].shape != (3 * emb,):
            raise ValueError(
                f"shape mismatch for h.{i}.attn.c_attn.bias: expected ({3 * emb},) for emb_dim {emb}, "
                f"got {tuple(hf['qkv.bias'].shape)}"
            )
        if cfg.qkv_bias and hf["qkv.bias"] is not None:
            block["att.W_qkv.bias"] = hf["qkv.bias"]
        elif not cfg.qkv_bias and hf["qkv.bias"] is not None and hf["qkv.bias"].any():
            raise ValueError(
                f"h.{i}.attn.c_attn.bias holds non-zero query/key/value biases but the config has "
                "qkv_bias=False: use a config with qkv_bias=True (GPT-2's) or leave config=None"
            )
        ours.update({prefix + key: value for key, value in block.items()})
    return {key: value for key, value in ours.items() if value is not None}


def to_hf_gpt2(model: GPTModel) -> dict[str, torch.Tensor]:
    """The weights of `model` as a `transformers.GPT2LMHeadModel` state dict (fresh tensors, Conv1D layout).

    `GPT2LMHeadModel(GPT2Config(...)).load_state_dict(to_hf_gpt2(model))` loads them, and
    `from_hf_gpt2(to_hf_gpt2(model), model.cfg)` gives the model back (a state dict does not record the number
    of heads, so give the config unless the width is one of GPT-2's own). GPT-2 has bias terms
    in its query, key and value projections, so a model without them gets zeros there.
    """
    if not isinstance(model, GPTModel):
        raise TypeError(f"to_hf_gpt2 expects a GPTModel, got {type(model).__name__}")
    gpt2 = GPTConfig(**{field: getattr(model.cfg, field) for field in ("vocab_size", "context_length", "emb_dim", "n_heads",
                     "n_layers", "drop_rate", "qkv_bias", "tie_weights", "num_classes")})  # fmt: skip
    if model.cfg != gpt2:
        raise ValueError("to_hf_gpt2 writes GPT-2's architecture, but this model has chapter 8's options (norm, "
                         "positions, feed-forward, key/value heads or biases) set otherwise")  # fmt: skip
    sd = {key: value.detach() for key, value in model.state_dict().items()}
    emb = model.cfg.emb_dim
    hf = {
        "transformer.wte.weight": sd["embedding.token_embedding.weight"],
        "transformer.wpe.weight": sd["embedding.position_embedding.weight"],
    }
    for i in range(model.cfg.n_layers):
        p = f"blocks.{i}."
        qkv_bias = sd.get(p + "att.W_qkv.bias")
        block = {
            "norm1.scale": sd[p + "norm1.scale"],
            "norm1.shift": sd[p + "norm1.shift"],
            "qkv.weight": sd[p + "att.W_qkv.weight"].t(),
            "qkv.bias": sd[p + "norm1.shift"].new_zeros(3 * emb) if qkv_bias is None else qkv_bias,
            "out_proj.weight": sd[p + "att.out_proj.weight"].t(),
            "out_proj.bias": sd[p + "att.out_proj.bias"],
            "norm2.scale": sd[p + "norm2.scale"],
            "norm2.shift": sd[p + "norm2.shift"],
            "fc.weight": sd[p + "ff.layers.0.weight"].t(),
            "fc.bias": sd[p + "ff.layers.0.bias"],
            "proj.weight": sd[p + "ff.layers.2.weight"].t(),
            "proj.bias": sd[p + "ff.layers.2.bias"],
        }
        hf.update({"transformer." + _hf_block_keys(i)[role]: value for role, value in block.items()})
    hf["transformer.ln_f.weight"] = sd["final_norm.scale"]
    hf["transformer.ln_f.bias"] = sd["final_norm.shift"]
    hf["lm_head.weight"] = sd["out_head.weight"]
    return {key: value.contiguous().clone() for key, value in hf.items()}


def download_gpt2_weights(model_name: str = "gpt2", cache_dir: str | Path | None = None) -> Path:
    """Download OpenAI's GPT-2 weights (`model.safetensors`) from the Hugging Face Hub, once, and return the
    local path (later calls find the cached file). Needs a network and the huggingface_hub package."""
    if model_name not in GPT2_MODELS:
        raise ValueError(f"unknown GPT-2 model {model_name!r}; choose one of {', '.join(GPT2_MODELS)}")
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as error:
        raise ImportError("downloading GPT-2 needs the huggingface_hub package: pip install huggingface_hub") from error
    repo_id = GPT2_MODELS[model_name][0]
    try:
        return Path(hf_hub_download(repo_id=repo_id, filename="model.safetensors", cache_dir=cache_dir))
    except Exception as error:  # offline, proxy, disk full: the Hub client has many error types
        raise RuntimeError(
            f"could not download {repo_id}/model.safetensors ({type(error).__name__}: {error}). Check the network, "
            "or download the file on another machine and load it with from_hf_gpt2(path)"
        ) from error


def load_openai_gpt2(model_name: str = "gpt2", cache_dir: str | Path | None = None) -> GPTModel:
    """OpenAI's pretrained GPT-2 as a course `GPTModel` (eval mode): `load_openai_gpt2()` is the 124 M model."""
    path = download_gpt2_weights(model_name, cache_dir)
    _, n_heads = GPT2_MODELS[model_name]
    weights = _normalize_keys(_read_safetensors(path))
    return from_hf_gpt2(weights, _infer_config(weights, n_heads))
