from __future__ import annotations

from typing import Any

import pytest

from agentcoder.data.example import GoldCall, ToolCall
from agentcoder.evaluation.matcher import Verdict, match_calls, normalize_string, values_equal
from agentcoder.evaluation.parser import ParseResult


def tool(name: str, props: dict[str, str], required: list[str] | None = None) -> dict:
    return {
        "name": name,
        "description": f"{name} tool",
        "parameters": {
            "type": "object",
            "properties": {k: {"type": t, "description": k} for k, t in props.items()},
            "required": required or [],
        },
    }


TOOLS = [
    tool("get_weather", {"city": "string", "unit": "string", "days": "integer"}, ["city"]),
    tool("area", {"base": "number", "height": "number", "exact": "boolean"}, ["base", "height"]),
    tool("search", {"query": "string", "tags": "array", "filters": "object"}, ["query"]),
    tool("pick", {"x": "integer"}, ["x"]),
    tool("get_time", {}),
]


def calls(*items: tuple[str, dict[str, Any]]) -> ParseResult:
    return ParseResult("calls", [ToolCall(n, a) for n, a in items])


def g(name: str, **args: list[Any]) -> GoldCall:
    return GoldCall(name, dict(args))


WEATHER = g("get_weather", city=["Paris"], unit=["", "celsius"])

