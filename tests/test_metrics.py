from __future__ import annotations

import math

import pytest

from agentcoder.data.example import GoldCall, ToolCall
from agentcoder.evaluation.metrics import METRICS, compute_metrics, format_table, percentile, wilson_interval
from agentcoder.evaluation.parser import ParseResult
from agentcoder.evaluation.scoring import ArgumentCounts, argument_counts


def row(i, cat, expects, n_gold, status, correct, fm, pc, pt, out, lat, args) -> dict:
    pred, pred_right, gold, gold_right = args
    return {
        "id": f"ex{i}", "category": cat, "prompt_tokens": 100, "output_tokens": out, "raw": "...",
        "status": status, "calls": [], "correct": correct, "reason": None if correct else "x",
        "function_match": fm, "params_correct": pc, "params_total": pt, "expects_call": expects,
        "n_gold_calls": n_gold, "ms_per_example": 1000 * lat, "latency_s": lat,
        "pred_args": pred, "pred_args_right": pred_right, "gold_args": gold, "gold_args_right": gold_right,
    }  # fmt: skip


ROWS = [  # the last tuple: pred_args, pred_args_right, gold_args, gold_args_right
    row(1, "simple", True, 1, "calls", True, True, 2, 2, 10, 1.0, (2, 2, 2, 2)),
    row(2, "simple", True, 1, "calls", False, True, 1, 3, 20, 2.0, (4, 1, 3, 1)),
    row(3, "simple", True, 1, "failure", False, False, 0, 0, 30, 3.0, (0, 0, 2, 0)),
    row(4, "parallel", True, 2, "calls", True, True, 4, 4, 40, 4.0, (4, 4, 3, 3)),
    row(5, "parallel", True, 2, "calls", False, False, 0, 0, 50, 5.0, (2, 1, 4, 1)),
    row(6, "irrelevance", False, 0, "no_call", True, True, 0, 0, 5, 1.0, (0, 0, 0, 0)),
    row(7, "irrelevance", False, 0, "failure", False, False, 0, 0, 15, 2.0, (0, 0, 0, 0)),
]


def test_overall_by_hand() -> None:
    m = compute_metrics(ROWS, wall_time_s=10.0, peak_memory_bytes=123)["overall"]
    expected = {
        "n": 7,
        "exact_match": 3 / 7,  # rows 1, 4, 6
        "function_selection": 3 / 5,  # rows 1, 2, 4 of the five that expect a call
        "parameter_accuracy": 7 / 9,  # (2 + 1 + 4) / (2 + 3 + 4) over rows 1, 2, 4
        "argument_precision": 8 / 12,  # (2 + 1 + 4 + 1) / (2 + 4 + 4 + 2): every row, not only the right names
        "argument_recall": 7 / 14,  # (2 + 1 + 3 + 1) / (2 + 3 + 2 + 3 + 4)
        "multi_call_accuracy": 1 / 2,  # rows 4, 5
        "irrelevance_accuracy": 1 / 2,  # row 6; row 7: a parse failure judged wrong (eval.irrelevance_unparsed=wrong)
        "parse_failure_rate": 2 / 7,  # rows 3, 7
        "mean_output_tokens": 170 / 7,
        "latency_n": 7,
        "latency_mean_s": 18 / 7,
        "latency_p50_s": 2.0,  # sorted 1 1 2 2 3 4 5
        "latency_p95_s": 4.7,  # position 5.7: 4 + 0.7 * (5 - 4)
        "ms_per_example": 10_000 / 7,  # throughput: the wall time per example
        "examples_per_s": 0.7,
        "tokens_per_s": 17.0,
        "peak_memory_bytes": 123,
    }
    counts = {
        "exact_match": (3, 7), "function_selection": (3, 5), "parameter_accuracy": (7, 9),
        "argument_precision": (8, 12), "argument_recall": (7, 14),
        "multi_call_accuracy": (1, 2), "irrelevance_accuracy": (1, 2), "parse_failure_rate": (2, 7),
    }  # fmt: skip
    for key, (k, n) in counts.items():
        expected[f"{key}_n"] = n
        expected[f"{key}_ci"] = list(wilson_interval(k, n))
    assert m.keys() == expected.keys()
    for k, v in expected.items():
        assert m[k] == pytest.approx(v), k


