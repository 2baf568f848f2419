"""One model output against one example's gold calls: parse, then match.

This is the single scoring step: `evaluator.judge` (the metrics) and the training reward both call
`score_output`, so a figure and a reward can never disagree on what counts as a correct call.
It is total: any text gives a ParseResult and a Verdict, never an exception, and nothing in the
text is executed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agentcoder.data.example import GoldCall
from agentcoder.evaluation.matcher import PairingMode, Verdict, match_calls
from agentcoder.evaluation.parser import ParseResult, parse_calls


def score_output(
    answer: Sequence[GoldCall],
    tools: Sequence[dict[str, Any]],
    raw: str,
    *,
    parallel_matching: PairingMode = "optimal",
) -> tuple[ParseResult, Verdict]:
    """Parse RAW into calls and judge them against ANSWER (empty: no call expected) given TOOLS."""
    parsed = parse_calls(raw)
    verdict = match_calls(list(answer), list(tools), parsed, parallel_matching=parallel_matching)
    return parsed, verdict