# (id, gold, parsed, correct, reason, function_match)
CASES = [
    # --- names
    ("exact", [WEATHER], calls(("get_weather", {"city": "Paris"})), True, None, True),
    ("wrong_name", [WEATHER], calls(("get_forecast", {"city": "Paris"})), False, "wrong_name", False),
    ("name_case_matters", [WEATHER], calls(("Get_Weather", {"city": "Paris"})), False, "wrong_name", False),
    # --- required / optional / unexpected
    (
        "missing_required",
        [WEATHER],
        calls(("get_weather", {"unit": "celsius"})),
        False,
        "missing_required",
        True,
    ),
    (
        "optional_given",
        [WEATHER],
        calls(("get_weather", {"city": "Paris", "unit": "celsius"})),
        True,
        None,
        True,
    ),
    (
        "optional_wrong",
        [WEATHER],
        calls(("get_weather", {"city": "Paris", "unit": "kelvin"})),
        False,
        "wrong_value:unit",
        True,
    ),
    (
        "omitted_without_blank",
        [g("get_weather", city=["Paris"], unit=["celsius"])],
        calls(("get_weather", {"city": "Paris"})),
        False,
        "missing_arg:unit",
        True,
    ),
    (
        "hallucinated_arg",
        [WEATHER],
        calls(("get_weather", {"city": "Paris", "country": "FR"})),
        False,
        "unexpected_arg",
        True,
    ),
    (
        "in_schema_not_in_gold",
        [WEATHER],
        calls(("get_weather", {"city": "Paris", "days": 3})),
        False,
        "unexpected_arg",
        True,
    ),
    ("no_args_tool", [g("get_time")], calls(("get_time", {})), True, None, True),
    (
        "no_args_tool_extra",
        [g("get_time")],
        calls(("get_time", {"tz": "CET"})),
        False,
        "unexpected_arg",
        True,
    ),
    # --- types
    (
        "int_for_number",
        [g("area", base=[3.0], height=[4.0])],
        calls(("area", {"base": 3, "height": 4})),
        True,
        None,
        True,
    ),
    ("float_for_int", [g("pick", x=[3])], calls(("pick", {"x": 3.5})), False, "wrong_type:x", True),
    ("float_value_for_int", [g("pick", x=[3])], calls(("pick", {"x": 3.0})), False, "wrong_type:x", True),
    ("bool_for_int", [g("pick", x=[1])], calls(("pick", {"x": True})), False, "wrong_type:x", True),
    (
        "bool_for_number",
        [g("area", base=[1], height=[2])],
        calls(("area", {"base": True, "height": 2})),
        False,
        "wrong_type:base",
        True,
    ),
    (
        "numeric_string_for_number",
        [g("area", base=[5], height=[2])],
        calls(("area", {"base": "5", "height": 2})),
        False,
        "wrong_type:base",
        True,
    ),
    (
        "int_for_string",
        [g("search", query=["5"])],
        calls(("search", {"query": 5})),
        False,
        "wrong_type:query",
        True,
    ),
    (
        "bool_for_bool",
        [g("area", base=[1], height=[2], exact=[True])],
        calls(("area", {"base": 1, "height": 2, "exact": True})),
        True,
        None,
        True,
    ),
    (
        "int_for_bool",
        [g("area", base=[1], height=[2], exact=[True])],
        calls(("area", {"base": 1, "height": 2, "exact": 1})),
        False,
        "wrong_type:exact",
        True,
    ),
    ("gold_overrides_schema", [g("pick", x=[3.5])], calls(("pick", {"x": 3.5})), True, None, True),
    (
        "string_for_array",
        [g("search", query=["q"], tags=[["a"]])],
        calls(("search", {"query": "q", "tags": "a"})),
        False,
        "wrong_type:tags",
        True,
    ),
    # --- values
    (
        "number_by_value",
        [g("area", base=[2.50], height=[4])],
        calls(("area", {"base": 2.5, "height": 4.0})),
        True,
        None,
        True,
    ),
    (
        "number_wrong",
        [g("area", base=[2.5], height=[4])],
        calls(("area", {"base": 2.6, "height": 4})),
        False,
        "wrong_value:base",
        True,
    ),
    (
        "one_of_several",
        [g("get_weather", city=["Paris", "Paris, France"])],
        calls(("get_weather", {"city": "Paris, France"})),
        True,
        None,
        True,
    ),
    (
        "string_case_space_punct",
        [g("get_weather", city=["New York, NY"])],
        calls(("get_weather", {"city": "new york ny"})),
        True,
        None,
        True,
    ),
    (
        "string_dash_underscore",
        [g("search", query=["state-of-the_art"])],
        calls(("search", {"query": "State of the Art"})),
        True,
        None,
        True,
    ),
    (
        "string_quotes",
        [g("search", query=["say 'hi'"])],
        calls(("search", {"query": 'say "hi"'})),
        True,
        None,
        True,
    ),
    (
        "string_different",
        [g("get_weather", city=["Paris"])],
        calls(("get_weather", {"city": "Lyon"})),
        False,
        "wrong_value:city",
        True,
    ),
    (
        "string_other_punct_counts",
        [g("search", query=["a+b"])],
        calls(("search", {"query": "ab"})),
        False,
        "wrong_value:query",
        True,
    ),
    (
        "list_in_order",
        [g("search", query=["q"], tags=[["A", "b"]])],
        calls(("search", {"query": "q", "tags": ["a", "B"]})),
        True,
        None,
        True,
    ),
    (
        "list_order_matters",
        [g("search", query=["q"], tags=[["a", "b"]])],
        calls(("search", {"query": "q", "tags": ["b", "a"]})),
        False,
        "wrong_value:tags",
        True,
    ),
    (
        "list_length",
        [g("search", query=["q"], tags=[["a", "b"]])],
        calls(("search", {"query": "q", "tags": ["a"]})),
        False,
        "wrong_value:tags",
        True,
    ),
    (
        "dict_recursive",
        [g("search", query=["q"], filters=[{"price": 10, "brand": "Nike"}])],
        calls(("search", {"query": "q", "filters": {"price": 10.0, "brand": "nike"}})),
        True,
        None,
        True,
    ),
    (
        "dict_wrong_inner",
        [g("search", query=["q"], filters=[{"price": 10}])],
        calls(("search", {"query": "q", "filters": {"price": 11}})),
        False,
        "wrong_value:filters",
        True,
    ),
    (
        "dict_extra_key",
        [g("search", query=["q"], filters=[{"price": 10}])],
        calls(("search", {"query": "q", "filters": {"price": 10, "x": 1}})),
        False,
        "wrong_value:filters",
        True,
    ),
    (
        "dict_bfcl_options",
        [g("search", query=["q"], filters=[{"price": [10, 20], "brand": ["", "Nike"]}])],
        calls(("search", {"query": "q", "filters": {"price": 20}})),
        True,
        None,
        True,
    ),
    # --- counts and parallel calls
    (
        "too_many_calls",
        [WEATHER],
        calls(("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Lyon"})),
        False,
        "wrong_count",
        False,
    ),
    (
        "too_few_calls",
        [WEATHER, g("get_time")],
        calls(("get_weather", {"city": "Paris"})),
        False,
        "wrong_count",
        False,
    ),
    (
        "parallel_any_order",
        [WEATHER, g("get_time")],
        calls(("get_time", {}), ("get_weather", {"city": "paris"})),
        True,
        None,
        True,
    ),
    # Greedy first-fit pairs pred x=1 with A, then x=2 fails B; the optimal pairing accepts it.
    (
        "parallel_needs_optimal",
        [g("pick", x=[1, 2]), g("pick", x=[1])],
        calls(("pick", {"x": 1}), ("pick", {"x": 2})),
        True,
        None,
        True,
    ),
    (
        "parallel_one_wrong",
        [g("pick", x=[1]), g("pick", x=[2])],
        calls(("pick", {"x": 2}), ("pick", {"x": 3})),
        False,
        "wrong_value:x",
        True,
    ),
    (
        "parallel_wrong_name",
        [WEATHER, g("get_time")],
        calls(("get_weather", {"city": "Paris"}), ("get_date", {})),
        False,
        "wrong_name",
        False,
    ),
    # --- outcome states
    ("parse_failure", [WEATHER], ParseResult("failure", [], "truncated"), False, "parse_failure", False),
    ("no_call_when_expected", [WEATHER], ParseResult("no_call"), False, "no_call", False),
    ("abstain_correct", [], ParseResult("no_call"), True, None, True),
    ("abstain_parse_failure", [], ParseResult("failure", [], "invalid_json"), False, "parse_failure", False),
    (
        "called_when_none",
        [],
        calls(("get_weather", {"city": "Paris"})),
        False,
        "called_when_none_expected",
        False,
    ),
]


