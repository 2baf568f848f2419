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
    # The tokens GRPO trained on (prompts and sampled completions, TRL's own count) and their rate.
    t = metrics["training"]
    assert t["train_tokens"] == max(e["num_tokens"] for e in log if "num_tokens" in e) > 0
    assert t["train_tokens_per_s"] > 0


def test_grpo_raises_the_reward_on_a_toy_task(tiny_model_dir, tiny_tokenizer, tmp_path):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from tests.rl_toy import TOY_PROMPTS, letter_share, rose, toy_model

    # Full fine-tuning of the tiny model: TRL refuses LoRA on lm_head, and LoRA on the body alone moves
    # a random model's near-uniform output too slowly for a short test.  4 updates per generation batch.
    args = GRPOConfig(
        output_dir=str(tmp_path), max_steps=24, num_iterations=4, learning_rate=2e-2, lr_scheduler_type="constant",
        per_device_train_batch_size=16, num_generations=8, max_completion_length=8, beta=0.0,
        logging_steps=1, save_strategy="no", report_to="none", seed=0, bf16=False, use_cpu=True,
        disable_tqdm=True,
    )
    trainer = GRPOTrainer(model=toy_model(tiny_model_dir), reward_funcs=letter_share, args=args,
                          train_dataset=Dataset.from_list(TOY_PROMPTS), processing_class=tiny_tokenizer)
    trainer.train()
    rewards = [e["reward"] for e in trainer.state.log_history if "reward" in e]
    assert len(rewards) == 6 and rose(rewards, 0.1), rewards


def test_grpo_from_the_sft_stage_reuses_it_and_keeps_a_frozen_copy(tiny_model_dir, bfcl_cache, tmp_path):  # noqa: F811
    from tests.rl_toy import register_fake_sft

    cfg = rl_cfg(
        "grpo", tiny_model_dir, bfcl_cache, "method.train.max_steps=1", "method.train.batch_size=4",
        "method.grpo.num_generations=2", "method.grpo.max_completion_length=8", "method.train.evaluations=1",
        "eval.limit=2", "method.train.val_limit=2",
    )
    adapter = register_fake_sft(cfg, tmp_path / "lora_run")
    metrics, data = run_method("grpo", cfg, tmp_path / "run")
    assert metrics["details"]["sft_adapter"] == str(adapter.resolve()) and data["stage"]["trained_here"] is False
    assert data["train"]["start_adapter"] == str(adapter.resolve()) and data["train"]["adapter_mode"] == "continue"
    # TRL's reference is a frozen copy of the SFT adapter: identical to the policy at the first step.
    assert [e["kl"] for e in log_lines(tmp_path / "run") if "reward" in e] == [0.0]
    saved = tmp_path / "run" / "adapter"
    assert (saved / "adapter_config.json").is_file() and not (saved / "ref").exists()
