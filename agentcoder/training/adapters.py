"""Start training from a saved LoRA adapter (e.g. the SFT stage's) instead of from the bare base.

    mode="continue": the adapter is loaded trainable and training goes on in it; TRL's DPOTrainer
                     then copies it into a frozen reference adapter, so the reference is that policy.
    mode="merge":    the adapter is merged into the base in full precision and a fresh LoRA goes on
                     top.  On a quantized base the merge happens on an unquantized copy, saved as an
                     HF folder in the run dir and loaded back quantized: merging into 4-bit weights
                     would round the adapter's update away.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from agentcoder.training.session import Base, load_base
from agentcoder.training.setup import is_quantized, lora_config

MODES = ("continue", "merge")
MERGED_DIR = "merged_base"


def load_policy(
    cfg: DictConfig, run_dir: Path | None, tag: str, *, adapter: str | Path | None = None, mode: str = "continue",
) -> tuple[Base, Any]:
    """The base ready for training and the peft config to hand the trainer (None: the model already
    carries its trainable adapter).  A quantized merge is saved in RUN_DIR (default: beside ADAPTER)."""
    if mode not in MODES:
        raise ValueError(f"adapter mode {mode!r}; expected one of {', '.join(MODES)}")
    if adapter is None:
        return load_base(cfg, tag), lora_config(cfg)
    adapter = str(Path(adapter).resolve())
    if not Path(adapter, "adapter_config.json").is_file():
        raise FileNotFoundError(f"{adapter} is not a saved peft adapter (no adapter_config.json)")
    base, peft_config = _load_with(cfg, run_dir, tag, adapter, mode)
    base.start_adapter, base.adapter_mode = adapter, mode
    return base, peft_config


def _load_with(cfg: DictConfig, run_dir: Path | None, tag: str, adapter: str, mode: str) -> tuple[Base, Any]:
    if mode == "merge" and is_quantized(cfg):
        folder = merge_to_folder(cfg, adapter, (run_dir or Path(adapter).parent) / MERGED_DIR)
        quantized = OmegaConf.merge(cfg, {"model": {"source": "hub", "hub_id": str(folder), "init": "pretrained"}})
        return load_base(quantized, tag), lora_config(cfg)

    from peft import PeftModel

    base = load_base(cfg, tag)
    if mode == "continue":
        base.model = PeftModel.from_pretrained(base.model, adapter, is_trainable=True)
        return base, None
    base.model = PeftModel.from_pretrained(base.model, adapter).merge_and_unload()
    return base, lora_config(cfg)


def merge_to_folder(cfg: DictConfig, adapter: str, target: Path) -> Path:
    """Base (unquantized) + ADAPTER merged and saved with the tokenizer as an HF folder at TARGET."""
    from peft import PeftModel

    from agentcoder.models import load_model

    if (target / "config.json").is_file():
        return target  # a resumed run merged it already
    plain = OmegaConf.merge(cfg, {"quant": {"name": "none", "load_in_4bit": False, "load_in_8bit": False}})
    loaded = load_model(plain, device="cpu")
    merged = PeftModel.from_pretrained(loaded.model, adapter).merge_and_unload()
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(str(tmp))
    loaded.tokenizer.save_pretrained(str(tmp))
    os.replace(tmp, target)
    return target
