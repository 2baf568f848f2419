"""Stage reuse: DPO, PPO and GRPO start from the LoRA (SFT) stage trained on the same model, quant,
data, data_fraction and seed, and a grid trains each such stage once.

A staged recipe asks `sft_adapter(cfg, run_dir)`: the adapter registered for its stage's settings
(methods/registry.py) if one exists, otherwise the stage is trained inside the run, in
`<run_dir>/sft_stage/` (a complete lora run dir of its own), and registered, under the stage's lock
so that a parallel lora or staged job of the same settings waits for it instead of training it too.
`start_policy` is what a staged recipe calls: the stage's adapter loaded trainable (method.init=sft),
or the bare base and a fresh LoRA (method.init=base).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from agentcoder import ranks
from agentcoder.config import LoraMethod, sft_train_params, training_defaults
from agentcoder.methods.registry import SftStage, lookup, register_sft, stage_key, stage_lock
from agentcoder.tracking.records import RunRecord

if TYPE_CHECKING:
    from agentcoder.tracking.result import MethodResult
    from agentcoder.training.session import Base

# How a stage is trained when none is registered: methods/lora.fit_adapter, handed in by the recipe
# (this module sits below lora.py, whose continued-SFT arm starts from a stage too).
FitStage = Callable[[DictConfig, RunRecord], "MethodResult"]

STAGE_SUBDIR = "sft_stage"


def sft_stage_config(cfg: DictConfig) -> DictConfig:
    """The method=lora config of the stage a staged method (dpo/ppo/grpo) starts from: the run's
    model, quant, data, fraction and seed; its LoRA shape; lora's default training settings with
    the run's `sft_train` on top (what a method=lora run of the same config trains with)."""
    train = sft_train_params(cfg, training_defaults())
    method = OmegaConf.merge(OmegaConf.structured(LoraMethod), {"lora": cfg.method.lora, "train": train})
    stage = OmegaConf.merge(cfg, {"model": {"adapter": None}})
    OmegaConf.set_struct(stage, False)
    stage.method = method
    return stage


def find_sft(cfg: DictConfig) -> dict[str, Any] | None:
    """The registered SFT stage for a staged method's CFG, if its adapter is still there."""
    return lookup(cfg, stage_key(sft_stage_config(cfg)))


def sft_adapter(cfg: DictConfig, run_dir: Path, fit: FitStage) -> SftStage:
    """The SFT stage of a staged method's CFG: the registered one, or trained by FIT in
    RUN_DIR/sft_stage as a method=lora run of its own, and registered."""
    stage_cfg = sft_stage_config(cfg)
    key = stage_key(stage_cfg)
    # Under several processes rank 0 holds the lock and decides; every rank then trains the stage with it.
    with stage_lock(cfg, key, run_dir, str(cfg.method.name)):
        entry = ranks.broadcast(lookup(cfg, key) if ranks.is_main() else None)
        if entry is not None:
            print(f"[{cfg.method.name}] SFT stage reused: {entry['adapter']}")
            return SftStage.registered(entry)

        stage_dir = run_dir / STAGE_SUBDIR
        print(f"[{cfg.method.name}] no SFT stage with key {key}: training it in {stage_dir}")
        with RunRecord.start(stage_dir, stage_cfg, {"overrides": [f"(SFT stage of {run_dir})"]}) as stage:
            result = fit(stage_cfg, stage)
            adapter = Path(result.artifacts["adapter"])
            if ranks.is_main():
                register_sft(stage_cfg, adapter, stage_dir)
            stage.complete(result.to_metrics())
        return SftStage(key, adapter, stage_dir, trained_here=True)


def start_policy(cfg: DictConfig, record: RunRecord, tag: str, fit: FitStage) -> tuple[Base, Any, SftStage | None]:
    """The base with the policy to train and the peft config to hand the trainer: the SFT stage's
    adapter, trainable (method.init=sft; no peft config), or the bare base plus a fresh LoRA config
    (method.init=base; no stage).  The staged recipes' common start, so it records what it chose
    (stage, model, the training setup) in RECORD."""
    from agentcoder.training.adapters import load_policy

    stage = sft_adapter(cfg, record.dir, fit) if cfg.method.init == "sft" else None
    if stage is None:
        base, peft_config = load_policy(cfg, record.dir, tag)
    else:
        record.update(stage=stage.figures())
        base, peft_config = load_policy(cfg, record.dir, tag, adapter=stage.adapter, mode="continue")
    record.update(model=base.info, train=base.figures())
    return base, peft_config, stage


def start_details(stage: SftStage | None) -> dict[str, Any]:
    """metrics.json's details of where a staged policy started."""
    if stage is None:
        return {"init": "base"}
    return {"init": "sft", "sft_adapter": str(stage.adapter), "sft_trained_here": stage.trained_here}
