"""Chapter 5 token files: the same ids as tokenizing in memory, a cache that is reused and rebuilt when
stale, uint16 storage with its limits, atomic writes, and the `--corpus medium/full` path of the command line."""

import numpy as np
import pytest
import torch

import llm_course.cli as cli
import llm_course.pipeline as pipeline
import llm_course.token_store as token_store
from llm_course import (
    SPECIAL_TOKENS,
    GPTDataset,
    SimpleTokenizerV2,
    build_vocab,
    encode_text,
    gpt2_tokenizer,
    load_checkpoint,
    load_corpus,
)
from llm_course.token_store import (
    HEADER_BYTES,
    TokenFileError,
    cached_token_file,
    corpus_token_file,
    read_token_file,
    write_token_file,
)

# Whitespace runs, newlines, tabs, digits, punctuation and the special token: where a careless cut would
# change GPT-2's tokens.
TRICKY = "Fellow-Citizens:\n\n\n  The  1790s\t\tsaw  it's   <|endoftext|>  end.\r\n  " * 40


@pytest.fixture(scope="module")
def tokenizer():
    return gpt2_tokenizer()


@pytest.mark.parametrize("chunk_chars", [1, 7, 100, 1 << 20])
def test_chunked_tokenization_gives_the_ids_of_the_whole_text(tmp_path, tokenizer, chunk_chars):
    token_file = write_token_file(tmp_path / "t.tokens", TRICKY, tokenizer, chunk_chars=chunk_chars)
    expected = encode_text(tokenizer, TRICKY)
    assert token_file.num_tokens == len(expected)
    assert token_file.tokens().tolist() == expected


@pytest.mark.parametrize("max_length, stride", [(32, 16), (8, 8), (5, 7), (64, 1)])
def test_windows_from_the_file_equal_those_of_the_ids_in_memory(tmp_path, tokenizer, max_length, stride):
    text = load_corpus("tiny")
    token_file = write_token_file(tmp_path / "tiny.tokens", text, tokenizer, chunk_chars=500)  # several chunks
    reference = GPTDataset(encode_text(tokenizer, text), max_length, stride)
    dataset = GPTDataset(token_file.tokens(), max_length, stride)
    assert len(dataset) == len(reference)
    for index in [*range(len(reference)), -1, -len(reference)]:
        (inputs, targets), (ref_inputs, ref_targets) = dataset[index], reference[index]
        assert inputs.dtype == targets.dtype == torch.long and inputs.shape == (max_length,)
        assert torch.equal(inputs, ref_inputs) and torch.equal(targets, ref_targets)
    with pytest.raises(IndexError, match=f"has {len(reference)} windows"):
        dataset[len(reference)]


def test_file_holds_uint16_after_a_header(tmp_path, tokenizer):
    token_file = write_token_file(tmp_path / "t.tokens", TRICKY, tokenizer)
    tokens = token_file.tokens()
    assert tokens.dtype == np.uint16 and isinstance(tokens, np.memmap) and not tokens.flags.writeable
    assert (tmp_path / "t.tokens").stat().st_size == HEADER_BYTES + 2 * token_file.num_tokens
    assert read_token_file(tmp_path / "t.tokens") == token_file
    assert token_file.tokenizer == "gpt2" and token_file.source_sha256 == token_store.text_sha256(TRICKY)


def test_vocabularies_beyond_uint16_are_refused(tmp_path):
    big = SimpleTokenizerV2(build_vocab(" ".join(f"w{i}" for i in range(70_000)), SPECIAL_TOKENS))
    with pytest.raises(ValueError, match="70,002 tokens.*uint16.*below 65,536"):
        write_token_file(tmp_path / "big.tokens", "w1 w2", big, tokenizer_name="big")

    class LargeIds:  # no vocabulary to check in advance: the ids themselves are checked
        def encode(self, text):
            return [1, 65_536]

    with pytest.raises(ValueError, match="id 65536, outside the uint16 range"):
        write_token_file(tmp_path / "large.tokens", "text", LargeIds(), tokenizer_name="large")
    assert list(tmp_path.iterdir()) == []  # no file, and no unfinished one
    with pytest.raises(ValueError, match="pass tokenizer_name"):
        write_token_file(tmp_path / "nameless.tokens", "text", LargeIds())


def test_a_failed_write_leaves_the_previous_file_intact(tmp_path, tokenizer):
    path = tmp_path / "t.tokens"
    write_token_file(path, TRICKY, tokenizer)
    before = path.read_bytes()

    class FailsOnSecondChunk:
        calls = 0

        def encode(self, text):
            self.calls += 1
            if self.calls == 2:
                raise KeyboardInterrupt  # as if the user pressed Ctrl-C halfway through
            return [1, 2, 3]

    with pytest.raises(KeyboardInterrupt):
        write_token_file(path, "word " * 1000, FailsOnSecondChunk(), tokenizer_name="gpt2", chunk_chars=100)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["t.tokens"]  # the temporary file is gone


