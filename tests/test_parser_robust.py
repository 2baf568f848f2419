"""Hostile and odd model output never breaks parse -> match -> judge -> write (issue 12, item 6).

Every output gives calls / no_call / failure with a reason, argument values are plain JSON, and
the work per output grows linearly with its length. Work is counted, not timed, so a busy machine
cannot fail these tests: the lines of agentcoder code executed, plus the characters the JSON
decoder reads (its one C-level scan whose length depends on the input; regex and `ast` calls run
on spans the scan loop has bounded and are counted as the lines that make them).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import agentcoder
from agentcoder.data.example import Example, GoldCall, ToolCall
from agentcoder.evaluation import parser
from agentcoder.evaluation.evaluator import judge
from agentcoder.evaluation.parser import MAX_CHARS, ParseResult, parse_calls

TOOLS = [{"name": "f", "description": "f", "parameters": {"type": "object", "properties": {
    "x": {"type": "array", "items": {"type": "number"}}, "code": {"type": "string"}}, "required": []}}]
EXAMPLES = [
    Example("e1", "test", "simple", [{"role": "user", "content": "q"}], TOOLS, [GoldCall("f", {"x": [[1.0]]})]),
    Example("e2", "test", "irrelevance", [{"role": "user", "content": "q"}], TOOLS, []),
]


# Work allowed per character of output, plus a fixed part for the short ones. Measured: at most
# ~60 per character (the judge parses each output once per example), ~1,600 for a short output.
# A scan that restarted per bracket would cost thousands per character on the inputs below.
WORK_PER_CHAR = 150
WORK_FIXED = 5_000
_PACKAGE = str(Path(agentcoder.__file__).parent)


@contextmanager
def counted_work() -> Iterator[list[int]]:
    """Count the work done inside the block into the one-item list it yields."""
    work = [0]

    def lines(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "line":
            work[0] += 1
        return lines

    def calls(frame: FrameType, event: str, arg: Any) -> Any:
        return lines if frame.f_code.co_filename.startswith(_PACKAGE) else None

    decoder = parser._DECODER

    class CountingDecoder:
        def raw_decode(self, s: str, idx: int = 0) -> tuple[Any, int]:
            try:
                obj, end = decoder.raw_decode(s, idx)
            except json.JSONDecodeError as e:
                # Building the error's line/column walks the text from its start up to e.pos.
                work[0] += e.pos
                raise
            except (ValueError, RecursionError):
                work[0] += len(s) - idx
                raise
            work[0] += end - idx
            return obj, end

    previous = sys.gettrace()
    parser._DECODER = CountingDecoder()  # type: ignore[assignment]
    sys.settrace(calls)
    try:
        yield work
    finally:
        sys.settrace(previous)
        parser._DECODER = decoder


def work_bound(raw: str) -> int:
    return WORK_PER_CHAR * len(raw[:MAX_CHARS]) + WORK_FIXED


def run_path(raw: str) -> tuple[ParseResult, int]:
    """The whole path for one output; returns the parse and the work it took."""
    with counted_work() as work:
        parsed = parse_calls(raw)
        for ex in EXAMPLES:
            row = {"id": ex.id, "raw": raw, **judge(ex, raw)}
            # Plain JSON: no default= fallback, no NaN, and it reads back the same.
            assert json.loads(json.dumps(row, allow_nan=False)) == row
    assert parsed.status in ("calls", "no_call", "failure")
    assert (parsed.status == "failure") == (parsed.reason is not None)
    assert (parsed.status == "calls") == bool(parsed.calls)
    return parsed, work[0]


W = ToolCall("f", {"code": "```python\nprint(1)\n```"})

HOSTILE: list[tuple[str, str, Any]] = [
    # (id, output, expected: a status, a failure reason, or the exact calls)
    ("json_int_5000_digits", '{"name": "f", "arguments": {"x": ' + "9" * 5000 + "}}", "failure"),
    ("json_int_in_prose", "The total is [" + "9" * 5000 + "] and {" + '"a": ' + "9" * 5000 + "} ok.", "no_call"),
    ("json_int_in_list_prose", "See [1, " + "9" * 5000 + "] then [f(x=1)]", [ToolCall("f", {"x": 1})]),
    ("json_string_args_big_int", '{"name": "f", "arguments": "{\\"x\\": ' + "9" * 5000 + '}"}', "invalid_json"),
    ("dotted_name_1000", "a." * 1000 + "f(x=1)", "calls"),
    ("dotted_name_1000_list", "[" + "a." * 1000 + "f(x=1)]", "calls"),
    ("json_nested_500", '{"name": "f", "arguments": {"x": ' + "[" * 500 + "]" * 500 + "}}", "value_too_large"),
    ("json_nested_100", '{"name": "f", "arguments": {"x": ' + "[" * 100 + "]" * 100 + "}}", "value_too_large"),
    ("json_string_args_nested", '{"name": "f", "arguments": "{\\"x\\": ' + "[" * 500 + "]" * 500 + '}"}', "failure"),
    ("python_nested_500", "[f(x=" + "[" * 500 + "]" * 500 + ")]", "failure"),
    ("python_nested_150", "[f(x=" + "[" * 150 + "]" * 150 + ")]", "value_too_large"),
    ("python_hex_20000", "[f(x=0x" + "f" * 20000 + ")]", "value_too_large"),
    ("literal_hex_20000", "{'name': 'f', 'arguments': {'x': 0x" + "f" * 20000 + "}}", "value_too_large"),
    ("literal_tuple", "{'name': 'f', 'arguments': {'x': (1, 2.5)}}", [ToolCall("f", {"x": [1, 2.5]})]),
    ("literal_set", "{'name': 'f', 'arguments': {'x': {1, 2}}}", "unsupported_value"),
    ("literal_bytes", "{'name': 'f', 'arguments': {'x': b'abc'}}", "unsupported_value"),
    ("literal_complex", "{'name': 'f', 'arguments': {'x': 1j}}", "unsupported_value"),
    ("literal_int_keys", "{'name': 'f', 'arguments': {'x': {1: 'a', True: 'b'}}}", "calls"),
    ("json_nan", '{"name": "f", "arguments": {"x": NaN}}', "unsupported_value"),
    ("json_infinity", '{"name": "f", "arguments": {"x": [1e999]}}', "unsupported_value"),
    ("python_inf", "[f(x=1e999)]", "non_literal_argument"),
    ("open_brackets_20000", "[" * 20000, "no_call"),
    ("open_brackets_after_prose", "ok " + "[" * 20000, "no_call"),
    ("open_braces_after_prose", "ok " + "{" * 20000, "no_call"),
    ("open_mixed_after_prose", "ok " + "[{" * 10000, "no_call"),
    ("open_list_items_after_prose", "ok " + "[1, " * 8000, "no_call"),
    ("nested_closed_after_prose", "ok " + "[" * 10000 + "]" * 10000, "no_call"),
    ("think_open_5000", "<think>" * 5000, "truncated"),
    ("think_close_3000", "</think>" * 3000 + "[f(x=1)]", [ToolCall("f", {"x": 1})]),
    ("think_pairs_1500", "<think>a</think>" * 1500 + "[f(x=1)]", [ToolCall("f", {"x": 1})]),
    ("tool_call_open_5000", "<tool_call>" * 5000, "failure"),
    ("tool_call_pairs_2000", '<tool_call>{"name": "f", "arguments": {}}</tool_call>' * 600, "calls"),
    ("fences_10000", "```" * 10000, "no_call"),
    ("fence_lines_5000", "```\n" * 5000, "no_call"),
    ("bare_calls_open_5000", "a(" * 5000, "truncated"),
    ("bare_nested_lines_prose", "a(\n" * 3000 + ")" * 3000 + " and some prose", "no_call"),
    ("bare_lines_prose_each", "f(x) is nice\n" * 3000, "no_call"),
    ("python_list_opens", "[a(" * 5000, "truncated"),
    ("call_starts_5000", '{"name": ' * 5000, "failure"),
    ("quotes_5000", '"' * 5000 + "'" * 5000, "no_call"),
    ("backslashes", "\\" * 20000, "no_call"),
    ("long_identifier", "a" * 30000 + "(", "truncated"),
    ("past_max_chars", "x" * MAX_CHARS + '{"name": "f", "arguments": {}}', "no_call"),
    ("lone_surrogate", '{"name": "f", "arguments": {"code": "\\ud800"}}', [ToolCall("f", {"code": "\ud800"})]),
    ("control_chars", "\x00\x01\x02[f(x=1)]\x7f", "calls"),
    # "```" inside a string argument is part of the value, not a fence.
    ("fence_in_json_string", json.dumps({"name": "f", "arguments": {"code": "```python\nprint(1)\n```"}}), [W]),
    ("fence_in_fenced_json", "```json\n" + json.dumps({"name": "f", "arguments": W.arguments}) + "\n```", [W]),
    ("fence_in_python_string", "[f(code='```python\\nprint(1)\\n```')]", [W]),
    ("fence_in_tool_call", "<tool_call>" + json.dumps({"name": "f", "arguments": W.arguments}) + "</tool_call>", [W]),
]


@pytest.mark.parametrize(("raw", "expected"), [c[1:] for c in HOSTILE], ids=[c[0] for c in HOSTILE])
def test_hostile_output(raw: str, expected: Any) -> None:
    parsed, work = run_path(raw)
    if isinstance(expected, list):
        assert parsed == ParseResult("calls", expected)
    elif expected in ("calls", "no_call", "failure"):
        assert parsed.status == expected, parsed
    else:
        assert (parsed.status, parsed.reason) == ("failure", expected)
    assert work <= work_bound(raw), (work, len(raw))


# Inputs that grow by repeating a piece: doubling the repeats must about double the work (a
# quadratic scan would quadruple it). 2 x n pieces stay under MAX_CHARS, which would flatten growth.
GROWING: list[tuple[str, Any]] = [
    ("open_brackets", lambda n: "[" * n),
    ("open_list_items_after_prose", lambda n: "ok " + "[1, " * n),
    ("open_mixed_after_prose", lambda n: "ok " + "[{" * n),
    ("nested_closed_after_prose", lambda n: "ok " + "[" * n + "]" * n),
    ("json_int_in_prose", lambda n: "The total is [" + "9" * n + "] ok."),
    ("call_starts", lambda n: '{"name": ' * n),
    ("bare_nested_lines_prose", lambda n: "a(\n" * n + ")" * n + " and some prose"),
    ("bare_lines_prose_each", lambda n: "f(x) is nice\n" * n),
    ("python_list_opens", lambda n: "[a(" * n),
    ("python_hex", lambda n: "[f(x=0x" + "f" * n + ")]"),
    ("dotted_name_list", lambda n: "[" + "a." * n + "f(x=1)]"),
    ("fence_lines", lambda n: "```\n" * n),
    ("think_pairs", lambda n: "<think>a</think>" * n + "[f(x=1)]"),
    ("tool_call_opens", lambda n: "<tool_call>" * n),
    ("quotes", lambda n: '"' * n + "'" * n),
    ("backslashes", lambda n: "\\" * n),
]


@pytest.mark.parametrize("make", [g[1] for g in GROWING], ids=[g[0] for g in GROWING])
def test_work_grows_linearly(make: Any) -> None:
    n = 1
    while len(make(4 * n)) <= MAX_CHARS:
        n *= 2
    small, large = make(n), make(2 * n)
    assert 2 * len(small) - 64 <= len(large) <= MAX_CHARS
    (_, work_small), (_, work_large) = run_path(small), run_path(large)
    assert work_large <= 2.5 * work_small, (len(small), work_small, work_large)


def test_no_call_result_is_immutable_and_shared_safely() -> None:
    first = parse_calls("no tools needed")
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.status = "calls"  # type: ignore[misc]
    assert isinstance(first.calls, tuple)
    assert parse_calls("still nothing") == ParseResult("no_call")


# ------------------------------------------------------------------ generated outputs

SAFE_TEXT = st.text(st.characters(blacklist_characters="<`", blacklist_categories=("Cs",)), max_size=12)
NAMES = st.from_regex(r"[a-z_][a-z0-9_]{0,6}(\.[a-z_][a-z0-9_]{0,6}){0,2}", fullmatch=True)
KEYS = st.from_regex(r"[a-z_][a-z0-9_]{0,6}", fullmatch=True)
SCALARS = (
    st.none() | st.booleans() | st.integers(-(10**12), 10**12)
    | st.floats(allow_nan=False, allow_infinity=False, width=64) | SAFE_TEXT
)  # fmt: skip
VALUES = st.recursive(SCALARS, lambda c: st.lists(c, max_size=3) | st.dictionaries(KEYS, c, max_size=3), max_leaves=8)
CALLS = st.lists(st.tuples(NAMES, st.dictionaries(KEYS, VALUES, max_size=3)), min_size=1, max_size=3)
FORMATS = ("json", "json_list", "json_params", "json_string_args", "openai", "tool_call", "python_list",
           "python_lines", "fenced_json", "fenced_python", "prose_json", "think_python", "literal_dict")


def _py(value: Any) -> str:
    # Python literal syntax for a JSON value (repr is right for all but the JSON names).
    return repr(value)


def render(calls: list[tuple[str, dict]], fmt: str) -> str:
    objs = [{"name": n, "arguments": a} for n, a in calls]
    py = [f"{n}({', '.join(f'{k}={_py(v)}' for k, v in a.items())})" for n, a in calls]
    if fmt == "json":
        return "\n".join(json.dumps(o) for o in objs)
    if fmt == "json_list":
        return json.dumps(objs)
    if fmt == "json_params":
        return json.dumps([{"name": n, "parameters": a} for n, a in calls])
    if fmt == "json_string_args":
        return json.dumps([{"name": n, "arguments": json.dumps(a)} for n, a in calls])
    if fmt == "openai":
        return json.dumps([{"type": "function", "function": o} for o in objs])
    if fmt == "tool_call":
        return "".join(f"<tool_call>\n{json.dumps(o)}\n</tool_call>\n" for o in objs)
    if fmt == "python_list":
        return "[" + ", ".join(py) + "]"
    if fmt == "python_lines":
        return "\n".join(py)
    if fmt == "fenced_json":
        return "Here you go:\n```json\n" + json.dumps(objs, indent=2) + "\n```\nDone."
    if fmt == "fenced_python":
        return "```python\n" + "\n".join(py) + "\n```"
    if fmt == "prose_json":
        return "Sure, calling it now.\n" + json.dumps(objs) + "\nLet me know."
    if fmt == "think_python":
        return "<think>maybe {\"name\": \"x\"} or [y()]</think>\n[" + ", ".join(py) + "]"
    if fmt == "literal_dict":
        return repr(objs)
    raise ValueError(fmt)


@st.composite
def mutated(draw: st.DrawFn, text: str) -> str:
    kind = draw(st.sampled_from(["truncate", "insert", "delete", "duplicate", "replace"]))
    i = draw(st.integers(0, len(text)))
    if kind == "truncate":
        return text[:i]
    if kind == "delete":
        return text[:i] + text[draw(st.integers(i, len(text))):]
    if kind == "duplicate":
        j = draw(st.integers(i, len(text)))
        return text[:j] + text[i:j] * draw(st.integers(1, 50)) + text[j:]
    piece = draw(st.sampled_from(["[", "{", "(", '"', "'", "```", "<think>", "</think>", "<tool_call>",
                                  "\\", "\n", "}", "]", ")", "a.", "9" * 50]) | st.text(max_size=5))
    if kind == "insert":
        return text[:i] + piece * draw(st.integers(1, 200)) + text[i:]
    return text[:i] + piece + text[i + 1:]


@st.composite
def outputs(draw: st.DrawFn) -> tuple[str, list[tuple[str, dict]] | None]:
    """(an output, the calls it must parse to) — None where the output was mutated or random."""
    kind = draw(st.sampled_from(["clean", "clean", "mutated", "mutated", "mutated", "random"]))
    if kind == "random":
        return draw(st.text(max_size=300)), None
    calls = draw(CALLS)
    fmt = draw(st.sampled_from(FORMATS))
    if fmt.startswith("python") or fmt == "fenced_python" or fmt == "think_python":
        # Python keyword syntax needs identifier keys that are not keywords.
        calls = [(n, {k: v for k, v in a.items() if k.isidentifier() and k not in _PY_KEYWORDS}) for n, a in calls]
        calls = [(n, a) for n, a in calls if not any(p in _PY_KEYWORDS for p in n.split("."))] or [("f", {})]
    text = render(calls, fmt)
    if kind == "clean":
        return text, calls
    return draw(mutated(text)), None


_PY_KEYWORDS = {"and", "as", "assert", "async", "await", "break", "class", "continue", "def", "del", "elif",
                "else", "except", "finally", "for", "from", "global", "if", "import", "in", "is", "lambda",
                "nonlocal", "not", "or", "pass", "raise", "return", "try", "while", "with", "yield",
                "none", "true", "false", "match", "case", "type", "print"}


def _as_json(value: Any) -> Any:
    return json.loads(json.dumps(value))


def run_property_suite(n: int) -> dict[str, float]:
    per_char: list[float] = []

    @settings(max_examples=n, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(outputs())
    def check(case: tuple[str, list[tuple[str, dict]] | None]) -> None:
        raw, expected = case
        parsed, work = run_path(raw)
        assert work <= work_bound(raw), (raw, work)
        per_char.append(work / max(len(raw), 1))
        if expected is not None:  # a clean rendering reads back as exactly its calls
            assert parsed.status == "calls", (raw, parsed)
            assert [(c.name, c.arguments) for c in parsed.calls] == [(nm, _as_json(a)) for nm, a in expected]

    check()
    figures = {"n": len(per_char), "max_work_per_char": max(per_char)}
    print("\nproperty suite:", ", ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}"
                                        for k, v in figures.items()))
    return figures


def test_generated_outputs_fast() -> None:
    run_property_suite(500)  # the 10k run is `slow`


@pytest.mark.slow
def test_generated_outputs_10k() -> None:
    run_property_suite(10_000)
