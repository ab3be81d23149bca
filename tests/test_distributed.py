"""Chapter 5 data-parallel training: shards that add up to the single-process batches, clear errors, and two
CPU processes under torchrun that follow the losses of one process with the same global batch."""

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

from llm_course import GPTConfig, GPTModel, TrainingConfig, create_train_val_loaders, load_checkpoint, train_model
from llm_course.distributed import init_distributed, is_distributed_launch, shard_loaders

WORKER = Path(__file__).with_name("ddp_worker.py")
needs_gloo = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="this PyTorch build has no torch.distributed with the gloo backend, which CPU processes need",
)


def loaders(batch_size, n_tokens=1200):
    tokens = np.arange(n_tokens)  # ids equal positions, so each window is known by its first id
    return create_train_val_loaders(tokens, batch_size=batch_size, max_length=8, stride=8, train_ratio=0.8)


def first_ids(batch):
    return sorted(batch[0][:, 0].tolist())


def test_shards_together_make_the_single_process_batches():
    (single, single_val) = shard_loaders(*loaders(8), rank=0, world_size=1, seed=3)
    shards = [shard_loaders(*loaders(4), rank=rank, world_size=2, seed=3) for rank in (0, 1)]
    orders = []
    for epoch in (0, 1):
        for loader in [single] + [train for train, _ in shards]:
            loader.sampler.set_epoch(epoch)
        seen = set()
        for batch, batch_0, batch_1 in zip(single, shards[0][0], shards[1][0], strict=True):
            assert not set(first_ids(batch_0)) & set(first_ids(batch_1))  # each process its own windows
            assert first_ids(batch) == sorted(first_ids(batch_0) + first_ids(batch_1))
            seen.update(first_ids(batch))
        assert len(seen) == len(single) * 8
        orders.append([first_ids(batch) for batch in single])
    assert orders[0] != orders[1]  # a new shuffle each epoch
    for batch, batch_0, batch_1 in zip(single_val, shards[0][1], shards[1][1]):
        assert first_ids(batch) == sorted(first_ids(batch_0) + first_ids(batch_1))
        break  # full batches agree; the last ones differ by the padding


def test_too_little_data_for_the_processes_is_a_clear_error():
    train_loader, val_loader = loaders(8)  # 119 training windows, 29 validation windows
    with pytest.raises(ValueError, match="119 windows, too few for 16 processes with batch_size=8"):
        shard_loaders(train_loader, val_loader, rank=0, world_size=16)
    train_loader, val_loader = loaders(1)
    with pytest.raises(ValueError, match="validation split has 29 windows, fewer than the 32 processes"):
        shard_loaders(train_loader, val_loader, rank=0, world_size=32)


def test_train_model_reshuffles_each_epoch_through_the_sampler():
    train_loader, val_loader = shard_loaders(*loaders(16, n_tokens=600), rank=0, world_size=1)
    torch.manual_seed(0)
    model = GPTModel(GPTConfig(vocab_size=600, context_length=8, emb_dim=8, n_heads=2, n_layers=1))
    optimizer = torch.optim.AdamW(model.parameters())
    epochs = []
    record = lambda event: epochs.append(train_loader.sampler.epoch) if event["event"] == "step" else None  # noqa: E731
    config = TrainingConfig(num_epochs=3, eval_freq=100, eval_iter=1)
    train_model(model, train_loader, val_loader, optimizer, config, callbacks=[record], progress=False)
    steps = len(train_loader)
    assert epochs == [0] * steps + [1] * steps + [2] * steps


