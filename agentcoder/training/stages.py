"""Stage reuse: DPO, PPO and GRPO start from the LoRA (SFT) stage trained on the same model, quant,
data, data_fraction and seed, and a grid trains each such stage once.

Every completed `method=lora` run registers its best adapter under a key: a hash of exactly the
settings that decide the adapter (model, quant, data, data_fraction, seed, method.lora,
method.train, eval.max_new_tokens for val selection).  A later method asks `sft_adapter(cfg, record)`:
the registered adapter if one exists, otherwise the stage is trained inside the run, in
`<run_dir>/sft_stage/` (a complete lora run dir of its own), and registered.  A file lock per key
keeps two parallel jobs from training the same stage.  Registrations live in
`<cache_dir>/stages/sft-<key>.json`.  `start_policy` is what a staged recipe calls: the stage's
adapter loaded trainable (method.init=sft), or the bare base and a fresh LoRA (method.init=base).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

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
    from agentcoder.config import CONF_DIR, LoraMethod, TrainParams, sft_train_params

    train = OmegaConf.merge(OmegaConf.structured(TrainParams), OmegaConf.load(CONF_DIR / "training" / "default.yaml"))
    train = sft_train_params(cfg, train)
    method = OmegaConf.merge(OmegaConf.structured(LoraMethod), {"lora": cfg.method.lora, "train": train})
    stage = OmegaConf.merge(cfg, {"model": {"adapter": None}})
    OmegaConf.set_struct(stage, False)
    stage.method = method
    return stage


def stage_key(lora_cfg: DictConfig) -> str:
    """The registry key of the adapter a method=lora config trains."""
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
    """Record a completed lora run's best adapter as the SFT stage of its settings."""
    key = stage_key(cfg)
    atomic_write_json(_registry(cfg, key), {"key": key, "adapter": str(Path(adapter).resolve()),
                                            "run_dir": str(Path(run_dir).resolve())})


def find_sft(cfg: DictConfig) -> dict[str, Any] | None:
    """The registered SFT stage for a staged method's CFG, if its adapter is still there."""
    entry = read_json(_registry(cfg, stage_key(sft_stage_config(cfg))))
    if entry and (Path(entry["adapter"]) / "adapter_config.json").is_file():
        return entry
    return None


def sft_adapter(cfg: DictConfig, record: RunRecord) -> tuple[Path, bool]:
    """(adapter dir, trained in this run) for a staged method: reuse the registered stage or train it."""
    from filelock import FileLock

    stage_cfg = sft_stage_config(cfg)
    key = stage_key(stage_cfg)
    lock = _registry(cfg, key).with_suffix(".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock)):
        entry = find_sft(cfg)
        if entry is not None:
            print(f"[{cfg.method.name}] SFT stage reused: {entry['adapter']}")
            record.update(stage={"key": key, "sft_adapter": entry["adapter"], "sft_run_dir": entry["run_dir"],
                                 "trained_here": False})
            return Path(entry["adapter"]), False
        from agentcoder.methods import lora

        stage_dir = record.dir / STAGE_SUBDIR
        print(f"[{cfg.method.name}] no SFT stage with key {key}: training it in {stage_dir}")
        with RunRecord.start(stage_dir, stage_cfg, {"overrides": [f"(SFT stage of {record.dir})"]}) as stage:
            result = lora.run(stage_cfg, stage)  # registers itself
            stage.complete(result.to_metrics())
        adapter = Path(result.artifacts["adapter"])
        record.update(stage={"key": key, "sft_adapter": str(adapter), "sft_run_dir": str(stage_dir),
                             "trained_here": True})
        return adapter, True


def start_policy(cfg: DictConfig, record: RunRecord, tag: str) -> tuple[Base, Any, dict[str, Any]]:
    """The base with the policy to train: the SFT stage's adapter, trainable (method.init=sft), or
    the bare base plus a fresh LoRA config (method.init=base).  Also the stage's details."""
    from agentcoder.training.adapters import load_policy

    if cfg.method.init == "base":
        base, peft_config = load_policy(cfg, record, tag)
        return base, peft_config, {"init": "base"}
    adapter, trained_here = sft_adapter(cfg, record)
    base, peft_config = load_policy(cfg, record, tag, adapter=adapter, mode="continue")
    return base, peft_config, {"init": "sft", "sft_adapter": str(adapter), "sft_trained_here": trained_here}
