"""A toy RL task for the tiny model: reward = the share of ASCII letters in an 8-token completion.

The tiny random Llama's completions are ~60% letters (the rest bytes, digits, punctuation); a
policy that learns from the reward writes more letters within a few updates.  Large learning
rates, so that a few seeded iterations suffice on a CPU.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

from tests.helpers import save_random_adapter

TOY_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"]
TOY_PROMPTS = [{"prompt": f"<|im_start|>user\nquestion {i}<|im_end|>\n<|im_start|>assistant\n"} for i in range(16)]


def letter_share(completions: list[str], **_: Any) -> list[float]:
    """The toy reward, in TRL's reward signature."""
    return [sum(c in string.ascii_letters for c in text) / max(1, len(text)) for text in completions]


def toy_lora() -> Any:
    """LoRA on every linear layer and the LM head (which moves the near-uniform output fastest)."""
    from peft import LoraConfig

    return LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=TOY_TARGETS, task_type="CAUSAL_LM")


def toy_model(model_dir: Path, seed: int = 0) -> Any:
    from transformers import AutoModelForCausalLM, set_seed

    set_seed(seed)
    return AutoModelForCausalLM.from_pretrained(model_dir)


def rose(rewards: list[float], margin: float) -> bool:
    """The mean reward of the last two iterations exceeds that of the first two by MARGIN."""
    first, last = sum(rewards[:2]) / 2, sum(rewards[-2:]) / 2
    return last > first + margin


def register_fake_sft(cfg: Any, run_dir: Path) -> Path:
    """Save a LoRA with non-zero B matrices and register it as the SFT stage of CFG (a staged
    method's config), so that a run with method.init=sft reuses it instead of training one."""
    from agentcoder.methods.stages import register_sft, sft_stage_config

    stage_cfg = sft_stage_config(cfg)
    adapter = save_random_adapter(stage_cfg, run_dir / "adapter", std=0.1)
    register_sft(stage_cfg, adapter, run_dir)
    return adapter