@pytest.mark.parametrize(
    ("gold", "parsed", "correct", "reason", "function_match"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_match_rules(
    gold: list[GoldCall], parsed: ParseResult, correct: bool, reason: str | None, function_match: bool
) -> None:
    verdict = match_calls(gold, TOOLS, parsed)
    assert (verdict.correct, verdict.reason, verdict.function_match) == (correct, reason, function_match)


def test_greedy_order_reversed_gold_also_matches() -> None:
    gold = [g("pick", x=[1]), g("pick", x=[1, 2])]
    assert match_calls(gold, TOOLS, calls(("pick", {"x": 2}), ("pick", {"x": 1}))).correct


@pytest.mark.parametrize(
    ("gold", "parsed", "expected"),
    [
        # 1 of 2 gold arguments right (unit omitted is fine; city wrong).
        ([WEATHER], calls(("get_weather", {"city": "Lyon"})), (1, 2)),
        ([WEATHER], calls(("get_weather", {"city": "Paris", "unit": "celsius"})), (2, 2)),
        # Parallel: the best pairing counts x=1 right for the first gold and 0 for the second.
        ([g("pick", x=[1]), g("pick", x=[2])], calls(("pick", {"x": 5}), ("pick", {"x": 1})), (1, 2)),
        # Wrong function: parameters are not counted.
        ([WEATHER], calls(("get_forecast", {"city": "Paris"})), (0, 0)),
        ([WEATHER], ParseResult("no_call"), (0, 0)),
    ],
)
def test_parameter_counts(gold: list[GoldCall], parsed: ParseResult, expected: tuple[int, int]) -> None:
    v = match_calls(gold, TOOLS, parsed)
    assert (v.params_correct, v.params_total) == expected


def test_unknown_tool_uses_gold_for_allowed_arguments() -> None:
    gold = [g("mystery", a=[1])]
    assert match_calls(gold, TOOLS, calls(("mystery", {"a": 1}))) == Verdict(True, None, True, 1, 1)
    assert match_calls(gold, TOOLS, calls(("mystery", {"a": 1, "b": 2}))).reason == "unexpected_arg"


def test_openai_wrapped_tools_are_read() -> None:
    wrapped = [{"type": "function", "function": t} for t in TOOLS]
    assert match_calls([g("pick", x=[1])], wrapped, calls(("pick", {"x": True}))).reason == "wrong_type:x"


def test_dotted_names_compare_exactly() -> None:
    gold = [g("math.factorial", n=[5])]
    tools = [tool("math.factorial", {"n": "integer"}, ["n"])]
    assert match_calls(gold, tools, calls(("math.factorial", {"n": 5}))).correct
    assert match_calls(gold, tools, calls(("factorial", {"n": 5}))).reason == "wrong_name"


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        (1, 1.0, True),
        (True, 1, False),
        (0, False, False),
        ("5", 5, False),
        (None, None, True),
        (None, "", False),
        ([1, [2, "X"]], [1.0, [2, "x"]], True),
        ({"a": [1]}, {"a": [1]}, True),
    ],
)
def test_values_equal(a: Any, b: Any, equal: bool) -> None:
    assert values_equal(a, b) is equal


def test_normalize_string() -> None:
    assert normalize_string("New-York, N.Y./A_B*C^D 'q'") == 'newyorknyabcd"q"'


# --- BFCL's list element types and variable references (issue 12)

ARRAYS = [
    {
        "name": "stats",
        "description": "stats",
        "parameters": {
            "type": "object",
            "properties": {
                "vals": {"type": "array", "items": {"type": "number"}},
                "names": {"type": "array", "items": {"type": "string"}},
                "data": {"type": "array", "items": {"type": "number"}},
                "year": {"type": "integer"},
                "ratio": {"type": "number"},
            },
            "required": [],
        },
    }
]