@pytest.mark.parametrize(
    ("k", "n", "lo", "hi"),
    [
        # Reference values: statsmodels proportion_confint(k, n, method="wilson").
        (12, 50, 0.142974, 0.374127),
        (0, 50, 0.0, 0.071348),
        (50, 50, 0.928652, 1.0),
        (1, 2, 0.094531, 0.905469),
        (5, 10, 0.236593, 0.763407),
    ],
)
def test_wilson_interval(k: int, n: int, lo: float, hi: float) -> None:
    assert wilson_interval(k, n) == pytest.approx((lo, hi), abs=1e-6)
    assert wilson_interval(0, 0) is None


def _closed_form_wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The score interval written out (what metrics.py and compare/stats.py computed before scipy's)."""
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (0.0 if k == 0 else max(0.0, centre - half)), (1.0 if k == n else min(1.0, centre + half))


@pytest.mark.parametrize("n", [1, 2, 7, 20, 50, 150, 1000])
def test_scipy_wilson_equals_the_closed_form(n: int) -> None:
    for k in range(n + 1):
        lo, hi = wilson_interval(k, n)
        assert (lo, hi) == pytest.approx(_closed_form_wilson(k, n), rel=1e-12, abs=1e-15), (k, n)
        # The ends stay exact: 0 of n is [0, ...] and n of n is [..., 1].
        assert (k > 0 or lo == 0.0) and (k < n or hi == 1.0)


def test_latency_comes_only_from_probe_rows() -> None:
    # Only rows timed alone (the probe) carry latency_s; throughput covers every row.
    rows = [dict(r, latency_s=None) for r in ROWS]
    rows[0]["latency_s"], rows[3]["latency_s"] = 0.5, 1.5
    m = compute_metrics(rows, wall_time_s=7.0)["overall"]
    assert (m["latency_n"], m["latency_p50_s"], m["ms_per_example"]) == (2, 1.0, 1000.0)
    assert m["latency_p95_s"] == pytest.approx(1.45)


def test_throughput_falls_back_to_summed_row_shares() -> None:
    m = compute_metrics(ROWS)["overall"]
    assert m["examples_per_s"] == pytest.approx(7 / 18)
    assert m["tokens_per_s"] == pytest.approx(170 / 18)
    assert m["ms_per_example"] == pytest.approx(18_000 / 7)
    assert m["peak_memory_bytes"] is None


def test_per_category_by_hand() -> None:
    per = compute_metrics(ROWS, wall_time_s=10.0)["per_category"]
    assert set(per) == {"simple", "parallel", "irrelevance"}
    s = per["simple"]
    assert s["n"] == 3
    assert s["exact_match"] == pytest.approx(1 / 3)
    assert s["function_selection"] == pytest.approx(2 / 3)
    assert s["parameter_accuracy"] == pytest.approx(3 / 5)
    assert s["parse_failure_rate"] == pytest.approx(1 / 3)
    assert s["mean_output_tokens"] == pytest.approx(20.0)
    assert s["latency_p95_s"] == pytest.approx(2.9)
    assert s["examples_per_s"] == pytest.approx(3 / 6)  # per category: from its own latencies
    # Nothing eligible: None, not 0.
    assert s["multi_call_accuracy"] is None
    assert s["irrelevance_accuracy"] is None
    p = per["parallel"]
    assert (p["multi_call_accuracy"], p["parameter_accuracy"], p["function_selection"]) == (0.5, 1.0, 0.5)
    i = per["irrelevance"]
    assert i["irrelevance_accuracy"] == 0.5
    assert i["function_selection"] is None
    assert i["parameter_accuracy"] is None


def test_rows_without_argument_counts_leave_those_metrics_unmeasured() -> None:
    """Prediction rows written before argument precision/recall existed: None, never 0, the rest as before."""
    old = [{k: v for k, v in r.items() if not k.endswith(("_args", "_args_right"))} for r in ROWS]
    m = compute_metrics(old, wall_time_s=10.0)["overall"]
    for key in ("argument_precision", "argument_recall"):
        assert (m[key], m[f"{key}_ci"], m[f"{key}_n"]) == (None, None, None)
    assert m["exact_match"] == pytest.approx(3 / 7) and m["parameter_accuracy"] == pytest.approx(7 / 9)
    # One old row among new ones is enough: a share over part of the rows would read as the whole.
    assert compute_metrics([old[0], *ROWS[1:]])["overall"]["argument_precision"] is None


def test_every_metric_reads_only_its_declared_fields() -> None:
    """The comparator keeps only `fields` of each prediction row: the terms must come out the same."""
    for metric in METRICS.values():
        for r in ROWS:
            assert metric.terms({k: r[k] for k in metric.fields}) == metric.terms(r), metric.name


def test_objectives_are_the_metrics_where_higher_is_better() -> None:
    from agentcoder.checks import OBJECTIVES

    assert OBJECTIVES == tuple(name for name, m in METRICS.items() if m.higher_is_better)
    assert {"exact_match", "argument_precision", "argument_recall"} <= set(OBJECTIVES)
    assert "parse_failure_rate" not in OBJECTIVES


def test_empty_run_is_all_none() -> None:
    m = compute_metrics([])["overall"]
    assert m["n"] == 0 and m["latency_n"] == 0
    assert all(v is None for k, v in m.items() if k != "n" and not k.endswith("_n"))
    assert all(m[f"{k}_n"] == 0 for k in METRICS)


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [([3.0], 95, 3.0), ([1.0, 2.0], 50, 1.5), ([4.0, 1.0, 3.0, 2.0], 50, 2.5), ([], 50, None)],
)
def test_percentile(values: list[float], q: float, expected: float | None) -> None:
    assert percentile(values, q) == expected


