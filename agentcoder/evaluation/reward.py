"""The function-call reward for RL methods (GRPO, PPO), on the same parse + match as the evaluation.

    reward = make_reward(cfg.method.reward)        # or tool_call_reward with the default weights
    reward(completions, gold=[...], tools=[...])   # -> list[float], one per completion

The signature is the one TRL's GRPOTrainer calls reward functions with: the completions plus the
dataset's columns as keyword arguments (here `gold` and `tools`, JSON strings as
`PromptFormat.rl_row` writes them; lists are accepted too).  Scores, with the weights of
`RewardWeights` (agentcoder/config.py):

    exact match (including "no call" when none is expected)      exact                      (1.0)
    parse failure                                                parse_failure              (-1.0)
    a call where none is expected                                call_when_none_expected    (-0.5)
    no call where one is expected                                no_call_when_expected      (0.0)
    otherwise: right function name(s)                            function_name              (+0.2)
               x the share of right arguments                    arguments                  (+0.4)
               any called name not among the tools              unknown_function           (-0.5)

Partial credit stays below an exact match (validated in config), so the policy is always pushed
towards the exact answer.  Model output is parsed with json/ast only; nothing is executed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields
from typing import Any

from agentcoder.config import RewardWeights
from agentcoder.data.example import GoldCall
from agentcoder.evaluation.matcher import Verdict
from agentcoder.evaluation.parser import ParseResult
from agentcoder.evaluation.scoring import score_output

RewardFn = Callable[..., list[float]]


REWARD_PARTS = ("exact", "function_name", "arguments", "penalties")


def reward_parts(parsed: ParseResult, verdict: Verdict, tools: Sequence[dict], expects_call: bool,
                 w: RewardWeights) -> dict[str, float]:
    """The reward of one parsed and matched output split into REWARD_PARTS (they sum to the reward;
    see the module docstring for the table): what PPO logs to show which part the policy learns."""
    parts = dict.fromkeys(REWARD_PARTS, 0.0)
    if verdict.correct:
        parts["exact"] = w.exact
    elif parsed.status == "failure":
        parts["penalties"] = w.parse_failure
    elif not expects_call:
        parts["penalties"] = w.call_when_none_expected
    elif parsed.status == "no_call" or not parsed.calls:
        parts["penalties"] = w.no_call_when_expected
    else:
        if verdict.function_match:
            parts["function_name"] = w.function_name
            if verdict.params_total:
                parts["arguments"] = w.arguments * verdict.params_correct / verdict.params_total
        known = {_tool_name(t) for t in tools}
        if any(c.name not in known for c in parsed.calls):
            parts["penalties"] = w.unknown_function
    return parts


def score_reward(parsed: ParseResult, verdict: Verdict, tools: Sequence[dict], expects_call: bool,
                 w: RewardWeights) -> float:
    """The reward of one parsed and matched output (see the module docstring for the table)."""
    parts = reward_parts(parsed, verdict, tools, expects_call, w)
    return parts["exact"] + parts["function_name"] + parts["arguments"] + parts["penalties"]


def make_reward(weights: RewardWeights | Mapping[str, Any] | None = None) -> RewardFn:
    """A reward function with WEIGHTS (a RewardWeights, a mapping such as cfg.method.reward, or None)."""
    w = _weights(weights)

    def parts(completions: Sequence[Any], gold: Sequence[Any], tools: Sequence[Any], **_: Any) -> list[dict]:
        out = []
        for completion, gold_calls, tool_list in zip(completions, gold, tools, strict=True):
            answer = _gold(gold_calls)
            schemas = _json(tool_list)
            parsed, verdict = score_output(answer, schemas, _text(completion))
            out.append(reward_parts(parsed, verdict, schemas, bool(answer), w))
        return out

    def tool_call_reward(completions: Sequence[Any], gold: Sequence[Any], tools: Sequence[Any],
                         **columns: Any) -> list[float]:
        return [float(sum(p.values())) for p in parts(completions, gold, tools, **columns)]

    tool_call_reward.parts = parts  # the same scores split into REWARD_PARTS (PPO logs them)
    return tool_call_reward



def _weights(weights: RewardWeights | Mapping[str, Any] | None) -> RewardWeights:
    if weights is None:
        return RewardWeights()
    if isinstance(weights, RewardWeights):
        return weights
    known = {f.name for f in fields(RewardWeights)}
    return RewardWeights(**{k: float(v) for k, v in dict(weights).items() if k in known})


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _gold(value: Any) -> list[GoldCall]:
    calls = _json(value) or []
    return [c if isinstance(c, GoldCall) else GoldCall(c["name"], dict(c["arguments"])) for c in calls]


def _text(completion: Any) -> str:
    # Conversational datasets give a list of messages; the answer is the last assistant content.
    if isinstance(completion, list):
        return str(completion[-1].get("content", "")) if completion else ""
    return str(completion)


def _tool_name(tool: Any) -> Any:
    if isinstance(tool, dict) and isinstance(tool.get("function"), dict):
        return tool["function"].get("name")
    return tool.get("name") if isinstance(tool, dict) else None


# The reward with the default weights (TRL logs a reward function under its __name__).
tool_call_reward = make_reward()

__all__ = ["REWARD_PARTS", "RewardFn", "make_reward", "reward_parts", "score_reward", "tool_call_reward"]
