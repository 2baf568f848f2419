"""Stage reuse: DPO, PPO and GRPO start from the LoRA (SFT) stage trained on the same model, quant,
data, data_fraction and seed, and a grid trains each such stage once.

A completed lora run's best adapter is registered under a key: a hash of exactly the settings that
decide the adapter (model, quant, data, data_fraction, seed, method.lora, method.train,
eval.max_new_tokens for val selection).  Whoever runs method=lora registers it: the launcher after a
`method=lora` job, `sft_adapter` after training a missing stage.  A staged recipe asks
`sft_adapter(cfg, run_dir)`: the registered adapter if one exists, otherwise the stage is trained
inside the run, in `<run_dir>/sft_stage/` (a complete lora run dir of its own), and registered.
A file lock per key keeps two parallel jobs from training the same stage.  Registrations live in
`<cache_dir>/stages/sft-<key>.json`.  `start_policy` is what a staged recipe calls: the stage's
adapter loaded trainable (method.init=sft), or the bare base and a fresh LoRA (method.init=base).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from agentcoder.config import LoraMethod, sft_train_params, training_defaults
from agentcoder.files import read_json
from agentcoder.tracking.records import RunRecord, atomic_write_json

if TYPE_CHECKING:
    from agentcoder.training.session import Base

STAGE_SUBDIR = "sft_stage"
# What decides the SFT adapter; everything else (eval.limit, paths, the later method) does not.
_KEY_FIELDS = ("model", "quant", "data", "data_fraction", "seed")
_NOT_IN_KEY = ("report_to", "logging_steps")


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


def stage_key(lora_cfg: DictConfig) -> str:
    """The registry key of the adapter a method=lora config trains (the config as asked: `auto`
    lengths stay `auto`, as a staged method's sft_stage_config has them)."""
    plain = {k: OmegaConf.to_container(lora_cfg[k], resolve=True) if OmegaConf.is_config(lora_cfg[k])
             else lora_cfg[k] for k in _KEY_FIELDS}
    plain["method"] = {k: OmegaConf.to_container(lora_cfg.method[k], resolve=True) for k in ("lora", "train")}
    for key in _NOT_IN_KEY:  # logging only: they do not change the adapter
        plain["method"]["train"].pop(key, None)
    plain["eval.max_new_tokens"] = lora_cfg.eval.max_new_tokens
    blob = json.dumps(plain, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _registry(cfg: DictConfig, key: str) -> Path:
    return Path(cfg.cache_dir) / "stages" / f"sft-{key}.json"


def register_sft(cfg: DictConfig, adapter: Path, run_dir: Path) -> None:
    """Record a completed lora run's best ADAPTER as the SFT stage of CFG, the method=lora config as asked."""
    key = stage_key(cfg)
    atomic_write_json(_registry(cfg, key), {"key": key, "adapter": str(Path(adapter).resolve()),
                                            "run_dir": str(Path(run_dir).resolve())})


def find_sft(cfg: DictConfig) -> dict[str, Any] | None:
    """The registered SFT stage for a staged method's CFG, if its adapter is still there."""
    entry = read_json(_registry(cfg, stage_key(sft_stage_config(cfg))))
    if entry and (Path(entry["adapter"]) / "adapter_config.json").is_file():
        return entry
    return None


@dataclass
class SftStage:
    """The SFT stage a staged run starts from."""

    key: str
    adapter: Path
    run_dir: Path  # the lora run that trained it
    trained_here: bool  # inside this run (<run_dir>/sft_stage), not reused

    def figures(self) -> dict[str, Any]:
        """run.json's "stage" section."""
        return {"key": self.key, "sft_adapter": str(self.adapter), "sft_run_dir": str(self.run_dir),
                "trained_here": self.trained_here}


def sft_adapter(cfg: DictConfig, run_dir: Path) -> SftStage:
    """The SFT stage of a staged method's CFG: the registered one, or trained in RUN_DIR/sft_stage
    as a method=lora run of its own, and registered."""
    from filelock import FileLock

    from agentcoder.methods import lora  # here: it loads the trainers, and the registry is read at config time

    stage_cfg = sft_stage_config(cfg)
    key = stage_key(stage_cfg)
    lock = _registry(cfg, key).with_suffix(".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock)):
        entry = find_sft(cfg)
        if entry is not None:
            print(f"[{cfg.method.name}] SFT stage reused: {entry['adapter']}")
            return SftStage(key, Path(entry["adapter"]), Path(entry["run_dir"]), trained_here=False)

        stage_dir = run_dir / STAGE_SUBDIR
        print(f"[{cfg.method.name}] no SFT stage with key {key}: training it in {stage_dir}")
        with RunRecord.start(stage_dir, stage_cfg, {"overrides": [f"(SFT stage of {run_dir})"]}) as stage:
            result = lora.run(stage_cfg, stage)
            adapter = Path(result.artifacts["adapter"])
            register_sft(stage_cfg, adapter, stage_dir)
            stage.complete(result.to_metrics())
        return SftStage(key, adapter, stage_dir, trained_here=True)


def start_policy(cfg: DictConfig, record: RunRecord, tag: str) -> tuple[Base, Any, SftStage | None]:
    """The base with the policy to train and the peft config to hand the trainer: the SFT stage's
    adapter, trainable (method.init=sft; no peft config), or the bare base plus a fresh LoRA config
    (method.init=base; no stage).  The staged recipes' common start, so it records what it chose
    (stage, model, the training setup) in RECORD."""
    from agentcoder.training.adapters import load_policy

    stage = sft_adapter(cfg, record.dir) if cfg.method.init == "sft" else None
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
