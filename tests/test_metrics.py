from __future__ import annotations

import pytest

from agentcoder.evaluation.metrics import compute_metrics, format_table, percentile


def row(i, cat, expects, n_gold, status, correct, fm, pc, pt, out, lat) -> dict:
    return {
        "id": f"ex{i}", "category": cat, "prompt_tokens": 100, "output_tokens": out, "raw": "...",
        "status": status, "calls": [], "correct": correct, "reason": None if correct else "x",
        "function_match": fm, "params_correct": pc, "params_total": pt, "expects_call": expects,
        "n_gold_calls": n_gold, "latency_s": lat,
    }  # fmt: skip


ROWS = [
    row(1, "simple", True, 1, "calls", True, True, 2, 2, 10, 1.0),
    row(2, "simple", True, 1, "calls", False, True, 1, 3, 20, 2.0),
    row(3, "simple", True, 1, "failure", False, False, 0, 0, 30, 3.0),
    row(4, "parallel", True, 2, "calls", True, True, 4, 4, 40, 4.0),
    row(5, "parallel", True, 2, "calls", False, False, 0, 0, 50, 5.0),
    row(6, "irrelevance", False, 0, "no_call", True, True, 0, 0, 5, 1.0),
    row(7, "irrelevance", False, 0, "failure", False, False, 0, 0, 15, 2.0),
]


def test_overall_by_hand() -> None:
    m = compute_metrics(ROWS, wall_time_s=10.0, peak_memory_bytes=123)["overall"]
    expected = {
        "n": 7,
        "exact_match": 3 / 7,  # rows 1, 4, 6
        "function_selection": 3 / 5,  # rows 1, 2, 4 of the five that expect a call
        "parameter_accuracy": 7 / 9,  # (2 + 1 + 4) / (2 + 3 + 4) over rows 1, 2, 4
        "multi_call_accuracy": 1 / 2,  # rows 4, 5
        "irrelevance_accuracy": 1 / 2,  # row 6; row 7's parse failure is not an abstention
        "parse_failure_rate": 2 / 7,  # rows 3, 7
        "mean_output_tokens": 170 / 7,
        "latency_mean_s": 18 / 7,
        "latency_p50_s": 2.0,  # sorted 1 1 2 2 3 4 5
        "latency_p95_s": 4.7,  # position 5.7: 4 + 0.7 * (5 - 4)
        "examples_per_s": 0.7,
        "tokens_per_s": 17.0,
        "peak_memory_bytes": 123,
    }
    assert m.keys() == expected.keys()
    for k, v in expected.items():
        assert m[k] == pytest.approx(v), k


def test_throughput_falls_back_to_summed_latency() -> None:
    m = compute_metrics(ROWS)["overall"]
    assert m["examples_per_s"] == pytest.approx(7 / 18)
    assert m["tokens_per_s"] == pytest.approx(170 / 18)
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


def test_empty_run_is_all_none() -> None:
    m = compute_metrics([])["overall"]
    assert m["n"] == 0
    assert all(v is None for k, v in m.items() if k != "n")


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [([3.0], 95, 3.0), ([1.0, 2.0], 50, 1.5), ([4.0, 1.0, 3.0, 2.0], 50, 2.5), ([], 50, None)],
)
def test_percentile(values: list[float], q: float, expected: float | None) -> None:
    assert percentile(values, q) == expected


def test_format_table() -> None:
    text = format_table(compute_metrics(ROWS, wall_time_s=10.0))
    lines = text.splitlines()
    assert len(lines) == 1 + 1 + 3  # header, overall, three categories
    assert lines[0].split()[:6] == ["n", "EM", "func", "params", "irrel", "parse_fail"]
    assert lines[1].split()[:3] == ["overall", "7", "0.429"]
    simple = next(line for line in lines if line.startswith("simple"))
    assert "-" in simple.split()  # multi/irrelevance not measured show as "-"
