"""Corpora (BFCL embedded, xLAM from the hub), their splits, and the shared prompt renderer.

Nothing here imports torch, transformers or datasets at import time (the xLAM reader imports
`datasets` when called), so that `python -m agentcoder.run --help` stays fast.
"""

from agentcoder.data.example import DataError, Example, GoldCall, ToolCall
from agentcoder.data.loader import Splits, load_examples, load_splits
from agentcoder.data.prompts import render_prompt, render_target
from agentcoder.data.rows import PromptFormat

__all__ = [
    "DataError", "Example", "GoldCall", "PromptFormat", "Splits", "ToolCall", "load_examples", "load_splits",
    "render_prompt", "render_target",
]