def test_damaged_files_are_reported_clearly(tmp_path, tokenizer):
    with pytest.raises(TokenFileError, match="no token file"):
        read_token_file(tmp_path / "missing.tokens")
    (tmp_path / "junk.tokens").write_bytes(b"\x00" * 5000)
    with pytest.raises(TokenFileError, match="not a token file"):
        read_token_file(tmp_path / "junk.tokens")
    path = write_token_file(tmp_path / "t.tokens", TRICKY, tokenizer).path
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(TokenFileError, match="truncated"):
        read_token_file(path)


def test_the_cache_is_reused_without_tokenizing(tmp_path, tokenizer, monkeypatch):
    first = cached_token_file(TRICKY, "tricky", tokenizer, cache_dir=tmp_path)
    assert first.path == tmp_path / "tricky.gpt2.tokens"
    stamp = first.path.stat().st_mtime_ns

    def no_tokenizing(*args):
        raise AssertionError("the cached token file should have been reused")

    monkeypatch.setattr(token_store, "encode_text", no_tokenizing)
    assert cached_token_file(TRICKY, "tricky", tokenizer, cache_dir=tmp_path) == first
    assert first.path.stat().st_mtime_ns == stamp


def test_a_stale_or_damaged_cache_is_rebuilt(tmp_path, tokenizer, monkeypatch):
    monkeypatch.setenv("LLM_COURSE_CACHE", str(tmp_path))  # the default cache folder
    old = cached_token_file(TRICKY, "text", tokenizer)
    assert old.path.parent == tmp_path
    new_text = TRICKY + " A new last sentence."
    new = cached_token_file(new_text, "text", tokenizer)  # same name, other text: stale
    assert new.path == old.path and new.source_sha256 != old.source_sha256
    assert new.tokens().tolist() == encode_text(tokenizer, new_text)
    new.path.write_bytes(new.path.read_bytes()[:-2])  # truncated, e.g. by a full disk
    again = cached_token_file(new_text, "text", tokenizer)
    assert again == new and read_token_file(again.path).num_tokens == len(encode_text(tokenizer, new_text))


def test_corpus_token_file(tmp_path, tokenizer):
    token_file = corpus_token_file("tiny", cache_dir=tmp_path)
    assert token_file.path.name == "sotu-tiny.gpt2.tokens"
    assert token_file.tokens().tolist() == encode_text(tokenizer, load_corpus("tiny"))
    with pytest.raises(ValueError, match="unknown corpus size 'huge'"):
        corpus_token_file("huge", cache_dir=tmp_path)


def test_cli_streams_large_corpora_from_the_token_file(tmp_path, monkeypatch, capsys):
    # medium and full take minutes to train; the tiny corpus takes their path here.
    monkeypatch.setattr(pipeline, "STREAMED_CORPORA", ("tiny",))
    monkeypatch.setenv("LLM_COURSE_CACHE", str(tmp_path / "cache"))
    sources = []
    original_init = GPTDataset.__init__

    def spy(self, token_ids, *args, **kwargs):
        original_init(self, token_ids, *args, **kwargs)
        sources.append((type(token_ids), len(self)))

    monkeypatch.setattr(GPTDataset, "__init__", spy)
    args = "train --corpus tiny --model-size tiny --epochs 1 --batch-size 4 --eval-iter 1 --context-length 32"
    args = [*args.split(), "--prompt", "The", "--quiet", "--output", str(tmp_path / "m.pt")]
    assert cli.main(args) == 0
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["sotu-tiny.gpt2.tokens"]
    n_tokens = len(encode_text(gpt2_tokenizer(), load_corpus("tiny")))
    split = int(0.9 * n_tokens)
    # Training and validation windows (32 tokens side by side), read from the memory-mapped file.
    assert sources == [(np.memmap, (split - 33) // 32 + 1), (np.memmap, (n_tokens - split - 33) // 32 + 1)]
    _, checkpoint = load_checkpoint(tmp_path / "m.pt")
    assert checkpoint["training"]["history"]["global_step"] == sources[0][1] // 4
    assert "Trained for" in capsys.readouterr().out


def test_a_cached_file_with_damaged_ids_is_detected_and_rebuilt(tmp_path, tokenizer):
    first = cached_token_file(TRICKY, "tricky", tokenizer, cache_dir=tmp_path)
    data = bytearray(first.path.read_bytes())
    data[HEADER_BYTES + 10] ^= 0xFF  # one flipped byte in the ids: same size, same header
    first.path.write_bytes(bytes(data))
    with pytest.raises(TokenFileError, match="ids in .* were damaged"):
        read_token_file(first.path, verify_ids=True)
    assert read_token_file(first.path) == first  # the quick check (header and size) cannot see it
    again = cached_token_file(TRICKY, "tricky", tokenizer, cache_dir=tmp_path)
    assert again.tokens().tolist() == encode_text(tokenizer, TRICKY)  # rewritten, not reused
