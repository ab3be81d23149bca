"""Chapter 7's commands and widget: `llm-course instruct-train`, `llm-course chat` and InstructionChat."""

import io
import json

import pytest
import torch

from llm_course import (
    EOS_ID,
    GPTConfig,
    GPTModel,
    InstructionChat,
    chat_loop,
    eos_id_of,
    generate_response,
    gpt2_tokenizer,
    load_checkpoint,
    save_checkpoint,
)
from llm_course.cli import main

TOKENIZER = gpt2_tokenizer()
ENTRIES = [
    {"instruction": "Add the two numbers.", "input": f"{a} + {b}", "output": str(a + b), "task": "add"}
    for a in range(1, 7)
    for b in range(1, 7)
] + [{"instruction": "Say hello.", "input": "", "output": "Hello!", "task": "free-form"}]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_model(context_length: int = 48) -> GPTModel:
    torch.manual_seed(0)
    return GPTModel(GPTConfig(context_length=context_length, emb_dim=16, n_heads=2, n_layers=1, drop_rate=0.0)).eval()


@pytest.fixture
def checkpoint(tmp_path):
    return save_checkpoint(tmp_path / "tiny.pt", tiny_model(), tokenizer="gpt2")


def write_data(tmp_path, data) -> str:
    path = tmp_path / "data.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return str(path)


def test_the_end_of_text_id_is_the_tokenizers():
    assert eos_id_of(TOKENIZER) == EOS_ID == 50256


def test_chat_answers_one_instruction_as_generate_response_does(checkpoint, capsys):
    args = ["chat", "--checkpoint", str(checkpoint), "--instruction", "Add the two numbers.", "--input", "2 + 3",
            "--max-new-tokens", "5"]  # fmt: skip
    assert main(args) == 0
    model, _ = load_checkpoint(checkpoint)
    expected = generate_response(model.eval(), TOKENIZER, "Add the two numbers.", "2 + 3", max_new_tokens=5)
    assert capsys.readouterr().out == expected + "\n"


def test_the_chat_loop_reads_instructions_and_inputs_until_an_empty_line():
    model = tiny_model()
    out = io.StringIO()
    lines = "Add the two numbers. | 2 + 3\nSay hello.\n\nnever read\n"
    chat_loop(model, TOKENIZER, 4, io.StringIO(lines), out)
    expected = [generate_response(model, TOKENIZER, "Add the two numbers.", "2 + 3", 4),
                generate_response(model, TOKENIZER, "Say hello.", "", 4)]  # fmt: skip
    assert out.getvalue() == "".join(answer + "\n" for answer in expected)


def test_the_chat_loop_reports_a_too_long_instruction_and_goes_on():
    model = tiny_model(context_length=24)
    out = io.StringIO()
    chat_loop(model, TOKENIZER, 2, io.StringIO("word " * 40 + "\nSay hello.\n"), out)
    first, second = out.getvalue().splitlines()[:2]
    assert first.startswith("llm-course: error: entry 0: its prompt is") and "context is 24 tokens" in first
    assert second == generate_response(model, TOKENIZER, "Say hello.", "", 2)


def test_chat_errors_are_one_line(checkpoint, tmp_path, capsys):
    assert main(["chat", "--checkpoint", str(tmp_path / "missing.pt"), "--instruction", "Hi."]) == 1
    assert "missing.pt" in capsys.readouterr().err
    assert main(["chat", "--checkpoint", str(checkpoint), "--instruction", "  "]) == 1
    assert "the instruction is empty" in capsys.readouterr().err
    assert main(["chat", "--checkpoint", str(checkpoint), "--input", "house"]) == 1
    assert "--input needs --instruction" in capsys.readouterr().err


def test_instruct_train_tunes_saves_and_reports(checkpoint, tmp_path, capsys):
    output = tmp_path / "tuned.pt"
    data = write_data(tmp_path, ENTRIES)
    args = ["instruct-train", "--checkpoint", str(checkpoint), "--output", str(output), "--data", data,
            "--max-steps", "3", "--batch-size", "4", "--lr", "1e-3", "--quiet"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "exact match on" in out and "before" in out and "after" in out and "trained 3 steps" in out
    tuned, stored = load_checkpoint(output)
    base, _ = load_checkpoint(checkpoint)
    record = stored["instruction_tuning"]
    assert stored["tokenizer"] == "gpt2" and record["steps"] == 3 and set(record["accuracy_after"]) == {"add"}
    assert not torch.equal(tuned.state_dict()["out_head.weight"], base.state_dict()["out_head.weight"])
    # The tuned checkpoint chats.
    assert main(["chat", "--checkpoint", str(output), "--instruction", "Say hello.", "--max-new-tokens", "3"]) == 0


@pytest.mark.parametrize(
    "data, message",
    [
        ('[{"instruction": "Add.", "input": "1 + 2", "output": "3"},]', "is not valid JSON"),
        ([ENTRIES[0], {"instruction": "Add.", "output": "3"}], "entry 1 has no 'input' field"),
        ([], "the instruction data set is empty"),
        (ENTRIES[:3] + [{"instruction": "Repeat: " + "the people " * 30, "input": "", "output": "ok"}],
         "entry 3: its prompt is"),
    ],
    ids=["malformed JSON", "missing field", "empty", "longer than the context"],
)
def test_instruct_train_names_the_bad_entry(checkpoint, tmp_path, capsys, data, message):
    data_path = write_data(tmp_path, data)
    args = ["instruct-train", "--checkpoint", str(checkpoint), "--output", str(tmp_path / "out.pt"), "--data", data_path,
            "--quiet"]  # fmt: skip
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("llm-course: error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "out.pt").exists()


def test_the_widget_answers_and_lists_its_history():
    model = tiny_model()
    chat = InstructionChat(model, TOKENIZER, max_new_tokens=4, examples=[("Say hello.", "")])
    answer = chat.ask("Add the two numbers.", "2 + 3")
    assert answer == generate_response(model, TOKENIZER, "Add the two numbers.", "2 + 3", 4)
    assert [entry[:2] for entry in chat.history] == [("Say hello.", ""), ("Add the two numbers.", "2 + 3")]
    assert repr(chat).splitlines()[0] == "chat with the model (2 answers)"
    assert f"-> {answer!r}" in repr(chat) and "&lt;" not in repr(chat)
    assert "Add the two numbers." in chat.log.value  # the newest answer is in the widget
    with pytest.raises(ValueError, match="the instruction is empty"):
        chat.ask(" ")
    chat.instruction.value, chat.input.value = "Add the two numbers.", "1 + 1"
    chat.button.click()  # the button answers the boxes and clears the input
    assert chat.history[-1][:2] == ("Add the two numbers.", "1 + 1") and chat.input.value == ""
