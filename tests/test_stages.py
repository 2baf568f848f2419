"""Stage reuse: a staged method finds the lora run of the same model/quant/data/fraction/seed only."""

from __future__ import annotations

from pathlib import Path

from agentcoder.methods.stages import find_sft, register_sft, sft_stage_config, stage_key
from tests.helpers import compose_cfg


def fake_lora_run(cfg, run_dir: Path) -> Path:
    adapter = run_dir / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}")
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
