"""Chapter 4 checkpoints: exact round trips, exact resumption, atomic saving and refusing bad files."""

import os
import random
from dataclasses import asdict, fields
from pathlib import Path

import pytest
import torch

from llm_course import (
    CHECKPOINT_FORMAT,
    MODELS_DIR,
    CheckpointError,
    GPTConfig,
    GPTModel,
    TrainingConfig,
    TrainingHistory,
    capture_rng_state,
    create_train_val_loaders,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
    set_seed,
    train_model,
)
from tiny_setup import TINY_CFG as CFG
from tiny_setup import TINY_TEXT as TEXT
from tiny_setup import TOKENIZER


@pytest.fixture
def saved(tmp_path):
    """A checkpoint of a freshly initialized model with an AdamW state after one step, and the model."""
    torch.manual_seed(0)
    model = GPTModel(CFG)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randint(0, 128, (2, 8))).sum().backward()
    optimizer.step()
    path = save_checkpoint(tmp_path / "model.pt", model, optimizer, note="hello")
    return path, model, optimizer


def test_models_dir_is_the_models_folder_of_the_working_directory():
    assert MODELS_DIR == Path("models") and not MODELS_DIR.is_absolute()


@pytest.mark.parametrize("tie_weights", [False, True])
def test_a_round_trip_gives_identical_logits(tmp_path, tie_weights):
    torch.manual_seed(0)
    model = GPTModel(GPTConfig(**{**asdict(CFG), "tie_weights": tie_weights})).eval()
    path = save_checkpoint(tmp_path / "sub" / "model.pt", model, step=7)
    loaded, checkpoint = load_checkpoint(path)
    assert loaded is not model and loaded.cfg == model.cfg and not loaded.training
    assert checkpoint["format_version"] == CHECKPOINT_FORMAT and checkpoint["step"] == 7
    tokens = torch.randint(0, 128, (2, 16))
    assert torch.equal(loaded(tokens), model(tokens))
    assert (loaded.out_head.weight is loaded.embedding.token_embedding.weight) == tie_weights
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # no temporary file left behind


def test_loading_into_a_model_and_an_optimizer_restores_both(saved):
    path, model, optimizer = saved
    torch.manual_seed(1)
    other = GPTModel(CFG)
    other_optimizer = torch.optim.AdamW(other.parameters(), lr=1e-3)
    loaded, checkpoint = load_checkpoint(path, model=other, optimizer=other_optimizer)
    assert loaded is other and checkpoint["note"] == "hello"
    assert all(torch.equal(a, b) for a, b in zip(other.parameters(), model.parameters()))
    state, expected = other_optimizer.state_dict()["state"], optimizer.state_dict()["state"]
    assert state.keys() == expected.keys()
    assert all(torch.equal(state[k]["exp_avg"], expected[k]["exp_avg"]) for k in state)


def test_rng_states_round_trip():
    state = capture_rng_state()
    expected = (random.random(), torch.rand(3))
    random.random(), torch.rand(5)
    restore_rng_state(state)
    assert random.random() == expected[0] and torch.equal(torch.rand(3), expected[1])


def loaders():
    return create_train_val_loaders(TOKENIZER.encode(TEXT), batch_size=4, max_length=8, stride=8)


def train(model, optimizer, losses, max_steps=None, history=None):
    train_loader, val_loader = loaders()
    record = lambda event: event["event"] == "step" and losses.append(event["loss"])  # noqa: E731
    config = TrainingConfig(num_epochs=2, eval_freq=3, eval_iter=2, start_context="The", sample_tokens=3, lr=1e-3,
                            max_steps=max_steps)  # fmt: skip
    return train_model(model, train_loader, val_loader, optimizer, config, tokenizer=TOKENIZER, progress=False,
                       callbacks=[record], history=history)  # fmt: skip


def new_run(seed):
    set_seed(seed)
    model = GPTModel(CFG)  # dropout 0.1: the losses depend on the RNG state
    return model, torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)


def same_history(a: TrainingHistory, b: TrainingHistory) -> bool:
    return all(getattr(a, f.name) == getattr(b, f.name) for f in fields(TrainingHistory) if f.name != "epoch_rng_state")


