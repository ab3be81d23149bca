"""Train a tiny GPT for a few dozen steps and write its losses to a JSON file (used by test_distributed.py).

Started by torchrun, each process trains with DDP on its shard of every batch, and rank 0 writes the file.
Run alone (or through `train`), one process trains on the same data with batches world_size times larger:
the two runs should follow the same losses.

    python -m torch.distributed.run --nproc_per_node=2 tests/ddp_worker.py OUT.json BATCH_PER_PROCESS [ACCUMULATE]

Under DDP the file also counts the gradient exchanges (all-reduces of a gradient bucket).
"""

import json
import sys

import numpy as np
import torch

from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

from llm_course import GPTConfig, GPTModel, TrainingConfig, create_train_val_loaders, train_model
from llm_course.distributed import close_distributed, init_distributed, is_distributed_launch, shard_loaders, wrap_model

VOCAB, CONTEXT = 50, 8


def train(out_path: str, batch_size: int, accumulate_steps: int = 1) -> None:
    context = init_distributed("cpu") if is_distributed_launch() else None
    rank, world_size = (context.rank, context.world_size) if context else (0, 1)
    try:
        tokens = np.random.default_rng(0).integers(0, VOCAB, size=1200)  # 119 training, 29 validation windows
        train_loader, val_loader = create_train_val_loaders(tokens, batch_size=batch_size, max_length=CONTEXT, train_ratio=0.8)
        train_loader, val_loader = shard_loaders(train_loader, val_loader, rank=rank, world_size=world_size, seed=7)
        torch.manual_seed(0)  # the same initial weights in every process (DDP would copy rank 0's anyway)
        cfg = GPTConfig(vocab_size=VOCAB, context_length=CONTEXT, emb_dim=16, n_heads=2, n_layers=1, drop_rate=0.0)
        model = GPTModel(cfg)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        step_losses = []
        exchanges = []
        if context is not None:
            model = wrap_model(model, context)

            def counting_allreduce(state, bucket):
                exchanges.append(bucket.index())
                return allreduce_hook(state, bucket)

            model.register_comm_hook(None, counting_allreduce)

        def record(event):
            if event["event"] == "step":
                step_losses.append(event["loss"])

        config = TrainingConfig(num_epochs=2, eval_freq=5, eval_iter=2, accumulate_steps=accumulate_steps, lr=1e-2)
        history = train_model(model, train_loader, val_loader, optimizer, config, callbacks=[record], progress=False,
                              distributed=context)  # fmt: skip
        if rank == 0:
            result = {
                "world_size": world_size,
                "step_losses": step_losses,
                "eval_steps": history.steps,
                "train_losses": history.train_losses,
                "val_losses": history.val_losses,
                "total_tokens": history.total_tokens,
                "global_steps": history.global_step,
                "exchanges": len(exchanges),
                "buckets": len(set(exchanges)),
            }
            with open(out_path, "w") as f:
                json.dump(result, f)
        if context is not None:
            context.barrier()  # leave together: a process that quits while another still talks to it can crash
    finally:
        close_distributed()


if __name__ == "__main__":
    train(sys.argv[1], *map(int, sys.argv[2:]))
