from __future__ import annotations

import pytest

from agentcoder.data.example import ToolCall
from agentcoder.evaluation.parser import ParseResult, parse_calls

W = ToolCall("get_weather", {"city": "Paris"})

CALLS = [
    # --- JSON
    ('{"name": "get_weather", "arguments": {"city": "Paris"}}', [W]),
    ('[{"name": "get_weather", "arguments": {"city": "Paris"}}]', [W]),
    ('  \n[{"name": "get_weather", "arguments": {"city": "Paris"}}]\n', [W]),
    ('{"name": "get_weather", "parameters": {"city": "Paris"}}', [W]),
    ('{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}', [W]),
    ('{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}', [W]),
    (
        '{"type": "function", "function": {"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}}',
        [W],
    ),
    ('{"name": "get_time"}', [ToolCall("get_time", {})]),
    ('{"name": "get_time", "arguments": ""}', [ToolCall("get_time", {})]),
    ('{"name": "get_time", "arguments": null}', [ToolCall("get_time", {})]),
    ('{"id": "call_1", "name": "get_weather", "arguments": {"city": "Paris"}}', [W]),
    (
        '[{"name": "a", "arguments": {"x": 1}}, {"name": "b", "arguments": {"y": [1, 2], "z": {"k": null}}}]',
        [ToolCall("a", {"x": 1}), ToolCall("b", {"y": [1, 2], "z": {"k": None}})],
    ),
    ('{"name": "a", "arguments": {}}\n{"name": "b", "arguments": {}}', [ToolCall("a"), ToolCall("b")]),
    ('Sure! I will call the tool.\n{"name": "get_weather", "arguments": {"city": "Paris"}}\nDone.', [W]),
    ("{'name': 'get_weather', 'arguments': {'city': 'Paris'}}", [W]),
    ('{"name": "get_weather", "arguments": {"city": "Paris",},}', [W]),
    ('{"name": "get_weather", "arguments": {"city": "Paris"}, "parameters": {"city": "Paris"}}', [W]),
    # --- <tool_call> blocks
    ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>', [W]),
    (
        '<tool_call>\n{"name": "a", "arguments": {"x": 1}}\n</tool_call>\n'
        '<tool_call>\n{"name": "b", "arguments": {"y": "q"}}\n</tool_call>',
        [ToolCall("a", {"x": 1}), ToolCall("b", {"y": "q"})],
    ),
    (
        'I need the weather.\n<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>',
        [W],
    ),
    ('<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}', [W]),  # stopped on the tag
    ('<tool_call>\n```json\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n```\n</tool_call>', [W]),
    ('<tool_call>get_weather(city="Paris")</tool_call>', [W]),
    # --- Python call syntax
    ('[get_weather(city="Paris")]', [W]),
    ("[get_weather(city='Paris')]", [W]),
    ('get_weather(city="Paris")', [W]),
    (
        '[a(x=1), b(y="q")]',
        [ToolCall("a", {"x": 1}), ToolCall("b", {"y": "q"})],
    ),
    (
        "[math.hypot.compute(x=-3, y=4.5, flag=True, none=None)]",
        [ToolCall("math.hypot.compute", {"x": -3, "y": 4.5, "flag": True, "none": None})],
    ),
    (
        "[f(t=(1, 2), l=[1, [2, 3]], d={'k': (4,)})]",
        [ToolCall("f", {"t": [1, 2], "l": [1, [2, 3]], "d": {"k": [4]}})],
    ),
    ("[f(flag=true, x=null)]", [ToolCall("f", {"flag": True, "x": None})]),
    ("get_weather(city='Paris')\nget_time(tz='CET')", [W, ToolCall("get_time", {"tz": "CET"})]),
    ("get_weather(city='Paris')\r\nget_time()", [W, ToolCall("get_time", {})]),
    ("a(x=1); b(y=2)", [ToolCall("a", {"x": 1}), ToolCall("b", {"y": 2})]),
    (
        '[\n  a(x=1),\n  b(\n    y="multi line"\n  ),\n]',
        [ToolCall("a", {"x": 1}), ToolCall("b", {"y": "multi line"})],
    ),
    ("[get_weather(city='Paris')] Let me know if you need anything else.", [W]),
    ("Here is the call:\nget_weather(city='Paris')", [W]),
    ("[get_time()]", [ToolCall("get_time", {})]),
    # --- code fences
    ('```json\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n```', [W]),
    ('```\n[{"name": "get_weather", "arguments": {"city": "Paris"}}]\n```', [W]),
    ('Here you go:\n```python\nget_weather(city="Paris")\n```\nThis fetches the weather.', [W]),
    ('```python\n[get_weather(city="Paris")]\n```', [W]),
    ('```tool_call\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n```', [W]),
    ('```{"name": "get_weather", "arguments": {"city": "Paris"}}```', [W]),
    # --- reasoning is not the answer
    ('<think>Maybe {"name": "x", "arguments": {}}?</think>\n[get_weather(city="Paris")]', [W]),
    ("</think>\n[get_weather(city='Paris')]", [W]),
]


@pytest.mark.parametrize(("text", "expected"), CALLS)
def test_parses_calls(text: str, expected: list[ToolCall]) -> None:
    result = parse_calls(text)
    assert result == ParseResult("calls", expected, None)


