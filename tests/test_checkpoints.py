"""Checkpoints of a loop of our own (training/checkpoints.py): where a loop goes on from, the
damaged ones named and passed over, and every RNG it draws from saved and restored."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from agentcoder.training import checkpoints
from agentcoder.training.checkpoints import read_part, restore_rng_states, resume_point, rng_states

STATE = "state.pt"


def write_state(step: int):
    def write(target: Path) -> None:
        torch.save({"step": step, "weights": torch.arange(1000.0)}, target / STATE)
    return write


def read(target: Path) -> dict:
    return read_part(target / STATE, lambda f: torch.load(f, weights_only=True))


def cut_in_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def saved(tmp_path: Path, *steps: int, config_hash: str = "abc") -> Path:
    folder = tmp_path / "checkpoints"
    for step in steps:
        checkpoints.save(folder, step, write_state(step), config_hash)
    return folder


def test_the_last_two_whole_checkpoints_stay(tmp_path):
    folder = saved(tmp_path, 1, 2, 3)
    assert checkpoints.steps(folder) == [2, 3]
    (folder / "iter-9").mkdir()  # a folder without its manifest was never finished
    assert checkpoints.steps(folder) == [2, 3]


def test_a_damaged_newest_checkpoint_is_named_and_the_one_before_it_is_used(tmp_path, capsys):
    folder = saved(tmp_path, 1, 2)
    cut_in_half(folder / "iter-2" / STATE)
    target, state = resume_point(folder, read, "abc", resume=True, tag="ppo")
    assert target == folder / "iter-1" and state["step"] == 1
    said = capsys.readouterr().out
    assert f"checkpoint {folder / 'iter-2'} is damaged ({folder / 'iter-2' / STATE}: " in said
    assert f"resuming from {folder / 'iter-1'}, the newest checkpoint that reads back whole" in said


def test_when_every_checkpoint_is_damaged_each_file_is_named(tmp_path):
    folder = saved(tmp_path, 1, 2)
    for step in (1, 2):
        cut_in_half(folder / f"iter-{step}" / STATE)
    with pytest.raises(RuntimeError, match="every checkpoint in .* is damaged") as err:
        resume_point(folder, read, "abc", resume=True, tag="ppo")
    assert str(folder / "iter-1" / STATE) in str(err.value) and str(folder / "iter-2" / STATE) in str(err.value)
    assert "resume=false starts the run over" in str(err.value)


@pytest.mark.parametrize(("resume", "config_hash", "why"), [
    (False, "abc", "resume=false; starting over"),
    (True, "other", "written by a run of another config (abc != other); starting over"),
])
def test_resume_false_or_another_config_starts_over(tmp_path, capsys, resume, config_hash, why):
    folder = saved(tmp_path, 1, 2)
    assert resume_point(folder, read, config_hash, resume=resume, tag="ppo") is None
    assert why in capsys.readouterr().out and checkpoints.steps(folder) == []


class StandInCuda:
    """torch.cuda on a machine with two GPUs, as far as the RNG states go (only a GPU could show it)."""

    def __init__(self) -> None:
        self.states = [torch.tensor([1, 2], dtype=torch.uint8), torch.tensor([3, 4], dtype=torch.uint8)]
        self.restored = None

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: len(self.states))
        monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [s.clone() for s in self.states])
        monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: setattr(self, "restored", states))


def test_every_rng_is_saved_and_restored_cuda_devices_included(monkeypatch):
    cuda = StandInCuda()
    cuda.install(monkeypatch)
    states = rng_states()
    draws = (random.random(), np.random.rand(), torch.rand(1).item())
    random.random(), np.random.rand(), torch.rand(1)  # the RNGs move on
    restore_rng_states(states)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == draws
    assert [s.tolist() for s in cuda.restored] == [[1, 2], [3, 4]]


def test_cuda_states_of_another_device_count_are_not_restored_and_that_is_said(monkeypatch, capsys):
    cuda = StandInCuda()
    cuda.install(monkeypatch)
    states = rng_states()
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    restore_rng_states(states)
    assert cuda.restored is None and "saved with 2 CUDA devices, resumed with 1" in capsys.readouterr().out
