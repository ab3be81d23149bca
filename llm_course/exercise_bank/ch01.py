"""Chapter 1 exercises: special tokens, sliding windows, token and position embeddings."""

from __future__ import annotations

import torch

from .. import ENDOFTEXT, SPECIAL_TOKENS, Exercise, ExerciseCase, GPTEmbedding, SimpleTokenizerV2, build_vocab
from .inputs import randint, randn

VOCAB_TEXT = "The quick brown fox jumps over the lazy dog. It barked -- loudly!"


def encode_documents_reference(documents: list[str], vocab: dict[str, int]) -> list[int]:
    # split_words keeps <|endoftext|> as one token, so joining the texts with it gives exactly one
    # separator between consecutive documents, even around an empty one.
    return SimpleTokenizerV2(vocab).encode(f" {ENDOFTEXT} ".join(documents))


def encode_documents_cases() -> list[ExerciseCase]:
    vocab = build_vocab(VOCAB_TEXT, SPECIAL_TOKENS)
    return [
        ExerciseCase("one document, every word known", (["The fox jumps."], vocab)),
        ExerciseCase("two documents", (["The fox jumps.", "It barked!"], vocab)),
        ExerciseCase("words outside the vocabulary", (["The cat jumps over the moon."], vocab)),
        ExerciseCase("punctuation, including a double dash", (["It barked -- loudly!"], vocab)),
        ExerciseCase("an empty document between two others", (["The dog.", "", "It barked."], vocab)),
        ExerciseCase("no documents at all", ([], vocab)),
    ]


def sliding_windows_reference(token_ids: list[int], max_length: int, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    # unfold cuts every window of max_length + 1 tokens starting at 0, stride, 2 * stride, ...
    windows = torch.tensor(token_ids, dtype=torch.long).unfold(0, max_length + 1, stride)
    return windows[:, :-1], windows[:, 1:]


def sliding_windows_cases() -> list[ExerciseCase]:
    sentence = [464, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290, 13]  # GPT-2 ids of a short sentence
    return [
        ExerciseCase("windows side by side (stride = max_length)", (list(range(10)), 4, 4)),
        ExerciseCase("overlapping windows (stride 1)", (list(range(6)), 3, 1)),
        ExerciseCase("real token ids, stride 2", (sentence, 4, 2)),
        ExerciseCase("gaps between windows (stride > max_length)", (list(range(20)), 3, 5)),
        ExerciseCase("exactly max_length + 1 tokens: one window", ([7, 3, 9, 1, 4], 4, 2)),
    ]


def embed_tokens_reference(
    token_ids: torch.Tensor, token_table: torch.Tensor, position_table: torch.Tensor
) -> torch.Tensor:
    vocab_size, emb_dim = token_table.shape
    embedding = GPTEmbedding(vocab_size, emb_dim, position_table.shape[0])
    with torch.no_grad():
        embedding.token_embedding.weight.copy_(token_table)
        embedding.position_embedding.weight.copy_(position_table)
        return embedding(token_ids)


def embed_tokens_cases() -> list[ExerciseCase]:
    def case(label: str, seed: int, batch: int, seq: int, vocab: int = 6, emb: int = 4, context: int = 5):
        ids = randint(seed, vocab, batch, seq)
        return ExerciseCase(label, (ids, randn(seed + 1, vocab, emb), randn(seed + 2, context, emb)))

    repeated = case("the same token at three positions", 4, 1, 3)
    repeated = ExerciseCase(repeated.label, (torch.tensor([[2, 2, 2]]), *repeated.args[1:]))
    return [
        case("one sequence of 3 tokens", 1, 1, 3),
        case("a batch of 2 sequences filling the context", 2, 2, 5),
        case("a single token", 3, 1, 1),
        repeated,
        case("a larger batch, vocabulary and width", 5, 4, 6, vocab=50, emb=8, context=8),
    ]


EXERCISES = (
    Exercise(
        id="1.1",
        title="Join documents with `<|endoftext|>`",
        function="encode_documents",
        task=(
            "Training text often comes as many separate documents. Write `encode_documents(documents, vocab)`, "
            "which encodes a list of documents into **one** list of token ids, with the id of `<|endoftext|>` "
            "between consecutive documents (not before the first nor after the last).\n\n"
            "Split each document into tokens with `llm_course.split_words`, and map a token that is not in "
            "`vocab` to the id of `<|unk|>` (both special tokens are in `vocab`). An empty document still "
            "counts as a document, and no documents give an empty list."
        ),
        stub='''from llm_course import ENDOFTEXT, UNKNOWN, split_words


def encode_documents(documents: list[str], vocab: dict[str, int]) -> list[int]:
    """The token ids of all documents, with the id of <|endoftext|> between consecutive ones."""
    # YOUR CODE HERE
    raise NotImplementedError()
''',
        reference=encode_documents_reference,
        cases=encode_documents_cases,
    ),
    Exercise(
        id="1.2",
        title="Sliding windows: inputs and targets",
        function="sliding_windows",
        task=(
            "Write `sliding_windows(token_ids, max_length, stride)`, which cuts a list of token ids into "
            "training examples as `GPTDataset` does: windows of `max_length` tokens starting at positions "
            "0, `stride`, 2 `stride`, ..., each with its targets: the window that starts one token later, so "
            "that each target is the token that follows its input. A window is kept only if its last target still exists; the tokens left over are dropped.\n\n"
            "Return `(inputs, targets)`, two int64 tensors of shape `(number_of_windows, max_length)`."
        ),
        stub='''import torch


def sliding_windows(token_ids: list[int], max_length: int, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets), each (number_of_windows, max_length) int64; targets are inputs shifted by one."""
    # YOUR CODE HERE
    raise NotImplementedError()
''',
        reference=sliding_windows_reference,
        cases=sliding_windows_cases,
        returns=("inputs", "targets"),
    ),
    Exercise(
        id="1.3",
        title="Token plus position embeddings",
        function="embed_tokens",
        task=(
            "Write `embed_tokens(token_ids, token_table, position_table)`, the forward pass of `GPTEmbedding` "
            "without `nn.Embedding`: look up the row of `token_table` (vocab, emb) for each token id of "
            "`token_ids` (batch, seq), and add the row of `position_table` (context_length, emb) for each "
            "position 0, 1, ..., seq - 1. Sequences may be shorter than the context length.\n\n"
            "Return a float tensor of shape `(batch, seq, emb)`."
        ),
        stub='''import torch


def embed_tokens(token_ids: torch.Tensor, token_table: torch.Tensor, position_table: torch.Tensor) -> torch.Tensor:
    """(batch, seq) ids, (vocab, emb) and (context_length, emb) tables -> (batch, seq, emb) vectors."""
    # YOUR CODE HERE
    raise NotImplementedError()
''',
        reference=embed_tokens_reference,
        cases=embed_tokens_cases,
    ),
)
