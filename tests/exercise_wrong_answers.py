"""Plausible wrong answers to the exercises, one per exercise, each with the label of the check that
should catch it (the mistake learners are most likely to make there)."""

import math
import re
import string

import torch
import torch.nn.functional as F

from llm_course import ENDOFTEXT, UNKNOWN, split_words


def encode_documents(documents, vocab):  # an <|endoftext|> after every document, the last one too
    ids = []
    for document in documents:
        ids += [vocab.get(word, vocab[UNKNOWN]) for word in split_words(document)] + [vocab[ENDOFTEXT]]
    return ids


def sliding_windows(token_ids, max_length, stride):  # targets not shifted
    starts = range(0, len(token_ids) - max_length, stride)
    inputs = torch.tensor([token_ids[s : s + max_length] for s in starts])
    return inputs, inputs.clone()


def embed_tokens(token_ids, token_table, position_table):  # positions looked up by token id
    return token_table[token_ids] + position_table[token_ids]


def masked_softmax(scores, mask):  # zeroes the masked weights after the softmax, without renormalising
    return torch.softmax(scores, dim=-1).masked_fill(mask, 0.0)


def attention_context(queries, keys, values):  # no scaling by sqrt(d)
    weights = torch.softmax(queries @ keys.transpose(-2, -1), dim=-1)
    return weights @ values, weights


def causal_mask_for_last(n_queries, n_keys):  # the square mask's pattern, cut to shape
    return torch.triu(torch.ones(n_queries, n_keys, dtype=torch.bool), diagonal=1)


