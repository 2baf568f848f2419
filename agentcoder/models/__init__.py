"""Model loading: embedded SmolLM2 or hub/local checkpoints, bitsandbytes quantization, random init.

Kept light: the heavy modules (torch, transformers) load on first use of a function, so that
`python -m agentcoder.run --help` and config validation stay fast.
"""

from __future__ import annotations

from typing import Any

from agentcoder.models.base import LoadedModel, ModelLoadError

__all__ = ["LoadedModel", "ModelLoadError", "load_model", "load_tokenizer", "resolve_model_path"]

_LAZY = {"load_model", "load_tokenizer", "resolve_model_path"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from agentcoder.models import loader

        return getattr(loader, name)
    raise AttributeError(f"module 'agentcoder.models' has no attribute {name!r}")