NO_CALL = [
    "",
    "   ",
    "The capital of France is Paris.",
    "I'm sorry, none of the available tools can book a flight.",
    "I (the assistant) think print() is a built-in function.",
    "Use sorted(xs) to sort a list; it's simple.",
    'The list [1, 2, 3] and the object {"x": 1} are plain data.',
    '{"name": "Ann", "age": 31}',
    "[]",
    "```\nno tools are needed here\n```",
    '<think>I could call {"name": "f", "arguments": {}}</think>No tool is needed.',
    '{"name": "get_weather", "description": "d", "parameters": {"type": "object", "properties": {}}}',
    "[Note] I cannot help with that.",
]


@pytest.mark.parametrize("text", NO_CALL)
def test_no_call(text: str) -> None:
    assert parse_calls(text) == ParseResult("no_call", [], None)


FAILURES = [
    ('{"name": "get_weather", "arguments": {"city": "Paris"', "truncated"),
    ('[{"name": "a", "arguments": {"x": 1}}, {"name": "b", "argu', "truncated"),
    ('{"name": "get_weather", "arguments": {"city": "Par', "truncated"),
    ('```json\n[{"name": "get_weather", "arguments": {"city": "Paris"}}', "truncated"),
    ('[get_weather(city="Paris"), get_time(', "truncated"),
    ('get_weather(city="Par', "truncated"),
    ("<think>Let me think about which tool", "truncated"),
    ('{"name": "get_weather", "arguments": {"city": Paris}}', "invalid_json"),
    ('{name: "get_weather", arguments: {}}', "invalid_json"),
    ('{"name": "get_weather", "arguments": "{city: Paris}"}', "invalid_json"),
    ('Calling now: {"name": "get_weather" "arguments": {}}', "invalid_json"),
    ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Pa', "unclosed_tool_call"),
    ("<tool_call>\n", "unclosed_tool_call"),
    ("<tool_call></tool_call>", "empty_tool_call"),
    (
        '<tool_call>{"name": "a", "arguments": {}}</tool_call>'
        '<tool_call>{"name": "b", "arguments": {"y": }}</tool_call>',
        "invalid_json",
    ),
    ('[get_weather(city="Paris" country="FR")]', "bad_call_syntax"),
    ("[get_weather(**{'city': 'Paris'})]", "bad_call_syntax"),
    ("[get_weather('Paris')]", "positional_argument"),
    ("[f(x=some_variable)]", "non_literal_argument"),
    ("[f(x=1 + len('ab'))]", "non_literal_argument"),
    ("[f(x={1, 2})]", "non_literal_argument"),
    ('{"name": "", "arguments": {}}', "missing_name"),
    ('{"name": "f", "arguments": [1, 2]}', "bad_arguments"),
    ('{"name": "f", "arguments": {"a": 1}, "parameters": {"a": 2}}', "ambiguous_arguments"),
    ('{"type": "retrieval", "function": {"name": "f", "arguments": {}}}', "bad_call_shape"),
]


@pytest.mark.parametrize(("text", "reason"), FAILURES)
def test_failures_carry_a_reason(text: str, reason: str) -> None:
    result = parse_calls(text)
    assert result.status == "failure"
    assert result.calls == ()  # immutable: a tuple
    assert result.reason == reason


@pytest.mark.parametrize(
    "template",
    [
        "[__import__('os').system('touch {p}')]",
        "__import__('os').system('touch {p}')",
        "[f(x=__import__('os').system('touch {p}'))]",
        "[f(x=open('{p}', 'w').write('x'))]",
        "Sure:\n```python\nimport os; os.system('touch {p}')\n```",
        "<tool_call>__import__('os').system('touch {p}')</tool_call>",
        '{{"name": "f", "arguments": "__import__(\'os\').system(\'touch {p}\')"}}',
        "[(lambda: __import__('os').system('touch {p}'))()]",
    ],
)
def test_hostile_text_is_data_never_run(template: str, tmp_path) -> None:
    target = tmp_path / "pwned"
    result = parse_calls(template.format(p=target))
    # Code that is not a plain call may read as "no call" or as a failure, but never as calls.
    assert result.status in ("failure", "no_call")
    assert result.calls == ()  # immutable: a tuple
    assert not target.exists()


def test_hostile_argument_reports_non_literal() -> None:
    assert parse_calls("[f(x=__import__('os').system('x'))]").reason == "non_literal_argument"


def test_string_values_are_kept_verbatim() -> None:
    # The parser must not normalise: the matcher decides what is lenient.
    result = parse_calls("[f(s=\"New York, NY\", t='It\\'s')]")
    assert result.calls == (ToolCall("f", {"s": "New York, NY", "t": "It's"}),)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("[f(a=false)]", False),
        ("[f(a={'x': false})]", {"x": False}),
        ("[f(a=[true, null])]", [True, None]),
        ("[f(a={'k': [null, {'y': true}]})]", {"k": [None, {"y": True}]}),
        ("[f(a=(1, false))]", [1, False]),
    ],
)
def test_json_names_mean_the_same_at_any_depth(text, value):
    result = parse_calls(text)
    assert result.status == "calls" and result.calls[0].arguments == {"a": value}


def test_other_names_stay_non_literal_at_any_depth():
    assert parse_calls("[f(a={'x': [truth]})]").reason == "non_literal_argument"


def test_escaped_surrogate_pairs_read_as_json_reads_them():
    import json

    for text in ('[f(a="\\ud83d\\ude00")]', '[{"name": "f", "arguments": {"a": "\\ud83d\\ude00"}}]'):
        (call,) = parse_calls(text).calls
        assert call.arguments == {"a": "\U0001F600"}
    (call,) = parse_calls('[f(a="\\ud800")]').calls  # a lone surrogate stays, and survives a JSON round trip
    assert json.loads(json.dumps(call.arguments)) == call.arguments
