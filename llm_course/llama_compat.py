"""Chapter 8: the weights of a Hugging Face Llama in the course's model, to check it against the reference.

The course's `GPTModel` with chapter 8's options (`GPTConfig.llama_style()`, `to_llama()`) computes what
`transformers.LlamaForCausalLM` computes. Their weights differ only in layout:
- keys such as `model.layers.0.self_attn.q_proj.weight` and `model.layers.0.mlp.gate_proj.weight`;
- the query, key and value projections are three layers where the course's model has one fused `W_qkv`
  (queries, then keys, then values: the rows simply stack);
- `lm_head.weight` is absent from a model whose output layer shares the token embedding.
Both pair dimension i of a head with dimension i + head_dim // 2 in the rotary embedding, so no
permutation of the query and key rows is needed.
"""

from __future__ import annotations

import re

import torch

from .model import GPTConfig, GPTModel

__all__ = ["from_hf_llama", "llama_config_from_hf"]

CHAPTER = 8

_BLOCK_KEY = re.compile(r"model\.layers\.(\d+)\.")

# Our key inside block i -> Hugging Face's key inside model.layers.i (the q/k/v projections are handled apart).
_BLOCK_NAMES = {
    "norm1.scale": "input_layernorm.weight",
    "att.out_proj.weight": "self_attn.o_proj.weight",
    "att.out_proj.bias": "self_attn.o_proj.bias",
    "norm2.scale": "post_attention_layernorm.weight",
    "ff.gate.weight": "mlp.gate_proj.weight",
    "ff.gate.bias": "mlp.gate_proj.bias",
    "ff.up.weight": "mlp.up_proj.weight",
    "ff.up.bias": "mlp.up_proj.bias",
    "ff.down.weight": "mlp.down_proj.weight",
    "ff.down.bias": "mlp.down_proj.bias",
}


def llama_config_from_hf(hf_config) -> GPTConfig:
    """The GPTConfig of a `transformers.LlamaConfig`; refuses the Llama settings the course's model lacks."""
    get = hf_config.__getattribute__
    head_dim = getattr(hf_config, "head_dim", None) or get("hidden_size") // get("num_attention_heads")
    problems = []
    if head_dim * get("num_attention_heads") != get("hidden_size"):
        problems.append(f"head_dim {head_dim} * num_attention_heads != hidden_size {get('hidden_size')}")
    if getattr(hf_config, "hidden_act", "silu") != "silu":
        problems.append(f"hidden_act {hf_config.hidden_act!r} (only 'silu' is SwiGLU)")
    scaling = getattr(hf_config, "rope_scaling", None) or getattr(hf_config, "rope_parameters", None)
    if scaling and scaling.get("rope_type", scaling.get("type", "default")) != "default":
        problems.append(f"rope scaling {scaling}")
    attention_bias, mlp_bias = getattr(hf_config, "attention_bias", False), getattr(hf_config, "mlp_bias", False)
    if attention_bias != mlp_bias:
        problems.append(f"attention_bias={attention_bias} with mlp_bias={mlp_bias} (the course has one bias switch)")
    if problems:
        raise ValueError(f"this Llama configuration has settings the course's model does not offer: {'; '.join(problems)}")
    # transformers 5 keeps the base in rope_parameters, earlier versions in rope_theta.
    theta = (getattr(hf_config, "rope_parameters", None) or {}).get("rope_theta", getattr(hf_config, "rope_theta", 10000.0))
    return GPTConfig(
        vocab_size=get("vocab_size"),
        context_length=get("max_position_embeddings"),
        emb_dim=get("hidden_size"),
        n_heads=get("num_attention_heads"),
        n_layers=get("num_hidden_layers"),
        drop_rate=float(getattr(hf_config, "attention_dropout", 0.0)),
        qkv_bias=attention_bias,
        tie_weights=bool(getattr(hf_config, "tie_word_embeddings", False)),
        norm="rmsnorm",
        norm_eps=get("rms_norm_eps"),
        positions="rope",
        rope_theta=float(theta),
        feed_forward="swiglu",
        ff_hidden_dim=get("intermediate_size"),
        n_kv_heads=getattr(hf_config, "num_key_value_heads", None) or get("num_attention_heads"),
        bias=mlp_bias,
    )