def test_format_table() -> None:
    text = format_table(compute_metrics(ROWS, wall_time_s=10.0))
    lines = text.splitlines()
    assert len(lines) == 1 + 1 + 3 + 1  # header, overall, three categories, the legend
    assert lines[0].split()[:12] == ["n", "EM", "func", "params", "arg", "prec", "arg", "rec", "multi", "irrel",
                                     "parse", "fail"]
    assert lines[1].split()[:4] == ["overall", "7", "0.429", "[0.16,0.75]"]
    assert lines[1].split()[8:10] == ["0.667", "[0.39,0.86]"]  # argument precision, 8 of 12
    assert "arg prec: argument precision" in lines[-1] and "parse failure rate (lower is better)" in lines[-1]
    simple = next(line for line in lines if line.startswith("simple"))
    assert "-" in simple.split()  # multi/irrelevance not measured show as "-"


# ------------------------------------------------------------------ argument precision and recall

TOOLS = [
    {"name": "get_weather", "parameters": {"type": "object", "required": ["city"], "properties": {
        "city": {"type": "string"}, "unit": {"type": "string"}, "days": {"type": "integer"}}}},
    {"type": "function", "function": {"name": "area", "parameters": {"type": "object", "properties": {
        "base": {"type": "number"}, "height": {"type": "number"}}}}},
]
# city must be given; unit may be omitted ("" among its values) and is "celsius" when given.
WEATHER = GoldCall("get_weather", {"city": ["Paris", "paris, france"], "unit": ["", "celsius"]})
AREA = GoldCall("area", {"base": [3.0], "height": [4.0]})


def calls(*items: tuple[str, dict]) -> ParseResult:
    return ParseResult("calls", [ToolCall(name, args) for name, args in items])