ELEMENT_AND_VARIABLE_CASES = [
    # (id, gold arguments, predicted arguments, reason)
    ("float_list_of_floats", {"vals": [[3.0, 2.0, -4.0]]}, {"vals": [3.0, 2.0, -4.0]}, None),
    ("float_list_given_ints", {"vals": [[3.0, 2.0, -4.0]]}, {"vals": [3, 2, -4]}, "wrong_type:vals"),
    ("float_list_one_int", {"vals": [[3.0, 2.5]]}, {"vals": [3, 2.5]}, "wrong_type:vals"),
    ("float_list_gold_ints", {"vals": [[3, 2, -4]]}, {"vals": [3, 2, -4]}, None),
    ("float_list_bool_element", {"vals": [[1.0]]}, {"vals": [True]}, "wrong_type:vals"),
    ("string_list_int_element", {"names": [["a", "b"]]}, {"names": ["a", 5]}, "wrong_type:names"),
    ("string_list_lenient_values", {"names": [["New York"]]}, {"names": ["new york"]}, None),
    ("int_for_float_top_level", {"ratio": [2.0]}, {"ratio": 2}, None),
    ("variable_exact", {"data": ["data['sales']"]}, {"data": "data['sales']"}, None),
    ("variable_case", {"data": ["data['sales']"]}, {"data": "Data['sales']"}, "wrong_value:data"),
    ("variable_quotes", {"data": ["data['sales']"]}, {"data": 'data["sales"]'}, "wrong_value:data"),
    ("variable_spaces", {"data": ["data['sales']"]}, {"data": "data[ 'sales' ]"}, "wrong_value:data"),
    ("variable_schema_type_value", {"data": ["data['sales']"]}, {"data": [1.0, 2.0]}, "wrong_value:data"),
    ("variable_other_type", {"data": ["data['sales']"]}, {"data": 5}, "wrong_type:data"),
    ("dontcare_exact", {"year": ["dontcare"]}, {"year": "dontcare"}, None),
    ("dontcare_case", {"year": ["dontcare"]}, {"year": "DontCare"}, "wrong_value:year"),
    ("dontcare_punct", {"year": ["dontcare"]}, {"year": "dont-care"}, "wrong_value:year"),
    ("integer_not_variable", {"year": [2024]}, {"year": 2024}, None),
]


@pytest.mark.parametrize(
    ("gold_args", "pred_args", "reason"),
    [c[1:] for c in ELEMENT_AND_VARIABLE_CASES],
    ids=[c[0] for c in ELEMENT_AND_VARIABLE_CASES],
)
def test_element_types_and_variable_references(gold_args: dict, pred_args: dict, reason: str | None) -> None:
    verdict = match_calls([GoldCall("stats", gold_args)], ARRAYS, calls(("stats", pred_args)))
    assert (verdict.correct, verdict.reason) == (reason is None, reason)


def test_raw_bfcl_type_names_read_through_the_schema_table() -> None:
    prop = {"type": "tuple", "items": {"type": "float"}}
    raw = [{"name": "f", "parameters": {"type": "dict", "properties": {"v": prop}}}]
    assert match_calls([GoldCall("f", {"v": [[1.5]]})], raw, calls(("f", {"v": [1]}))).reason == "wrong_type:v"
    assert match_calls([GoldCall("f", {"v": [[1.5]]})], raw, calls(("f", {"v": [1.5]}))).correct


# Gold A accepts x=1 or 2, gold B only x=1; the prediction lists x=1 first.
FIRST_FIT_TRAP = ([g("pick", x=[1, 2]), g("pick", x=[1])], calls(("pick", {"x": 1}), ("pick", {"x": 2})))


@pytest.mark.parametrize(
    ("mode", "correct", "reason"), [("optimal", True, None), ("greedy", False, "wrong_value:x")]
)
def test_parallel_matching_modes(mode: str, correct: bool, reason: str | None) -> None:
    gold, parsed = FIRST_FIT_TRAP
    verdict = match_calls(gold, TOOLS, parsed, parallel_matching=mode)
    assert (verdict.correct, verdict.reason, verdict.function_match) == (correct, reason, True)
    # Both modes count the same arguments; greedy pairs (A, x=1) then (B, x=2): 1 of 2 right.
    assert (verdict.params_correct, verdict.params_total) == ((2, 2) if correct else (1, 2))


def test_greedy_accepts_what_first_fit_can_pair() -> None:
    gold = [WEATHER, g("get_time")]
    parsed = calls(("get_time", {}), ("get_weather", {"city": "paris"}))
    assert match_calls(gold, TOOLS, parsed, parallel_matching="greedy") == Verdict(True, None, True, 2, 2)


def test_unknown_pairing_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="parallel_matching='best'"):
        match_calls([WEATHER], TOOLS, calls(("get_weather", {"city": "Paris"})), parallel_matching="best")
