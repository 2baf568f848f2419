"""The function-call reward: gold answers score 1.0 in every tool format, and a table of mistakes."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest

from agentcoder.config import RewardWeights
from agentcoder.data.example import Example, GoldCall
from agentcoder.data.prompts import render_target
from agentcoder.data.rows import PromptFormat
from agentcoder.evaluation.reward import make_reward, tool_call_reward
from tests.test_matcher import TOOLS, g

W = RewardWeights()
WEATHER = g("get_weather", city=["Paris"], unit=["", "celsius"], days=["", 3])
AREA = g("area", base=[10], height=[5.5])


def columns(gold: list[GoldCall], tools: list[dict] = TOOLS) -> dict[str, list[str]]:
    return {"gold": [json.dumps([asdict(c) for c in gold])], "tools": [json.dumps(tools)]}


def reward(text: str, gold: list[GoldCall], tools: list[dict] = TOOLS) -> float:
    return tool_call_reward([text], **columns(gold, tools))[0]


def example(gold: list[GoldCall], id_: str = "x") -> Example:
    return Example(id_, "test", "simple", [{"role": "user", "content": "q"}], TOOLS, gold)


@pytest.mark.parametrize("tool_format", ["json", "qwen"])
@pytest.mark.parametrize(
    "gold",
    [[WEATHER], [AREA], [WEATHER, AREA], [g("search", query=["cats"], tags=[["a", "b"]], filters=[{"x": [1]}])], []],
    ids=["one", "float-arg", "parallel", "nested", "no-call"],
)
def test_gold_target_in_every_tool_format_earns_full_reward(tool_format, gold):
    assert reward(render_target(example(gold), tool_format), gold) == pytest.approx(1.0)


W_ARGS = W.function_name + W.arguments  # right names, all arguments right, but not an exact match

# (id, output, gold, expected reward)
CASES = [
    ("right", '[{"name": "get_weather", "arguments": {"city": "Paris"}}]', [WEATHER], W.exact),
    ("right-qwen", '<tool_call>\n{"name": "get_weather", "arguments": {"city": "paris"}}\n</tool_call>',
     [WEATHER], W.exact),
    ("wrong-name-known-tool", '[{"name": "pick", "arguments": {"x": 1}}]', [WEATHER], 0.0),
    ("wrong-argument-value", '[{"name": "area", "arguments": {"base": 10, "height": 7}}]', [AREA],
     W.function_name + W.arguments * 1 / 2),
    ("wrong-argument-type", '[{"name": "area", "arguments": {"base": "ten", "height": 5.5}}]', [AREA],
     W.function_name + W.arguments * 1 / 2),
    ("extra-argument", '[{"name": "area", "arguments": {"base": 10, "height": 5.5, "color": "red"}}]', [AREA],
     W_ARGS),
    ("missing-required", '[{"name": "area", "arguments": {"base": 10}}]', [AREA],
     W.function_name + W.arguments * 1 / 2),
    ("parse-failure", '[{"name": "area", "arguments": {"base": 10,', [AREA], W.parse_failure),
    ("unknown-function", '[{"name": "launch_rocket", "arguments": {}}]', [AREA], W.unknown_function),
    ("call-when-none-expected", '[{"name": "area", "arguments": {"base": 1, "height": 2}}]', [],
     W.call_when_none_expected),
    ("no-call-when-none-expected", "I cannot help with that using these tools.", [], W.exact),
    ("no-call-when-expected", "I would rather not.", [AREA], W.no_call_when_expected),
    ("parallel-other-order",
     '[{"name": "area", "arguments": {"base": 10, "height": 5.5}}, {"name": "get_weather", "arguments": '
     '{"city": "Paris"}}]', [WEATHER, AREA], W.exact),
    ("parallel-one-missing", '[{"name": "area", "arguments": {"base": 10, "height": 5.5}}]', [WEATHER, AREA], 0.0),
    ("parse-failure-when-none-expected", '{"name": ', [], W.parse_failure),
]


@pytest.mark.parametrize(("output", "gold", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_reward_table(output, gold, expected):
    assert reward(output, gold) == pytest.approx(expected)


def test_partial_credit_stays_below_an_exact_match():
    scores = [reward(c[1], c[2]) for c in CASES if c[3] != W.exact]
    assert max(scores) < W.exact


def test_weights_come_from_config_and_completions_may_be_conversational():
    custom = make_reward({"exact": 2.0, "parse_failure": -3.0})
    gold = columns([AREA])
    assert custom([[{"role": "assistant", "content": '[{"name": "area", "arguments": {"base": 10, "height": 5.5}}]'}]],
                  **gold) == [2.0]
    assert custom(["[{"], **gold) == [-3.0]
    assert tool_call_reward.__name__ == "tool_call_reward"  # TRL logs each reward under its function name


def test_reward_reads_rl_rows_as_trl_passes_them(tiny_tokenizer):
    fmt = PromptFormat(tiny_tokenizer, "json")
    rows = [fmt.rl_row(example([AREA], "a")), fmt.rl_row(example([], "b"))]
    completions = [fmt.target(example([AREA])), '[{"name": "area", "arguments": {}}]']
    kwargs = {k: [r[k] for r in rows] for k in rows[0] if k != "prompt"}
    assert tool_call_reward(completions, **kwargs) == [W.exact, W.call_when_none_expected]


def test_reward_never_runs_model_output(tmp_path):
    marker = tmp_path / "pwned"
    hostile = f'[{{"name": "area", "arguments": {{"base": __import__("os").system("touch {marker}")}}}}]'
    assert reward(hostile, [AREA]) == W.parse_failure
    assert not marker.exists()