@pytest.mark.parametrize(
    ("gold", "parsed", "expected"),
    [
        # (pred_args, pred_args_right, gold_args, gold_args_right)
        pytest.param([WEATHER], calls(("get_weather", {"city": "Paris"})), (1, 1, 1, 1), id="right"),
        pytest.param([WEATHER], calls(("get_weather", {"city": "PARIS, France"})), (1, 1, 1, 1),
                     id="another_acceptable_value"),
        pytest.param([WEATHER], calls(("get_weather", {"city": "Paris", "unit": "celsius"})), (2, 2, 1, 1),
                     id="optional_given_right"),
        pytest.param([WEATHER], calls(("get_weather", {"city": "Paris", "unit": "kelvin"})), (2, 1, 1, 1),
                     id="optional_given_wrong"),
        pytest.param([WEATHER], calls(("get_weather", {"city": "Lyon"})), (1, 0, 1, 0), id="wrong_value"),
        pytest.param([WEATHER], calls(("get_weather", {"city": 7})), (1, 0, 1, 0), id="wrong_type"),
        pytest.param([WEATHER], calls(("get_weather", {"unit": "celsius"})), (1, 1, 1, 0), id="mandatory_missing"),
        pytest.param([WEATHER], calls(("get_weather", {"city": "Paris", "days": 3})), (2, 1, 1, 1),
                     id="extra_arg"),
        pytest.param([WEATHER], calls(("get_forecast", {"city": "Paris"})), (1, 0, 1, 0), id="wrong_name"),
        pytest.param([WEATHER], ParseResult("no_call"), (0, 0, 1, 0), id="no_call_when_expected"),
        pytest.param([WEATHER], ParseResult("failure", reason="truncated"), (0, 0, 1, 0), id="parse_failure"),
        pytest.param([], ParseResult("no_call"), (0, 0, 0, 0), id="no_call_expected_none_given"),
        pytest.param([], calls(("get_weather", {"city": "Paris"})), (1, 0, 0, 0), id="call_when_none_expected"),
        pytest.param([], ParseResult("failure", reason="invalid_json"), (0, 0, 0, 0), id="parse_failure_no_call"),
        # Parallel: pairing by name, in any order, and partial credit when a call is missing or extra.
        pytest.param([WEATHER, AREA], calls(("area", {"base": 3, "height": 4}), ("get_weather", {"city": "Paris"})),
                     (3, 3, 3, 3), id="parallel_any_order"),
        pytest.param([WEATHER, AREA], calls(("area", {"base": 3, "height": 5})), (2, 1, 3, 1),
                     id="parallel_one_call_missing"),
        pytest.param([AREA], calls(("area", {"base": 3, "height": 9}), ("area", {"base": 3, "height": 4})),
                     (4, 2, 2, 2), id="extra_call"),
    ],
)
def test_argument_counts(gold: list[GoldCall], parsed: ParseResult, expected: tuple[int, int, int, int]) -> None:
    assert argument_counts(gold, TOOLS, parsed) == ArgumentCounts(*expected)


def test_judge_records_the_argument_counts_in_each_prediction_row() -> None:
    from agentcoder.data.example import Example
    from agentcoder.evaluation.evaluator import judge

    ex = Example("e1", "test", "simple", [{"role": "user", "content": "q"}], TOOLS, [WEATHER])
    row = judge(ex, '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "kelvin"}}')
    assert (row["pred_args"], row["pred_args_right"], row["gold_args"], row["gold_args_right"]) == (2, 1, 1, 1)
    m = compute_metrics([{**row, "id": ex.id, "expects_call": True, "n_gold_calls": 1}])["overall"]
    assert (m["argument_precision"], m["argument_recall"]) == (0.5, 1.0)


@pytest.mark.parametrize(("rule", "correct"), [("correct", True), ("wrong", False)])
def test_an_unparseable_answer_to_an_irrelevance_prompt_follows_eval_irrelevance_unparsed(rule, correct) -> None:
    """BFCL's checker counts an answer it cannot decode as an abstention ("correct", the default); "wrong"
    counts only a clean answer without a call.  Either way the row says it did not parse, and
    parse_failure_rate counts it."""
    from agentcoder.data.example import Example
    from agentcoder.evaluation.evaluator import judge

    tool = {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}
    irrelevant = Example("irrelevance_0", "test", "irrelevance", [], [tool], [])
    garbled = '[{"name": "get_weather", "arguments": {"city": '
    verdict = judge(irrelevant, garbled, irrelevance_unparsed=rule)
    assert verdict["status"] == "failure" and verdict["correct"] is correct
    assert verdict["reason"] == (None if correct else "parse_failure")
    asked = Example("simple_0", "test", "simple", [], [tool], [GoldCall("get_weather", {"city": ["Paris"]})])
    assert judge(asked, garbled, irrelevance_unparsed=rule)["correct"] is False  # a call was expected: wrong
    rows = [{**judge(irrelevant, garbled, irrelevance_unparsed=rule), "expects_call": False, "n_gold_calls": 0},
            {**judge(irrelevant, "No function fits.", irrelevance_unparsed=rule), "expects_call": False,
             "n_gold_calls": 0}]
    m = compute_metrics(rows)["overall"]
    assert m["irrelevance_accuracy"] == m["exact_match"] == (1.0 if correct else 0.5)
    assert m["parse_failure_rate"] == 0.5


def test_judge_defaults_to_bfcls_rule_and_the_training_signals_to_the_strict_one() -> None:
    from agentcoder.config import EvalConfig
    from agentcoder.evaluation.scoring import score_output

    assert EvalConfig().irrelevance_unparsed == "correct"
    assert score_output([], [], "[{")[1].correct is False  # rewards and DPO pairs: no credit for garbled text
