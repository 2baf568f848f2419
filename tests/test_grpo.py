"""method=grpo on a tiny Llama: the reward rises on a toy task; a run writes the run files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.helpers import compose_cfg
from tests.test_lora import SIZES, bfcl_cache  # noqa: F401  (module-scoped fixture)


def rl_cfg(method: str, model_dir: Path, cache: tuple[Path, str], *overrides: str) -> Any:
    """A short RL run on the tiny model and the fake BFCL wheel (shared with test_ppo.py)."""
    cache_dir, sha = cache
    return compose_cfg(
        f"method={method}", "model.source=hub", f"model.hub_id={model_dir}",
        f"data.categories=[{','.join(SIZES)}]", f"data.embedded.sha256={sha}", "data_fraction=0.3",
        "eval.limit=4", "eval.max_new_tokens=8", "eval.batch_size=4",
        "method.train.val_limit=4", "method.train.max_length=600", "method.train.report_to=[]",
        "method.train.warmup_ratio=0", "method.train.logging_steps=1",
        *overrides, cache_dir=cache_dir,
    )


def run_method(name: str, cfg: Any, run_dir: Path) -> tuple[dict, dict]:
    from agentcoder.methods import load_method
    from agentcoder.tracking.records import RunRecord

    record = RunRecord.start(run_dir, cfg, {})
    result = load_method(name).run(cfg, record)
    return result.to_metrics(), record.data


def log_lines(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]


def test_grpo_run_from_base_writes_the_run_files(tiny_model_dir, bfcl_cache, tmp_path):  # noqa: F811
    cfg = rl_cfg(
        "grpo", tiny_model_dir, bfcl_cache, "method.init=base", "method.train.max_steps=2",
        "method.train.batch_size=4", "method.grpo.num_generations=2", "method.grpo.max_completion_length=8",
        "method.train.eval_steps=1",
    )
    metrics, data = run_method("grpo", cfg, tmp_path)
    assert metrics["method"] == "grpo" and metrics["training"]["steps"] == 2
    assert metrics["details"]["init"] == "base" and metrics["details"]["grpo"]["num_generations"] == 2
    log = log_lines(tmp_path)
    assert [e["step"] for e in log if "reward" in e] == [1, 2]
    assert all("kl" in e and "reward_std" in e and "entropy" in e for e in log if "reward" in e)
    assert [e["step"] for e in log if "val_exact_match" in e] == [1, 2]
    assert len((tmp_path / "predictions.jsonl").read_text().splitlines()) == 4
    assert (tmp_path / "reward_curve.png").stat().st_size > 1000
    assert metrics["artifacts"]["reward_curve"].endswith("reward_curve.png")
    adapter = tmp_path / "adapter"
    assert (adapter / "adapter_config.json").is_file() and not (adapter / "ref").exists()
    assert data["train"]["n_train"] > 0