@pytest.mark.parametrize("stop_after", [1, 5, 8, 11])  # 8 steps per epoch: mid-epoch and at the epoch's end
def test_training_resumed_from_a_checkpoint_continues_exactly(tmp_path, stop_after):
    model, optimizer = new_run(seed=0)
    full_losses = []
    full_history = train(model, optimizer, full_losses)
    assert len(full_losses) == 16

    model, optimizer = new_run(seed=0)
    first_losses = []
    history = train(model, optimizer, first_losses, max_steps=stop_after)
    save_checkpoint(tmp_path / "run.pt", model, optimizer, history=asdict(history))
    del model, optimizer
    torch.rand(100), random.random()  # whatever happens in between

    model, optimizer = new_run(seed=99)
    _, checkpoint = load_checkpoint(tmp_path / "run.pt", model=model, optimizer=optimizer)
    restore_rng_state(checkpoint["rng_state"])
    rest_losses = []
    resumed_history = train(model, optimizer, rest_losses, history=TrainingHistory(**checkpoint["history"]))

    assert first_losses + rest_losses == full_losses
    # The first run ended with an evaluation at its last step; evaluating never changes the training.
    extra = resumed_history.steps.index(stop_after) if stop_after not in full_history.steps else None
    if extra is not None:
        for name in ("steps", "tokens_seen", "epochs", "train_losses", "val_losses", "samples"):
            getattr(resumed_history, name).pop(extra)
    assert same_history(resumed_history, full_history)

    # Without the RNG states (dropout masks, shuffle), the continuation differs: the test can tell.
    model, optimizer = new_run(seed=99)
    _, checkpoint = load_checkpoint(tmp_path / "run.pt", model=model, optimizer=optimizer)
    other_losses = []
    train(model, optimizer, other_losses, history=TrainingHistory(**checkpoint["history"]))
    assert other_losses != rest_losses


def test_a_crash_while_saving_leaves_the_previous_checkpoint_intact(saved, monkeypatch):
    path, model, optimizer = saved
    before = path.read_bytes()

    def crashing_save(obj, file, *args, **kwargs):
        file.write(before[: len(before) // 2])  # half a checkpoint, then the disk fills up
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", crashing_save)
    torch.manual_seed(5)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(path, GPTModel(CFG), optimizer)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]
    loaded, _ = load_checkpoint(path)
    assert all(torch.equal(a, b) for a, b in zip(loaded.parameters(), model.parameters()))


def test_a_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at .*llm-course train"):
        load_checkpoint(tmp_path / "nothing.pt")


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[: len(data) // 2],  # truncated
        lambda data: data[:100],
        lambda data: b"",
        lambda data: bytes(range(256)) * 40,  # not a checkpoint at all
        lambda data: data[-2000:] + data[:-2000],  # bytes moved around: no valid archive
    ],
    ids=["half", "first-100-bytes", "empty", "garbage", "scrambled"],
)
def test_damaged_files_are_refused(saved, damage):
    path = saved[0]
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CheckpointError, match="not a readable checkpoint \\((empty|[0-9,]+ bytes, truncated or corrupt)\\): save") as error:
        load_checkpoint(path)
    assert "zip" not in str(error.value).lower() and "PytorchStreamReader" not in str(error.value)  # no torch internals


