"""Final test metrics go to the tracker the training logged to (agentcoder/tracking/trackers.py).

tensorboard is covered end to end in tests/test_lora.py; mlflow is optional (not in the test extra),
so its test runs where mlflow is installed (`pip install mlflow-skinny`).
"""

from __future__ import annotations

import pytest

from agentcoder.tracking.trackers import final_scalars, report_final

METRICS = {
    "overall": {"exact_match": 0.5, "exact_match_n": 50, "exact_match_ci": [0.3, 0.7], "latency_p50_s": None,
                "parse_failure_rate": float("nan"), "flag": True},
    "per_category": {"simple": {"exact_match": 1.0}, "parallel": {"exact_match": None}},
}


def test_final_scalars_are_the_finite_numbers_of_the_result():
    assert final_scalars(METRICS) == {"test/exact_match": 0.5, "test/exact_match_n": 50.0,
                                      "test/simple/exact_match": 1.0}


def test_a_tracker_that_fails_does_not_fail_the_run(tmp_path):
    (tmp_path / "tensorboard").write_text("a file where the log dir should be")
    where = report_final(["tensorboard", "none"], tmp_path, METRICS)
    assert list(where) == ["tensorboard"] and where["tensorboard"].startswith("not sent: ")


def test_final_metrics_join_the_mlflow_run_the_training_logged_to(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # mlflow-skinny has no sqlite store
    mlflow.set_tracking_uri((tmp_path / "mlruns").as_uri())
    with mlflow.start_run() as run:  # what transformers' MLflowCallback does during training
        mlflow.log_metric("train/loss", 1.25, step=3)
    where = report_final(["mlflow"], tmp_path, METRICS, step=3)
    assert where == {"mlflow": f"mlflow run {run.info.run_id}"}
    got = mlflow.MlflowClient().get_run(run.info.run_id).data.metrics
    assert got == {"train/loss": 1.25, "test/exact_match": 0.5, "test/exact_match_n": 50.0,
                   "test/simple/exact_match": 1.0}
