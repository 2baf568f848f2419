from __future__ import annotations

import pytest

from agentcoder.evaluation.metrics import compute_metrics, format_table, percentile, wilson_interval


def row(i, cat, expects, n_gold, status, correct, fm, pc, pt, out, lat) -> dict:
    return {
        "id": f"ex{i}", "category": cat, "prompt_tokens": 100, "output_tokens": out, "raw": "...",
        "status": status, "calls": [], "correct": correct, "reason": None if correct else "x",
        "function_match": fm, "params_correct": pc, "params_total": pt, "expects_call": expects,
        "n_gold_calls": n_gold, "ms_per_example": 1000 * lat, "latency_s": lat,
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
    ],
)
def test_wilson_interval(k: int, n: int, lo: float, hi: float) -> None:
    assert wilson_interval(k, n) == pytest.approx((lo, hi), abs=1e-6)
    assert wilson_interval(0, 0) is None


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


def test_empty_run_is_all_none() -> None:
    m = compute_metrics([])["overall"]
    assert m["n"] == 0 and m["latency_n"] == 0
    assert all(v is None for k, v in m.items() if k != "n" and not k.endswith("_n"))


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
    assert lines[0].split()[:6] == ["n", "EM", "func", "params", "irrel", "parse_fail"]
    assert lines[1].split()[:4] == ["overall", "7", "0.429", "[0.16,0.75]"]
    simple = next(line for line in lines if line.startswith("simple"))
    assert "-" in simple.split()  # multi/irrelevance not measured show as "-"
