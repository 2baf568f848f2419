"""Which GPUs a job gets, on a machine that reports N of them (a stand-in nvidia-smi: no GPU here).

hydra/launcher=local gives each job the machine's GPUs and one of them to run on; plain python on a
node with several GPUs trains on one (not DataParallel over all, which the record would not count).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from agentcoder import config
from tests.helpers import CONF_DIR
from tests.test_launcher import launch


@pytest.fixture
def gpus(tmp_path, monkeypatch):
    """gpus(n): the machine reports N GPUs through nvidia-smi, and CUDA_VISIBLE_DEVICES is unset."""

    def report(n: int) -> Path:
        smi = tmp_path / "bin" / "nvidia-smi"
        smi.parent.mkdir(exist_ok=True)
        smi.write_text("#!/bin/sh\n" + "".join(f"echo {i}\n" for i in range(n)))
        smi.chmod(smi.stat().st_mode | stat.S_IEXEC)
        monkeypatch.setenv("PATH", f"{smi.parent}{os.pathsep}{os.environ['PATH']}")
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        monkeypatch.delenv("WORLD_SIZE", raising=False)
        monkeypatch.setattr(config, "_SAID", set())
        return smi.parent

    return report


def _hydra(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True).hydra


def test_local_launcher_gives_jobs_the_machines_gpus_one_each(gpus, monkeypatch, capsys):
    gpus(4)
    hydra = _hydra("hydra/launcher=local", "hydra.job.num=6")
    launcher = {key: hydra.launcher[key] for key in ("gpus_per_node", "timeout_min", "cpus_per_task")}
    # Before: gpus_per_node 0 (submitit then set CUDA_VISIBLE_DEVICES=""), timeout_min 60, cpus_per_task 1.
    assert launcher["gpus_per_node"] == 4
    assert launcher["timeout_min"] >= 7 * 24 * 60 and launcher["cpus_per_task"] is None
    # submitit starts each job with CUDA_VISIBLE_DEVICES=0,1,2,3; job 6 of the sweep runs on GPU 2.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    assert dict(hydra.job.env_set) == {"CUDA_VISIBLE_DEVICES": "2"}
    assert "4 GPUs visible; this job uses GPU 2" in capsys.readouterr().out


def test_local_launcher_without_gpus_hides_nothing_and_slurm_keeps_its_own(gpus):
    gpus(0)
    hydra = _hydra("hydra/launcher=local", "hydra.job.num=1")
    assert hydra.launcher.gpus_per_node == 0 and dict(hydra.job.env_set) == {}
    gpus(8)
    slurm = _hydra("hydra/launcher=slurm").launcher
    assert slurm.gpus_per_node == 1 and slurm.timeout_min == 240 and slurm.cpus_per_task == 8


def test_one_process_uses_one_gpu_unless_launched_on_several(gpus, monkeypatch, capsys):
    gpus(2)
    # Plain python (and the default launcher's in-process sweep): the first GPU, said in one line.
    assert dict(_hydra("hydra.job.num=5").job.env_set) == {"CUDA_VISIBLE_DEVICES": "0"}
    out = capsys.readouterr().out.strip().splitlines()
    assert out == ["[agentcoder] 2 GPUs visible; this job uses GPU 0 (one process, one GPU: accelerate launch "
                   "or torchrun -m agentcoder.run uses several)"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")  # the user's choice is the list picked from
    assert dict(_hydra().job.env_set) == {"CUDA_VISIBLE_DEVICES": "3"}
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert dict(_hydra().job.env_set) == {}
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.setenv("WORLD_SIZE", "2")  # torchrun / accelerate launch: each rank places itself
    assert dict(_hydra().job.env_set) == {}


def test_a_plain_run_on_a_node_with_several_gpus_runs_on_one(gpus, tmp_path):
    """Through the launcher: Hydra sets the job's environment before the task starts."""
    gpus(3)
    proc = launch("method=debug", f"hydra.run.dir={tmp_path / 'run'}",
                  env={"PATH": os.environ["PATH"]})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "3 GPUs visible; this job uses GPU 0" in proc.stdout


def test_a_local_sweep_runs_each_job_on_its_own_gpu(gpus, tmp_path):
    """Through submitit: it starts every job with the machine's GPUs visible, the job takes its own."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    gpus(4)
    sweep = tmp_path / "multirun"
    proc = launch("-m", "hydra/launcher=local", "method=debug", "seed=1,2,3", f"hydra.sweep.dir={sweep}",
                  env={"PATH": os.environ["PATH"]})
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [ln for log in sweep.glob(".submitit/*/*_log.out") for ln in log.read_text().splitlines()
             if "GPUs visible" in ln]
    assert sorted(ln.split("uses GPU ")[1][0] for ln in lines) == ["0", "1", "2"], lines
