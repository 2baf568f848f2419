"""Stage reuse: a staged method finds the lora run of the same model/quant/data/fraction/seed only."""

from __future__ import annotations

from pathlib import Path

from agentcoder.methods.stages import find_sft, register_sft, sft_stage_config, stage_key
from tests.helpers import compose_cfg


def fake_lora_run(cfg, run_dir: Path) -> Path:
    adapter = run_dir / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.safetensors").write_bytes(b"")
    register_sft(cfg, adapter, run_dir)
    return adapter


def test_staged_methods_find_the_matching_lora_run_only(tmp_path):
    common = ("data_fraction=0.1", "seed=3")
    lora = compose_cfg("method=lora", *common, cache_dir=tmp_path)
    adapter = fake_lora_run(lora, tmp_path / "lora_run")

    for method in ("dpo", "ppo", "grpo"):
        staged = compose_cfg(f"method={method}", *common, "eval.limit=7", cache_dir=tmp_path)
        assert stage_key(sft_stage_config(staged)) == stage_key(lora)
        assert find_sft(staged)["adapter"] == str(adapter.resolve())

    for other in (("data_fraction=0.5", "seed=3"), ("data_fraction=0.1", "seed=4"),
                  (*common, "quant=4bit"), (*common, "method.lora.r=8")):
        assert find_sft(compose_cfg("method=dpo", *other, cache_dir=tmp_path)) is None, other
    # A lora run trained differently is a different stage; one that only logged differently is the same.
    tuned = compose_cfg("method=lora", *common, "method.train.lr=1e-3", cache_dir=tmp_path)
    assert stage_key(tuned) != stage_key(lora)
    quiet = compose_cfg("method=lora", *common, "method.train.report_to=[]", "method.train.logging_steps=1",
                        cache_dir=tmp_path)
    assert stage_key(quiet) == stage_key(lora)


def test_a_vanished_adapter_is_not_reused(tmp_path):
    import shutil

    lora = compose_cfg("method=lora", cache_dir=tmp_path)
    adapter = fake_lora_run(lora, tmp_path / "run")
    shutil.rmtree(adapter)
    assert find_sft(compose_cfg("method=dpo", cache_dir=tmp_path)) is None


def test_a_registered_adapter_without_its_weights_or_an_entry_without_one_is_trained_again(tmp_path, capsys):
    """The weights file gone (adapter_config.json kept), or an entry that names no adapter: the lookup
    says which file is gone or which registry entry lacks what, and treats the stage as missing."""
    import json

    from agentcoder.methods.registry import _entry_path

    lora = compose_cfg("method=lora", cache_dir=tmp_path)
    dpo = compose_cfg("method=dpo", cache_dir=tmp_path)
    adapter = fake_lora_run(lora, tmp_path / "run")
    assert find_sft(dpo) is not None
    (adapter / "adapter_model.safetensors").unlink()
    assert find_sft(dpo) is None
    entry = _entry_path(lora, stage_key(lora))
    said = capsys.readouterr().out
    weights = adapter.resolve() / "adapter_model.safetensors"
    assert f"{entry} registers {adapter.resolve()}, but {weights} is gone" in said
    assert "training it again" in said

    entry.write_text(json.dumps({"key": stage_key(lora), "run_dir": str(tmp_path / "run")}))
    assert find_sft(dpo) is None
    assert f"{entry} has no 'adapter'; not reused" in capsys.readouterr().out


def test_a_job_waits_for_the_stage_lock_and_stops_waiting_when_its_holder_went_stale(tmp_path, monkeypatch, capsys):
    """The lock is held by another process (here one that sleeps) for a run whose record says running
    but whose process is gone, as after a kill on another host: the waiter says what it waits for,
    then stops with an error instead of waiting forever."""
    import json
    import subprocess
    import sys

    import pytest

    from agentcoder.methods import registry

    monkeypatch.setattr(registry, "WAIT_POLL_S", 0.1)
    cfg = compose_cfg("method=lora", cache_dir=tmp_path)
    key = stage_key(cfg)
    entry = tmp_path / "stages" / f"sft-{key}.json"
    entry.parent.mkdir(parents=True)
    hold = ("import sys, time; from filelock import FileLock; lock = FileLock(sys.argv[1]); lock.acquire(); "
            "print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(entry.with_suffix(".lock"))], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
        holder_run = tmp_path / "holder_run"
        holder_run.mkdir()
        import platform

        (holder_run / "run.json").write_text(json.dumps({"status": "running", "pid": int(dead.stdout), "host":
                                                         platform.node(), "started_at": "2026-01-01T00:00:00+00:00"}))
        entry.with_suffix(".holder.json").write_text(json.dumps({"run_dir": str(holder_run), "pid": 1, "host": "h"}))
        with pytest.raises(RuntimeError, match="stopped without a final status"):
            with registry.stage_lock(cfg, key, tmp_path / "waiter", "dpo"):
                pass
        assert f"SFT stage {key} is being trained by {holder_run}" in capsys.readouterr().out
    finally:
        holder.kill()
        holder.wait()
