"""Light types shared by the loader and its callers (no torch import here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class ModelLoadError(RuntimeError):
    """A model cannot be loaded; the message is one line saying which model and what to do."""


@dataclass
class LoadedModel:
    """A model ready for generation or training, with its tokenizer and load measurements.

    `info` keys: load_time_s, n_params, n_trainable_params, footprint_bytes, device, dtype, quant,
    init, label, source, hub_id, path, adapter, tokenizer_source, prompt_style (and vocab_resized for init=random
    when the tokenizer outgrows the architecture's vocabulary).
    """

    model: Any
    tokenizer: Any
    info: dict[str, Any] = field(default_factory=dict)


def trainable_dtype(model: Any) -> str:
    """The dtype the trainable parameters are held in ("bfloat16", "float32", ...; "a+b" when mixed).

    Not always the adapter dtype peft gives: TRL's trainers cast them to bf16 on a quantized base.
    """
    names = sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters() if p.requires_grad})
    return "+".join(names) or "none"
