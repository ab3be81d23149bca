"""reuse_freed_memory: a training step reuses the blocks the previous step freed, instead of page-faulting in
fresh memory from the operating system."""

import platform
import subprocess
import sys

import pytest

from llm_course import cpu_memory, reuse_freed_memory

# Twelve AdamW steps of a small model with GPT-2's vocabulary (its logits and their gradients are 51 MB
# each); prints the page faults of each step.
PROGRAM = """
import resource, sys, torch
import torch.nn.functional as F
from llm_course import GPTConfig, GPTModel, reuse_freed_memory
if sys.argv[1] == "reuse":
    assert reuse_freed_memory()
torch.manual_seed(0)
model = GPTModel(GPTConfig(emb_dim=32, n_heads=2, n_layers=1, context_length=32))
optimizer = torch.optim.AdamW(model.parameters())
tokens = torch.randint(0, 50257, (8, 32))
for _ in range(12):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    F.cross_entropy(model(tokens).flatten(0, 1), tokens.flatten()).backward()
    optimizer.step()
    optimizer.zero_grad()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults_per_step(mode: str) -> list[int]:
    result = subprocess.run([sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True, check=True)
    return [int(line) for line in result.stdout.split()]


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="needs Linux with glibc")
def test_training_steps_reuse_freed_memory():
    default = page_faults_per_step("default")
    if min(default[4:]) < 1_000:
        # Huge pages (transparent_hugepage=always) or a preloaded caching allocator: nothing to improve.
        pytest.skip("this system's allocator already avoids page faults on freed memory")
    reuse = page_faults_per_step("reuse")
    # After a few steps of warm-up the heap holds every block a step needs.
    assert sum(reuse[4:]) < sum(default[4:]) / 4


def test_other_platforms_are_left_alone(monkeypatch):
    monkeypatch.setattr(cpu_memory.sys, "platform", "darwin")
    assert reuse_freed_memory() is False
    monkeypatch.setattr(cpu_memory.sys, "platform", "win32")
    assert reuse_freed_memory() is False


def test_a_linux_without_glibc_is_left_alone(monkeypatch):
    def no_glibc(name):
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(cpu_memory.sys, "platform", "linux")
    monkeypatch.setattr(cpu_memory.ctypes, "CDLL", no_glibc)
    assert reuse_freed_memory() is False


class FakeLibc:
    """A glibc whose mallopt accepts the first `accepted` settings and records every call."""

    def __init__(self, accepted):
        self.accepted, self.calls = accepted, []

        def mallopt(parameter, value):
            self.calls.append((parameter, value))
            return 1 if len(self.calls) <= self.accepted else 0

        self.mallopt = mallopt


@pytest.mark.parametrize("accepted", [0, 1, 2])
def test_the_setting_is_all_or_nothing(monkeypatch, accepted):
    libc = FakeLibc(accepted)
    monkeypatch.setattr(cpu_memory.sys, "platform", "linux")
    monkeypatch.setattr(cpu_memory.ctypes, "CDLL", lambda name: libc)
    assert reuse_freed_memory() is (accepted == 2)
    mmap, trim = cpu_memory._M_MMAP_THRESHOLD, cpu_memory._M_TRIM_THRESHOLD
    limit, default = cpu_memory._REUSE_LIMIT, cpu_memory._DEFAULT_MMAP_THRESHOLD
    expected = {
        0: [(mmap, limit)],  # refused at once: nothing else is tried
        1: [(mmap, limit), (trim, limit), (mmap, default)],  # the second refused: the first is undone
        2: [(mmap, limit), (trim, limit)],
    }[accepted]
    assert libc.calls == expected
