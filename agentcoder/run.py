"""The one entrypoint: compose -> validate -> seed -> dispatch to the method -> write records.

    python -m agentcoder.run method=lora quant=4bit
    python -m agentcoder.run -m method=baseline,lora data_fraction=0.1,1.0

Everything before dispatch stays free of torch so that `--help`, `--cfg job` and config errors
answer in about a second.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from agentcoder.config import ConfigError, config_hash, validate
from agentcoder.preflight import CONF_DIR, check_overrides, split_argv
from agentcoder.tracking.callbacks import CURRENT_SWEEP, summarise_sweep
from agentcoder.tracking.records import RunRecord, mark_skipped


def seed_everything(seed: int) -> None:
    """python, numpy, torch and every CUDA device (transformers' set_seed)."""
    from transformers import set_seed

    set_seed(seed)


def _hydra_facts() -> tuple[Path, dict]:
    hc = HydraConfig.get()
    facts = {
        "choices": {k: v for k, v in OmegaConf.to_container(hc.runtime.choices).items() if not k.startswith("hydra/")},
        "overrides": list(hc.overrides.task),
        "job_num": hc.job.get("num"),
    }
    return Path(hc.runtime.output_dir), facts


def run_task(raw_cfg: DictConfig) -> float | None:
    """One job: validate, record, dispatch to the method; returns the run's `eval.objective` metric
    (what an optimizing sweeper such as Optuna maximises), None for a skipped job."""
    cfg = validate(raw_cfg)
    run_dir, facts = _hydra_facts()

    previous = RunRecord.previous(run_dir)
    if cfg.resume and previous and previous.get("status") == "completed":
        if previous.get("config_hash") == config_hash(cfg):
            mark_skipped(run_dir)
            print(f"[agentcoder] skip {run_dir}: already completed with the same config (resume=false re-runs)")
            return None

    from agentcoder.methods import load_method

    with RunRecord.start(run_dir, cfg, facts) as record:
        seed_everything(cfg.seed)
        result = load_method(cfg.method.name).run(cfg, record)
        record.complete(result.to_metrics())
    return result.objective(cfg.eval.objective)


task = hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")(run_task)


def main() -> None:
    overrides, flags = split_argv(sys.argv[1:])
    if not ({"-h", "--help", "--hydra-help", "--info", "-i", "--shell-completion", "-sc"} & set(flags)):
        try:
            extra = check_overrides(CONF_DIR, overrides)
        except ConfigError as err:
            print(f"agentcoder: config error: {err}", file=sys.stderr)
            sys.exit(2)
        sys.argv.extend(extra)
    try:
        task()
    finally:
        if CURRENT_SWEEP:
            counts = summarise_sweep(CURRENT_SWEEP["dir"], CURRENT_SWEEP["started_at"])
            print(
                f"[agentcoder] sweep {CURRENT_SWEEP['dir']}: {counts['completed']} completed, "
                f"{counts['failed']} failed, {counts['skipped']} skipped"
            )


if __name__ == "__main__":
    main()
