"""TRL dataset rows from examples, through the one renderer (prompts.py) so that training and
evaluation see byte-identical prompts.

A run binds its prompt format once (`PromptFormat(tokenizer, tool_format)`); every method builds
its rows from it:
  * SFT         {"prompt", "completion"}            - the loss falls on the completion only
  * preference  {"prompt", "chosen", "rejected"}    - DPO
  * RL          {"prompt", "gold", "tools", ...}    - the columns the reward reads (JSON strings,
                                                      since tool schemas differ row to row)
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from agentcoder.data.example import Example
from agentcoder.data.prompts import render_prompt, render_target


@dataclass(frozen=True)
class PromptFormat:
    """How this run writes prompts and answers: the tokenizer's chat template plus the tool format."""

    tokenizer: Any
    tool_format: str

    def prompt(self, example: Example) -> str:
        return render_prompt(example, self.tokenizer, self.tool_format)

    def target(self, example: Example) -> str:
        """The gold answer as the model should write it (no EOS)."""
        return render_target(example, self.tool_format)

    def sft_row(self, example: Example) -> dict[str, str]:
        return {"prompt": self.prompt(example), "completion": self.target(example) + self.tokenizer.eos_token}

    def preference_row(self, example: Example, chosen: str, rejected: str) -> dict[str, str]:
        eos = self.tokenizer.eos_token
        return {"prompt": self.prompt(example), "chosen": chosen + eos, "rejected": rejected + eos}

    def rl_row(self, example: Example) -> dict[str, str]:
        return {
            "prompt": self.prompt(example),
            "gold": json.dumps([asdict(c) for c in example.answer], ensure_ascii=False),
            "tools": json.dumps(example.tools, ensure_ascii=False),
            "id": example.id,
            "category": example.category,
        }

    def n_tokens(self, text: str) -> int:
        return len(self.tokenizer(text)["input_ids"])


def sft_dataset(examples: Iterable[Example], fmt: PromptFormat, max_length: int | None = None) -> Any:
    """A datasets.Dataset of prompt/completion strings: TRL masks the prompt out of the loss."""
    examples = list(examples)
    return within_length(examples, *sft_rows(examples, fmt), max_length)[0]


def sft_rows(examples: list[Example], fmt: PromptFormat) -> tuple[list[dict[str, str]], list[int]]:
    """The SFT rows of EXAMPLES and their lengths in tokens (prompt + completion)."""
    rows = [fmt.sft_row(ex) for ex in examples]
    return rows, [fmt.n_tokens(r["prompt"] + r["completion"]) for r in rows]


def within_length(
    examples: list[Example], rows: list[dict], lengths: list[int], max_length: int | None
) -> tuple[Any, dict[str, int]]:
    """(a datasets.Dataset of the rows within MAX_LENGTH tokens, dropped examples per category).

    Longer examples are left out: truncation keeps the start, so they would lose (part of) their
    answer and teach the model to stop mid-call or not at all.
    """
    from datasets import Dataset

    kept, dropped = [], Counter()
    for ex, row, n in zip(examples, rows, lengths, strict=True):
        if max_length is None or n <= max_length:
            kept.append(row)
        else:
            dropped[ex.category] += 1
    return Dataset.from_list(kept), dict(sorted(dropped.items()))


def rl_dataset(examples: Iterable[Example], fmt: PromptFormat, max_prompt_tokens: int | None = None) -> Any:
    """A datasets.Dataset of RL rows; prompts longer than MAX_PROMPT_TOKENS are left out (the
    completion must still fit the model's context after them)."""
    from datasets import Dataset

    rows = [fmt.rl_row(ex) for ex in examples]
    if max_prompt_tokens is not None:
        rows = [r for r in rows if fmt.n_tokens(r["prompt"]) <= max_prompt_tokens]
    return Dataset.from_list(rows)
