"""Careless users and hostile environments (issue 17): the output is checked before training, a resumed run
names what differs, a padded vocabulary decodes, and generated text survives odd consoles and closed pipes."""

import os
import shutil
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import pytest
import torch

from llm_course import GPTConfig, GPTModel, check_checkpoint_location, gpt2_tokenizer, save_checkpoint
from llm_course.cli import main

REPO = Path(__file__).resolve().parent.parent
TINY_RUN = ("train --corpus tiny --model-size tiny --epochs 1 --eval-freq 50 --eval-iter 1 --max-new-tokens 1 "
            "--context-length 16 --max-steps 2 --quiet").split()  # fmt: skip
GPT2_VOCAB = 50257


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("llm-course: error: "), err
    return err


def test_a_folder_in_place_of_the_checkpoint_fails_before_training(tmp_path, capsys):
    (tmp_path / "x.pt").mkdir()
    assert main([*TINY_RUN, "--output", str(tmp_path / "x.pt")]) == 1
    assert "is a folder: give the checkpoint a file name" in one_line_error(capsys)
    assert list((tmp_path / "x.pt").iterdir()) == []


def test_an_unwritable_folder_fails_before_training(tmp_path, monkeypatch, capsys):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("llm_course.checkpoints.tempfile.TemporaryFile", refuse)  # root ignores chmod, so simulate
    trained = []
    monkeypatch.setattr("llm_course.pipeline.train_model", lambda *args, **kwargs: trained.append(1))
    assert main([*TINY_RUN, "--output", str(tmp_path / "ro" / "m.pt")]) == 1
    err = one_line_error(capsys)
    assert "cannot write a checkpoint into" in err and "Permission denied" in err and trained == []


def test_a_full_disk_fails_before_training_and_names_the_space_needed(tmp_path, monkeypatch, capsys):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr("llm_course.checkpoints.shutil.disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    trained = []
    monkeypatch.setattr("llm_course.pipeline.train_model", lambda *args, **kwargs: trained.append(1))
    assert main([*TINY_RUN, "--output", str(tmp_path / "m.pt")]) == 1
    err = one_line_error(capsys)
    assert "no space left" in err and "MB are free" in err and trained == []


def test_check_checkpoint_location_accepts_a_writable_path_and_creates_its_folder(tmp_path):
    path = check_checkpoint_location(tmp_path / "new" / "m.pt", expected_bytes=1)
    assert path.parent.is_dir() and not path.exists()
    assert list(path.parent.iterdir()) == []  # the probe file is gone
    with pytest.raises(OSError, match="no space left"):
        check_checkpoint_location(tmp_path / "m.pt", expected_bytes=shutil.disk_usage(tmp_path).free + 10**12)


def test_resuming_a_checkpoint_of_an_unknown_model_size_names_it(tmp_path, capsys):
    path = tmp_path / "m.pt"
    assert main([*TINY_RUN, "--output", str(path)]) == 0
    capsys.readouterr()
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["training"]["run"]["model_size"] = "colossal"
    torch.save(checkpoint, path)
    assert main(["train", "--resume", str(path)]) == 1
    err = one_line_error(capsys)
    assert "model size 'colossal'" in err and "does not have" in err


@pytest.fixture(scope="module")
def padded_checkpoint(tmp_path_factory) -> Path:
    """A model whose vocabulary is padded to 50,304 rows, rigged so that a padded id always scores highest."""
    torch.manual_seed(0)
    model = GPTModel(GPTConfig(vocab_size=50304, context_length=16, emb_dim=16, n_heads=2, n_layers=1))
    with torch.no_grad():  # the last hidden state becomes all ones, so each logit is its row's sum
        model.final_norm.scale.zero_()
        model.final_norm.shift.fill_(1.0)
        model.out_head.weight[GPT2_VOCAB:] = 1.0  # a sum of 16, far above any real row's
    assert model(torch.tensor([[464]]))[0, -1].argmax() >= GPT2_VOCAB  # unfixed, greedy would pick a padded id
    return save_checkpoint(tmp_path_factory.mktemp("padded") / "padded.pt", model)


def test_a_padded_vocabulary_generates_only_ids_the_tokenizer_has(padded_checkpoint, capsys):
    args = ["generate", "--checkpoint", str(padded_checkpoint), "--prompt", "The", "--max-new-tokens", "5"]
    assert main(args) == 0
    out = capsys.readouterr().out
    model = torch.load(padded_checkpoint, weights_only=True)
    real_rows = GPTModel(GPTConfig(**model["model_config"]))
    real_rows.load_state_dict(model["model_state"])
    ids = torch.tensor([gpt2_tokenizer().encode("The")])
    for _ in range(5):  # greedy over the real tokens only
        logits = real_rows(ids)[:, -1, :GPT2_VOCAB]
        ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
    assert out.rstrip("\n") == gpt2_tokenizer().decode(ids[0].tolist())


def run_generate(checkpoint: Path, prompt: str, max_new_tokens: int, **popen) -> subprocess.Popen:
    command = [sys.executable, "-m", "llm_course", "generate", "--checkpoint", str(checkpoint), "--prompt", prompt,
               "--max-new-tokens", str(max_new_tokens)]  # fmt: skip
    return subprocess.Popen(command, cwd=REPO, stderr=subprocess.PIPE, **popen)


def test_text_a_cp1252_console_cannot_show_is_replaced_not_a_traceback(padded_checkpoint):
    env = {**os.environ, "PYTHONIOENCODING": "cp1252"}
    process = run_generate(padded_checkpoint, "Omega \u03a9 and \u4e2d", 3, stdout=subprocess.PIPE, env=env)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err.decode()
    assert out.decode("cp1252").startswith("Omega ? and ?")


def test_a_closed_pipe_ends_generation_quietly(padded_checkpoint):
    process = run_generate(padded_checkpoint, "The", 2000, stdout=subprocess.PIPE)
    process.stdout.read(1)  # like `| head -c 1`: read a little, then go away
    process.stdout.close()
    err = process.stderr.read().decode()
    assert process.wait(timeout=120) == 0 and err == ""
