"""Special-token fixes shared by the embedded conversion and every load."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agentcoder.models.base import ModelLoadError

CHATML_END = "<|im_end|>"


def fix_special_tokens(tokenizer: Any) -> Any:
    """Make a ChatML tokenizer end turns with <|im_end|>, pad on the left, and add no special
    tokens of its own; returns it.

    The SmolLM2 GGUF names <|im_start|> as eos and has no pad token: generation then never
    stops at the end of the assistant turn.  Left padding because batched generation appends
    to the right end of every row.
    """
    own_special_tokens_off(tokenizer)
    if CHATML_END in tokenizer.get_vocab():
        tokenizer.eos_token = CHATML_END
        tokenizer.pad_token = CHATML_END
    elif tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def sync_generation_config(model: Any, tokenizer: Any, overrides: Mapping[str, Any] | None = None) -> None:
    """Point the model's generation stop/pad ids at the tokenizer's, then apply config overrides.

    The model's own eos ids are kept next to the tokenizer's (Qwen stops on <|endoftext|> too).
    """
    gen = model.generation_config
    own = gen.eos_token_id
    own_ids = [] if own is None else ([own] if isinstance(own, int) else list(own))
    eos_ids = [tokenizer.eos_token_id] + [i for i in own_ids if i != tokenizer.eos_token_id]
    gen.eos_token_id = eos_ids[0] if len(eos_ids) == 1 else eos_ids
    gen.pad_token_id = tokenizer.pad_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    for key, value in dict(overrides or {}).items():
        setattr(gen, key, value)


def own_special_tokens_off(tokenizer: Any) -> None:
    """The rendered prompt is the whole input, special tokens included (a chat template writes its
    `{{ bos_token }}`, data/prompts.py's plain format its BOS): the tokenizer must add none itself.

    TRL tokenizes string prompts with the tokenizer's special tokens (SFT, DPO and GRPO datasets),
    evaluation with add_special_tokens=False: a template that writes BOS (DeepSeek-Coder, Llama) under
    a tokenizer with add_bos_token=true trained on two BOS tokens and was evaluated on one.  Switching
    the tokenizer's own BOS/EOS off makes both tokenizations the same ids.
    """
    if not _adds_own(tokenizer):
        return
    for flag in ("add_bos_token", "add_eos_token"):
        try:
            setattr(tokenizer, flag, False)  # a fast tokenizer rebuilds its post-processor without them
        except AttributeError:
            pass
    if _adds_own(tokenizer):
        raise ModelLoadError(
            f"tokenizer {type(tokenizer).__name__} adds special tokens that add_bos_token/add_eos_token do not "
            "switch off: training (TRL) and evaluation would tokenize prompts differently"
        )


def _adds_own(tokenizer: Any) -> bool:
    probe = "probe"
    return tokenizer(probe)["input_ids"] != tokenizer(probe, add_special_tokens=False)["input_ids"]