def test_outside_torchrun(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    assert not is_distributed_launch()
    with pytest.raises(ValueError, match="RANK, WORLD_SIZE.*torchrun --nproc_per_node=N"):
        init_distributed("cpu")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(args, cwd, timeout=120, check=True):
    env = dict(os.environ, OMP_NUM_THREADS="1")  # 2 processes on 2 cores: one thread each
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}"]
    result = subprocess.run(command + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


@needs_gloo
def test_two_processes_follow_the_losses_of_one_with_the_same_global_batch(tmp_path):
    torchrun([str(WORKER), str(tmp_path / "ddp.json"), "4"], cwd=tmp_path)  # 2 processes x 4 windows
    spec = importlib.util.spec_from_file_location("ddp_worker", WORKER)
    worker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(worker)
    worker.train(str(tmp_path / "single.json"), 8)  # 1 process x 8 windows, here
    ddp, single = (json.loads((tmp_path / name).read_text()) for name in ("ddp.json", "single.json"))
    assert (ddp["world_size"], single["world_size"]) == (2, 1)
    assert len(ddp["step_losses"]) == len(single["step_losses"]) == 28  # 2 epochs of 119 // 8 steps
    np.testing.assert_allclose(ddp["step_losses"], single["step_losses"], rtol=0, atol=1e-4)
    assert max(single["step_losses"]) - min(single["step_losses"]) > 0.05  # the batches really differ
    assert ddp["eval_steps"] == single["eval_steps"] and ddp["total_tokens"] == single["total_tokens"]
    np.testing.assert_allclose(ddp["val_losses"], single["val_losses"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(ddp["train_losses"], single["train_losses"], rtol=0, atol=1e-4)


@needs_gloo
def test_accumulation_under_ddp_exchanges_gradients_once_per_step(tmp_path):
    # 2 processes x 2 windows x 2 micro-batches: the same global batch of 8 windows as one process x 8.
    torchrun([str(WORKER), str(tmp_path / "ddp.json"), "2", "2"], cwd=tmp_path)
    spec = importlib.util.spec_from_file_location("ddp_worker", WORKER)
    worker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(worker)
    worker.train(str(tmp_path / "single.json"), 8)
    ddp, single = (json.loads((tmp_path / name).read_text()) for name in ("ddp.json", "single.json"))
    np.testing.assert_allclose(ddp["step_losses"], single["step_losses"], rtol=0, atol=1e-4)
    assert ddp["global_steps"] == single["global_steps"] == 28
    assert ddp["exchanges"] == ddp["global_steps"] * ddp["buckets"]  # not once per micro-batch


@needs_gloo
def test_the_train_command_under_torchrun_writes_once_from_rank_0(tmp_path):
    (tmp_path / "text.txt").write_text("The people of the states met in the hall. " * 120, encoding="utf-8")
    args = "-m llm_course train --text text.txt --model-size tiny --epochs 1 --batch-size 4 --eval-freq 5 --eval-iter 1"
    args += " --context-length 16"
    args += " --prompt The --max-new-tokens 4 --device cpu --quiet --output out/run.pt"
    result = torchrun(args.split(), tmp_path)
    assert result.stdout.count("Training the tiny model") == 1 and result.stdout.count("Trained for") == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["run-loss.png", "run-sample.txt", "run.pt"]
    _, checkpoint = load_checkpoint(tmp_path / "out" / "run.pt")
    history = checkpoint["training"]["history"]
    # Each step: 2 processes x 4 windows x 16 tokens.
    assert history["global_step"] > 0 and history["total_tokens"] == history["global_step"] * 2 * 4 * 16


@needs_gloo
def test_ctrl_c_in_one_process_stops_all_and_the_run_resumes_exactly(tmp_path):
    # Dropout is on (the tiny model's 0.1), so each process's own random stream must be resumed too.
    (tmp_path / "text.txt").write_text("The people of the states met in the hall. " * 120, encoding="utf-8")
    run = "train --text text.txt --model-size tiny --epochs 2 --batch-size 4 --eval-freq 5 --eval-iter 1 --context-length 16"
    run += " --prompt The --max-new-tokens 4 --device cpu --quiet"
    script = str(Path(__file__).with_name("ddp_ctrl_c.py"))
    torchrun([script, "0", *run.split(), "--output", "full/run.pt"], tmp_path)
    cut = torchrun([script, "3", *run.split(), "--output", "cut/run.pt"], tmp_path, check=False)
    assert cut.returncode != 0 and "Interrupted after step 3 of" in cut.stderr
    resume_hint = "Continue with `torchrun --nproc_per_node=2 -m llm_course train --resume cut/run-interrupted.pt`"
    assert resume_hint in cut.stderr
    assert cut.stderr.count("stopping after this step") <= 1  # only rank 0 speaks (here rank 1 got the signal)
    assert not (tmp_path / "cut" / "run.pt").exists()
    _, interrupted = load_checkpoint(tmp_path / "cut" / "run-interrupted.pt")
    training = interrupted["training"]
    assert training["history"]["global_step"] == 3 and len(training["rank_rng_states"]) == 2
    torchrun([script, "0", "train", "--resume", "cut/run-interrupted.pt", "--quiet"], tmp_path)
    _, full = load_checkpoint(tmp_path / "full" / "run.pt")
    _, resumed = load_checkpoint(tmp_path / "cut" / "run.pt")
    assert resumed["training"]["history"]["global_step"] == full["training"]["history"]["global_step"] > 3
    assert resumed["training"]["history"]["train_losses"] == full["training"]["history"]["train_losses"]
    assert all(torch.equal(a, b) for a, b in zip(resumed["model_state"].values(), full["model_state"].values()))