def split_heads(x, num_heads):  # the right shape, the wrong features in each head
    batch, seq, d_out = x.shape
    return x.reshape(batch, num_heads, seq, d_out // num_heads)


def merge_heads(context):  # forgets to move the heads back behind the positions
    batch, num_heads, seq, head_dim = context.shape
    return context.reshape(batch, seq, num_heads * head_dim)


def multihead_attention(x, w_qkv, w_out, b_out, num_heads):  # no causal mask
    batch, seq, _ = x.shape
    d_out = w_out.shape[0]
    q, k, v = ((t.view(batch, seq, num_heads, -1).transpose(1, 2)) for t in (x @ w_qkv.T).split(d_out, dim=-1))
    context = F.scaled_dot_product_attention(q, k, v)
    return context.transpose(1, 2).reshape(batch, seq, d_out) @ w_out.T + b_out


def attention_parameter_count(d_in, d_out, num_heads, qkv_bias):  # forgets the output projection's bias
    return 3 * (d_in * d_out + (d_out if qkv_bias else 0)) + d_out * d_out


def greedy_next_token(logits):  # (batch,) instead of (batch, 1)
    return logits[:, -1, :].argmax(dim=-1)


def top_k_probs(logits, k):  # one threshold for the whole batch
    kth_largest = torch.topk(logits.flatten(), min(k, logits.numel())).values[-1]
    return torch.softmax(logits.masked_fill(logits < kth_largest, float("-inf")), dim=-1)


def temperature_probs(logits, temperature):  # multiplies by the temperature
    if temperature == 0:
        return torch.zeros_like(logits).scatter_(-1, logits.argmax(dim=-1, keepdim=True), 1.0)
    return torch.softmax(logits * temperature, dim=-1)


def perplexity_from_logits(logits, targets):  # sums the losses instead of averaging
    return math.exp(F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum").item())


def warmup_cosine_lr(step, total_steps, peak_lr, warmup_steps, min_lr):  # warmup starts at 0
    if step < warmup_steps:
        return peak_lr * step / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr + (peak_lr - min_lr) * (1 + math.cos(math.pi * progress)) / 2


def append_to_cache(cache_keys, cache_values, new_keys, new_values):  # concatenates along the heads
    return torch.cat([cache_keys, new_keys], dim=1), torch.cat([cache_values, new_values], dim=1)


def accumulate_gradients(model, micro_batches):  # divides by the number of micro-batches
    for inputs, targets in micro_batches:
        (F.cross_entropy(model(inputs), targets) / len(micro_batches)).backward()


def clip_gradients(grads, max_norm):  # clips each tensor on its own
    return [g * min(1.0, max_norm / g.norm().item()) if g.norm() > 0 else g.clone() for g in grads]


def last_token_states(hidden, attention_mask):  # counts the real tokens: wrong with left padding
    return hidden[torch.arange(hidden.shape[0]), attention_mask.sum(dim=1) - 1]


def lora_linear(x, weight, bias, lora_A, lora_B, alpha):  # scales by alpha, not alpha / rank
    return x @ weight.T + bias + alpha * (x @ lora_A.T @ lora_B.T)


def batch_accuracy(logits, labels):  # the count, not the fraction
    return float((logits.argmax(dim=-1) == labels).sum())


def mask_padding_targets(targets, pad_id):  # masks every padding token, the first one too
    return targets.masked_fill(targets == pad_id, -100)


def sequence_logprob(logits, targets):  # the mean instead of the sum
    kept = targets != -100
    log_probs = torch.log_softmax(logits, dim=-1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (log_probs * kept).sum(dim=1) / kept.sum(dim=1).clamp(min=1)


def preference_loss(policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta):  # log(sigmoid())
    margin = (policy_chosen - reference_chosen) - (policy_rejected - reference_rejected)
    return -torch.log(torch.sigmoid(beta * margin)).mean()


def clean_answer(text):  # removes "the" inside words too
    text = text.lower().translate(str.maketrans("", "", string.punctuation))
    for article in ("the", "an", "a"):
        text = text.replace(article, " ")
    return " ".join(text.split())


def rms_normalize(x, weight, eps):  # LayerNorm's centring
    x = x - x.mean(dim=-1, keepdim=True)
    return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps) * weight


def rotate_pair(pair, frequency):  # rotates clockwise
    angles = torch.arange(pair.shape[0], dtype=pair.dtype) * frequency
    x, y = pair[:, 0], pair[:, 1]
    cos, sin = torch.cos(angles), torch.sin(angles)
    return torch.stack([x * cos + y * sin, -x * sin + y * cos], dim=1)


def expand_kv_heads(x, n_rep):  # tiles the heads (0, 1, 0, 1) instead of repeating each (0, 0, 1, 1)
    return x.repeat(1, n_rep, 1, 1)


def swiglu_feed_forward(x, w_gate, w_up, w_down):  # the gate on the wrong branch
    return ((x @ w_gate.T) * F.silu(x @ w_up.T)) @ w_down.T


# The label of the check that catches each wrong answer (the first one it fails).
CAUGHT_BY = {
    "1.1": "one document, every word known",
    "1.2": "windows side by side (stride = max_length)",
    "1.3": "one sequence of 3 tokens",
    "2.1": "a causal mask",
    "2.2": "3 tokens of width 2",
    "2.3": "the newest query only: it sees every key",
    "3.1": "2 tokens of width 4 into 2 heads",
    "3.2": "2 heads, 3 tokens",
    "3.3": "3 tokens, width 4, 2 heads",
    "3.4": "width 4, 2 heads, no bias",
    "4.1": "one sequence of one token",
    "4.2": "a batch: each row keeps its own top k",
    "4.3": "temperature 0.5 sharpens",
    "4.4": "equal logits over 5 tokens: perplexity 5",
    "5.1": "the first warmup step",
    "5.2": "3 cached positions, 1 new",
    "5.3": "micro-batches of different sizes",
    "5.4": "several gradients share one total norm",
    "6.1": "padding on the left",
    "6.2": "rank 2, alpha 4",
    "6.3": "every prediction right",
    "7.1": "one answer followed by 3 padding tokens",
    "7.2": "every target counts",
    "7.3": "huge margins, where sigmoid() rounds to 0 or 1",
    "7.4": "one word",
    "8.1": "one vector, weight 1",
    "8.2": "a quarter turn per position",
    "8.3": "2 key/value heads, each used by 2 query heads",
    "8.4": "one vector, width 4, hidden 6",
}