class RunsCode:
    """A pickle payload that, when unpickled without weights_only, writes a file (stands in for malware)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('code ran')",)


def test_a_pickle_that_would_run_code_is_refused_and_nothing_runs(saved, tmp_path):
    path, model, _ = saved
    marker = tmp_path / "marker.txt"
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["history"] = RunsCode(marker)
    torch.save(checkpoint, path)

    with pytest.raises(CheckpointError, match="could run code"):
        load_checkpoint(path)
    assert not marker.exists()

    torch.load(path, weights_only=False)  # the unsafe way really runs the payload
    assert marker.read_text() == "code ran"


def rewrite(path, change):
    checkpoint = torch.load(path, weights_only=True)
    change(checkpoint)
    torch.save(checkpoint, path)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c["model_config"].update(emb_dim=32), "weights do not fit"),
        (lambda c: c["model_config"].update(n_layers=2), "weights do not fit"),
        (lambda c: c["model_config"].update(n_heads=3), "cannot build"),
        (lambda c: c["model_config"].update(flash=True), r"another version of llm-course.*does not know \(flash\)"),
        (lambda c: c["model_config"].update(vocab_size=10**13), r"weights do not fit.*of another shape"),
        (lambda c: c.update(format_version=99), "format 99"),
        (lambda c: c.pop("model_state"), "lacks model_state"),
        (lambda c: c.pop("format_version"), "not an llm-course checkpoint"),
    ],
    ids=["wider", "deeper", "bad-heads", "unknown-field", "huge-vocab", "future-format", "no-weights", "foreign"],
)
def test_incompatible_checkpoints_are_refused(saved, change, message):
    path = saved[0]
    rewrite(path, change)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_a_checkpoint_does_not_load_into_a_different_model_or_optimizer(saved):
    path = saved[0]
    other = GPTModel(GPTConfig(**{**asdict(CFG), "emb_dim": 32}))
    with pytest.raises(CheckpointError, match="differs from the given model"):
        load_checkpoint(path, model=other)
    model = GPTModel(CFG)
    wrong = torch.optim.AdamW([*model.parameters()][:3])
    with pytest.raises(CheckpointError, match="optimizer state does not fit"):
        load_checkpoint(path, model=model, optimizer=wrong)
    with pytest.raises(ValueError, match="pass the model"):
        load_checkpoint(path, optimizer=torch.optim.AdamW(model.parameters()))


def test_a_checkpoint_without_optimizer_state_cannot_resume(tmp_path):
    model = GPTModel(CFG)
    path = save_checkpoint(tmp_path / "weights.pt", model)
    with pytest.raises(CheckpointError, match="without an optimizer state"):
        load_checkpoint(path, model=GPTModel(CFG), optimizer=torch.optim.AdamW(model.parameters()))


def test_extra_values_must_be_plain_data(tmp_path):
    model = GPTModel(CFG)
    with pytest.raises(TypeError, match="asdict"):
        save_checkpoint(tmp_path / "a.pt", model, history=TrainingHistory())
    with pytest.raises(ValueError, match="model_state"):
        save_checkpoint(tmp_path / "a.pt", model, model_state={})
    assert not (tmp_path / "a.pt").exists()


def as_format_1(checkpoint):
    """What llm-course 0.1 wrote: separate query, key and value projections in every attention layer."""
    state = checkpoint["model_state"]
    for key in [key for key in state if ".att.W_qkv." in key]:
        prefix, suffix = key.split("W_qkv.")
        for name, part in zip(("W_query", "W_key", "W_value"), state.pop(key).chunk(3)):
            state[f"{prefix}{name}.{suffix}"] = part.clone()
    checkpoint["format_version"] = 1


def test_a_format_1_checkpoint_loads_its_weights_but_does_not_resume(saved):
    path, model, _ = saved
    rewrite(path, as_format_1)
    assert any(".att.W_query.weight" in key for key in torch.load(path, weights_only=True)["model_state"])
    loaded, _ = load_checkpoint(path)
    tokens = torch.randint(0, CFG.vocab_size, (2, 8))
    torch.testing.assert_close(loaded(tokens), model.eval()(tokens), rtol=0, atol=0)
    fresh = GPTModel(CFG)
    with pytest.raises(CheckpointError, match="format 1.*optimizer state cannot resume"):
        load_checkpoint(path, model=fresh, optimizer=torch.optim.AdamW(fresh.parameters()))


def test_a_huge_stored_vocabulary_is_refused_before_any_memory_is_allocated(saved):
    path = saved[0]
    rewrite(path, lambda c: c["model_config"].update(vocab_size=10**13))  # 10^13 x 16 floats: 640 TB
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(CheckpointError, match="weights do not fit"):
        load_checkpoint(path)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 500_000  # KiB: nothing near its size


def test_files_of_saves_killed_midway_are_cleaned_up(saved):
    path, model, optimizer = saved
    dead = path.parent / f".{path.name}.999999999.abcd.tmp"  # a process id that cannot be running
    dead.write_bytes(b"half a checkpoint" * 1000)
    alive = path.parent / f".{path.name}.{os.getppid()}.efgh.tmp"  # another save, still running
    alive.write_bytes(b"in progress")
    save_checkpoint(path, model, optimizer)
    assert not dead.exists() and alive.exists()
    assert sorted(p.name for p in path.parent.iterdir()) == sorted([path.name, alive.name])