def from_hf_llama(state_dict_or_model, config: GPTConfig | None = None) -> GPTModel:
    """Build a `GPTModel` holding the weights of a Hugging Face Llama: a `transformers.LlamaForCausalLM` (its
    config is read too) or its `state_dict()` with `config` (the number of heads and the rope base are not
    in the weights, so a bare state dict needs one). Weights without a place in the model are refused, so
    that nothing is dropped silently. The model is returned in eval mode.
    """
    if hasattr(state_dict_or_model, "state_dict") and hasattr(state_dict_or_model, "config"):
        if config is None:
            config = llama_config_from_hf(state_dict_or_model.config)
        state_dict_or_model = state_dict_or_model.state_dict()
    if not isinstance(state_dict_or_model, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict_or_model.values()):
        raise TypeError("expected a transformers.LlamaForCausalLM or its state dict (a dict of tensors)")
    if config is None:
        raise ValueError(
            "a bare Llama state dict does not say how many heads it has or its rope base: pass the "
            "transformers model itself, or config=llama_config_from_hf(model.config) or a GPTConfig"
        )
    if not isinstance(config, GPTConfig):
        raise TypeError(f"config must be a GPTConfig or None, got {type(config).__name__}")
    if (config.norm, config.positions, config.feed_forward) != ("rmsnorm", "rope", "swiglu"):
        raise ValueError("a Llama needs a GPTConfig with norm='rmsnorm', positions='rope' and feed_forward='swiglu' "
                         "(see GPTConfig.to_llama())")  # fmt: skip
    weights = dict(state_dict_or_model)
    if "model.embed_tokens.weight" not in weights:
        found = ", ".join(list(weights)[:5]) or "no keys"
        raise ValueError(f"this is not a LlamaForCausalLM state dict (no 'model.embed_tokens.weight'); found {found}")
    layers = 1 + max((int(m.group(1)) for key in weights if (m := _BLOCK_KEY.match(key))), default=-1)
    if layers != config.n_layers:
        raise ValueError(f"the Llama weights have {layers} layers but the config has n_layers={config.n_layers}")
    weights.pop("model.rotary_emb.inv_freq", None)  # a buffer of older transformers versions, recomputed here

    ours = {
        "embedding.token_embedding.weight": weights.pop("model.embed_tokens.weight"),
        "final_norm.scale": weights.pop("model.norm.weight", None),
    }
    head = weights.pop("lm_head.weight", None)
    ours["out_head.weight"] = ours["embedding.token_embedding.weight"] if head is None else head
    for i in range(config.n_layers):
        hf = f"model.layers.{i}."
        for part in ("weight", "bias"):
            q, k, v = (weights.pop(f"{hf}self_attn.{name}_proj.{part}", None) for name in "qkv")
            if q is not None and k is not None and v is not None:
                ours[f"blocks.{i}.att.W_qkv.{part}"] = torch.cat([q, k, v])  # queries, keys, values: rows stack
        for name, hf_name in _BLOCK_NAMES.items():
            value = weights.pop(hf + hf_name, None)
            if value is not None:
                ours[f"blocks.{i}.{name}"] = value
    if weights:
        raise ValueError(f"the Llama state dict has {len(weights)} weights the course's model has no place for, "
                         f"e.g. {sorted(weights)[:3]}")  # fmt: skip

    model = GPTModel(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(ours))
    if missing:
        raise ValueError(f"the Llama state dict lacks weights for {len(missing)} parameters, e.g. {missing[:3]}")
    for key, value in ours.items():
        if value.shape != expected[key].shape:
            raise ValueError(f"shape mismatch for {key}: the Llama weights have {tuple(value.shape)}, the config "
                             f"needs {tuple(expected[key].shape)}")  # fmt: skip
    model.load_state_dict(ours)
    return model.eval()
