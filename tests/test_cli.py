"""The `llm-course` command: training end to end, generating from the checkpoint, help and one-line errors."""

import re
import subprocess
import sys

import pytest

from llm_course import (
    TrainingConfig,
    course_tokenizer,
    create_train_val_loaders,
    fine_tuning_base,
    generate,
    gpt2_tokenizer,
    load_checkpoint,
    load_corpus,
    text_to_token_ids,
    token_ids_to_text,
)
from llm_course import cli
from llm_course.checkpoints import MODELS_DIR
from llm_course.cli import MODEL_SIZES, main
from llm_course.pipeline import BASE_PRESET_NAME, PRESETS, QUICK_BASE_ENV

TINY_RUN = "train --corpus tiny --model-size tiny --epochs 1 --eval-freq 4 --eval-iter 2 --max-new-tokens 8"
TINY_RUN = (TINY_RUN + " --context-length 16").split()


def test_train_writes_checkpoint_plot_and_sample_to_models_and_prints_the_sample(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(TINY_RUN) == 0
    out, err = capsys.readouterr()
    models = tmp_path / "models"
    assert sorted(p.name for p in models.iterdir()) == ["gpt-course-loss.png", "gpt-course-sample.txt", "gpt-course.pt"]
    assert (models / "gpt-course-loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    sample = (models / "gpt-course-sample.txt").read_text(encoding="utf-8").rstrip("\n")
    assert sample.startswith("Fellow-Citizens of the Senate and House of Representatives:")
    assert out.rstrip("\n").endswith(sample)  # the run ends by printing the generated text
    assert "step     4" in out and "training" in err  # evaluation lines, and tqdm's bar on stderr

    model, checkpoint = load_checkpoint(models / "gpt-course.pt")
    assert model.cfg == MODEL_SIZES["tiny"][1]()
    history = checkpoint["training"]["history"]
    ids = gpt2_tokenizer().encode(load_corpus("tiny"))
    train_loader, _ = create_train_val_loaders(ids, batch_size=8, max_length=16)  # the course's batches
    steps = len(train_loader)
    expected_steps = list(range(0, steps + 1, 4)) + ([steps] if steps % 4 else [])  # every 4 steps and at the end
    assert history["global_step"] == steps and history["steps"] == expected_steps
    assert checkpoint["training"]["run"]["corpus"] == "tiny" and checkpoint["tokenizer"] == "gpt2"
    assert checkpoint["training"]["config"]["max_length"] == 16
    assert checkpoint["optimizer_state"]["param_groups"][0]["lr"] == 5e-4

    # generate: greedy by default, so its output is the library's greedy continuation.
    checkpoint_path = str(models / "gpt-course.pt")
    args = ["generate", "--checkpoint", checkpoint_path, "--prompt", "The people", "--max-new-tokens", "6"]
    assert main(args) == 0
    printed = capsys.readouterr().out.rstrip("\n")
    tokenizer = gpt2_tokenizer()
    expected = token_ids_to_text(generate(model, text_to_token_ids("The people", tokenizer), 6), tokenizer)
    assert printed == expected and printed.startswith("The people")

    sampled = []
    for _ in range(2):
        args = ["generate", "--prompt", "The", "--temperature", "1.5", "--top-k", "50", "--top-p", "0.9", "--seed", "3"]
        assert main(args) == 0  # the default checkpoint: models/gpt-course.pt
        sampled.append(capsys.readouterr().out)
    assert sampled[0] == sampled[1] and sampled[0].startswith("The")


def test_train_on_a_text_file_into_a_chosen_checkpoint_path(tmp_path, capsys):
    text_file = tmp_path / "mine.txt"
    text_file.write_text("The quick brown fox jumps over the lazy dog. " * 40, encoding="utf-8")
    target = tmp_path / "out" / "fox.pt"
    options = "--model-size tiny --epochs 1 --context-length 16 --batch-size 4 --eval-freq 50 --max-new-tokens 3"
    options += " --quiet"
    args = ["train", "--text", str(text_file), "--output", str(target), *options.split()]
    assert main(args) == 0
    assert sorted(p.name for p in target.parent.iterdir()) == ["fox-loss.png", "fox-sample.txt", "fox.pt"]
    _, checkpoint = load_checkpoint(target)
    text = text_file.read_text(encoding="utf-8")
    n_tokens = len(gpt2_tokenizer().encode(text[: int(0.9 * len(text))]))
    windows = (n_tokens - 17) // 16 + 1  # windows of 16 (+1 target) tokens, side by side
    assert checkpoint["training"]["history"]["global_step"] == windows // 4
    out, err = capsys.readouterr()
    assert "step " not in out and "training:" not in err  # --quiet: no evaluation lines, no progress bar


def test_the_course_tokenizer_trains_is_recorded_and_decodes_generate_and_a_resume_keeps_it(tmp_path, capsys):
    target = tmp_path / "course.pt"
    options = "--corpus tiny --model-size tiny --epochs 1 --context-length 16 --eval-freq 50 --max-new-tokens 3 --quiet"
    assert main(["train", "--tokenizer", "course", "--output", str(target), *options.split()]) == 0
    model, checkpoint = load_checkpoint(target)
    assert checkpoint["tokenizer"] == checkpoint["training"]["run"]["tokenizer"] == "course-bpe-4096"
    tokenizer = course_tokenizer()
    assert model.cfg.vocab_size == tokenizer.n_vocab == 4096
    ids = tokenizer.encode(load_corpus("tiny"))
    train_loader, _ = create_train_val_loaders(ids, batch_size=8, max_length=16)  # windows of the course's tokens
    assert checkpoint["training"]["history"]["global_step"] == len(train_loader)
    capsys.readouterr()

    assert main(["generate", "--checkpoint", str(target), "--prompt", "The people", "--max-new-tokens", "6"]) == 0
    expected = token_ids_to_text(generate(model, text_to_token_ids("The people", tokenizer), 6), tokenizer)
    assert capsys.readouterr().out.rstrip("\n") == expected  # decoded with the checkpoint's tokenizer

    assert main(["train", "--resume", str(target), "--tokenizer", "gpt2", "--quiet"]) == 1
    assert "--tokenizer gpt2 differs from the resumed run's course-bpe-4096" in capsys.readouterr().err


def test_preset_base_sets_the_run_and_typed_options_still_apply(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    calls = []
    monkeypatch.setattr(cli, "pretrain", lambda config, **run: calls.append((config, run)))
    assert main(["train", "--preset", "base"]) == 0
    assert main(["train", "--preset", "base", "--max-steps", "7", "--tokenizer", "gpt2", "--corpus", "small"]) == 0
    (preset, preset_run), (typed, typed_run) = calls
    assert preset_run["model_size"] == "base" and preset_run["corpus"] == "full"
    assert preset_run["tokenizer"] == "course-bpe-4096" and preset_run["output"] == MODELS_DIR / BASE_PRESET_NAME
    assert preset == TrainingConfig(**PRESETS["base"]["training"]) and preset.max_length == 128
    assert typed.max_steps == 7 and typed.lr == preset.lr and typed.min_lr == preset.min_lr
    assert typed_run["tokenizer"] == "gpt2" and typed_run["corpus"] == "small" and typed_run["model_size"] == "base"


def test_a_small_preset_base_run_is_the_base_that_fine_tuning_uses(tmp_path, monkeypatch):
    monkeypatch.delenv(QUICK_BASE_ENV, raising=False)
    options = "--model-size tiny --corpus tiny --context-length 16 --max-steps 2 --warmup-steps 0 --eval-iter 1"
    options += " --max-new-tokens 2"
    options += f" --output {tmp_path / BASE_PRESET_NAME} --quiet"
    assert main(["train", "--preset", "base", *options.split()]) == 0
    model, tokenizer, description = fine_tuning_base(models_dir=tmp_path)
    assert tokenizer.name == "course-bpe-4096" and model.cfg.vocab_size == 4096
    assert "preset base model" in description


def test_python_dash_m_runs_the_same_command():
    result = subprocess.run([sys.executable, "-m", "llm_course", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "train" in result.stdout and "generate" in result.stdout


TRAIN_OPTIONS = "--corpus --text --epochs --batch-size --context-length --stride --model-size --lr --device --seed"
TRAIN_OPTIONS += " --output --eval-freq --eval-iter --weight-decay --train-ratio --prompt --max-new-tokens --quiet"
TRAIN_OPTIONS += " --tokenizer --preset"
GENERATE_OPTIONS = "--checkpoint --prompt --max-new-tokens --temperature --top-k --top-p --seed --device"


@pytest.mark.parametrize("command, options", [("train", TRAIN_OPTIONS.split()), ("generate", GENERATE_OPTIONS.split())])
def test_help_describes_every_option(command, options, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert [option for option in options if option not in text] == []
    if command == "train":
        assert all(f"  {size} " in text for size in MODEL_SIZES)  # each model size is described


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["fly"],
        ["train", "--bogus"],
        ["train", "--epochs", "0"],
        ["train", "--epochs", "two"],
        ["train", "--batch-size", "-4"],
        ["train", "--corpus", "huge"],
        ["train", "--model-size", "gpt5"],
        ["train", "--context-length", "65"],
        ["train", "--lr", "0"],
        ["train", "--lr", "nan"],
        ["train", "--train-ratio", "1"],
        ["train", "--device", "tpu"],
        ["train", "--corpus", "tiny", "--text", "mine.txt"],
        ["train", "--prompt", ""],
        ["train", "--tokenizer", "bert"],
        ["train", "--preset", "huge"],
        ["train", "--preset", "base", "--resume", "models/gpt-course.pt"],
        ["generate"],
        ["generate", "--prompt", ""],
        ["generate", "--prompt", "x", "--top-p", "0"],
        ["generate", "--prompt", "x", "--temperature", "-1"],
        ["generate", "--prompt", "x", "--top-k", "0"],
    ],
    ids=lambda args: " ".join(args) or "no-command",
)
def test_bad_arguments_get_a_one_line_error_and_exit_status_2(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("llm-course: error: ")


@pytest.mark.parametrize(
    "args, message",
    [
        (["generate", "--checkpoint", "{tmp}/missing.pt", "--prompt", "x"], "no checkpoint at"),
        (["train", "--text", "{tmp}/missing.txt"], "no text file at"),
        (["train", "--text", "{tmp}/short.txt", "--model-size", "tiny"], "split .* is too short"),
        (["generate", "--checkpoint", "{tmp}/short.txt", "--prompt", "x"], "not a readable checkpoint"),
    ],
    ids=["missing-checkpoint", "missing-text", "short-text", "not-a-checkpoint"],
)
def test_failures_get_a_one_line_error_and_exit_status_1(tmp_path, monkeypatch, args, message, capsys):
    monkeypatch.chdir(tmp_path)  # train creates models/ in the working directory before it reads the text
    (tmp_path / "short.txt").write_text("Too short to train on.", encoding="utf-8")
    assert main([arg.format(tmp=tmp_path) for arg in args]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("llm-course: error: ")
    assert re.search(message, err)
