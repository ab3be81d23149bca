"""The classifier commands: `llm-course train-classifier` on a CSV file and `llm-course classify`, their
checkpoint, and the bad inputs that must fail with one line and leave every saved file as it was."""

import pytest
import torch

from llm_course import GPTConfig, GPTModel, classify_texts, gpt2_tokenizer, load_checkpoint, make_classifier, save_checkpoint
from llm_course.cli import main

TINY = GPTConfig(vocab_size=50257, context_length=16, emb_dim=16, n_heads=2, n_layers=2, drop_rate=0.0)
# Two classes a tiny model learns in a few steps: the word the text starts with.
ROWS = [(f"{word} {filler} number {i}", label) for i in range(12)
        for word, label, filler in (("Apples", "fruit", "are sweet"), ("Carrots", "vegetable", "grow underground"))]


@pytest.fixture
def base(tmp_path):
    torch.manual_seed(0)
    return save_checkpoint(tmp_path / "base.pt", GPTModel(TINY), tokenizer="gpt2")


def write_csv(tmp_path, text, name="data.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def good_csv(tmp_path):
    return write_csv(tmp_path, "text,label\n" + "".join(f"{text},{label}\n" for text, label in ROWS))


def train(csv, base, output, *extra):
    return main(["train-classifier", str(csv), "--base", str(base), "--output", str(output), "--epochs", "6",
                 "--lr", "5e-3", "--batch-size", "4", "--layers", "all", "--quiet", *extra])


def one_line_error(capsys, *fragments):
    err = capsys.readouterr().err.strip()
    assert err.startswith("llm-course: error: ") and "\n" not in err and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err


def test_train_then_classify(tmp_path, base, capsys):
    output = tmp_path / "out" / "clf.pt"
    assert train(good_csv(tmp_path), base, output) == 0
    model, checkpoint = load_checkpoint(output)  # the one checkpoint format, loaded safely
    assert model.cfg.num_classes == 2 and checkpoint["tokenizer"] == "gpt2"
    report = checkpoint["classifier"]
    assert report["label_names"] == ["fruit", "vegetable"] and report["accuracy"]["train"] == 1.0
    assert set(report["accuracy"]) == {"train", "val", "test"} and report["trainable_parameters"] > 0
    capsys.readouterr()
    texts = ["Apples are sweet number 99", "Carrots grow underground number 98"]
    assert main(["classify", "--checkpoint", str(output), *texts]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == ["fruit", "vegetable"]
    probabilities = torch.softmax(classify_texts(model, gpt2_tokenizer(), texts), dim=-1).max(dim=-1).values
    assert [line.split("\t")[1] for line in lines] == [f"{p:.3f}" for p in probabilities.tolist()]


def test_classify_reads_a_file_and_truncates_long_texts(tmp_path, base, capsys):
    output = tmp_path / "clf.pt"
    assert train(good_csv(tmp_path), base, output) == 0
    long_text = "Apples are sweet " * 20  # 60 tokens, the context is 16
    texts = write_csv(tmp_path, f"{long_text}\n\nCarrots\n", name="texts.txt")  # blank lines are skipped
    capsys.readouterr()
    assert main(["classify", "--checkpoint", str(output), "--input", str(texts)]) == 0
    captured = capsys.readouterr()
    assert "1 of 2 texts are longer than the model's 16 tokens" in captured.err
    assert len(captured.out.strip().splitlines()) == 2
    model, _ = load_checkpoint(output)
    tokenizer = gpt2_tokenizer()
    first_16 = tokenizer.decode(tokenizer.encode(long_text)[:16])
    logits = classify_texts(model, tokenizer, [long_text, first_16])
    assert torch.allclose(logits[0], logits[1], atol=1e-5)  # the documented truncation: the first 16 tokens


def test_lora_checkpoint_is_a_plain_model(tmp_path, base):
    output = tmp_path / "lora.pt"
    assert train(good_csv(tmp_path), base, output, "--layers", "lora", "--lora-rank", "2") == 0
    model, checkpoint = load_checkpoint(output)
    assert checkpoint["classifier"]["layers"] == "lora"
    assert not any("lora" in key for key in model.state_dict())


@pytest.mark.parametrize(
    "csv_text, fragments",
    [
        ("sentence,category\nhello,a\n", ["lacks the column(s) 'text', 'label'", "text,label"]),
        ("text,label\nfine,a\n   ,b\nok,a\n", ["empty text in row 3"]),
        ("text,label\nfine,a\nalso fine,\nok,b\n", ["no label in row 3"]),
        ("text,label\n" + "".join(f"text {i},spam\n" for i in range(10)), ["every row has the label 'spam'"]),
        ("", ["lacks the column(s)", "the file is empty"]),
    ],
    ids=["no columns", "empty text", "missing label", "one class", "empty file"],
)
def test_bad_csv_fails_in_one_line_and_keeps_the_saved_file(tmp_path, base, capsys, csv_text, fragments):
    output = tmp_path / "clf.pt"
    output.write_bytes(b"the user's earlier classifier")
    assert train(write_csv(tmp_path, csv_text), base, output) == 1
    one_line_error(capsys, *fragments)
    assert output.read_bytes() == b"the user's earlier classifier"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base.pt", "clf.pt", "data.csv"]


def test_more_classes_than_the_head(tmp_path, capsys):
    torch.manual_seed(0)
    two_classes = save_checkpoint(tmp_path / "two.pt", make_classifier(GPTModel(TINY), 2), tokenizer="gpt2")
    rows = "".join(f"text number {i},{'abc'[i % 3]}\n" for i in range(30))
    assert train(write_csv(tmp_path, "text,label\n" + rows), two_classes, tmp_path / "clf.pt") == 1
    one_line_error(capsys, "3 classes, more than the 2", "leave out --base")
    assert not (tmp_path / "clf.pt").exists()


def test_output_may_not_replace_the_base(tmp_path, base, capsys):
    before = base.read_bytes()
    assert train(good_csv(tmp_path), base, base) == 1
    one_line_error(capsys, "is the base model itself")
    assert base.read_bytes() == before


def test_classify_bad_input(tmp_path, base, capsys):
    assert main(["classify", "--checkpoint", str(base), "some text"]) == 1
    one_line_error(capsys, "is a language model, not a classifier", "train-classifier")
    output = tmp_path / "clf.pt"
    assert train(good_csv(tmp_path), base, output) == 0
    capsys.readouterr()
    assert main(["classify", "--checkpoint", str(output), "fine", "  "]) == 1
    one_line_error(capsys, "text 2 is empty")
    assert main(["classify", "--checkpoint", str(output)]) == 1
    one_line_error(capsys, "no texts to classify")
    assert main(["classify", "--checkpoint", str(tmp_path / "missing.pt"), "text"]) == 1
    one_line_error(capsys, "no checkpoint at")
