"""Final test metrics go to the tracker the training logged to (agentcoder/tracking/trackers.py).

tensorboard is covered end to end in tests/test_lora.py, mlflow here (the `trackers` extra, which the
test extra installs: mlflow-skinny and a local file store).
"""

from __future__ import annotations

import pytest

from agentcoder.tracking.trackers import final_scalars, report_final
from tests.test_lora import bfcl_cache, lora_cfg, run_lora  # noqa: F401 - bfcl_cache is a fixture

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
    import mlflow

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # mlflow-skinny has no sqlite store
    mlflow.set_tracking_uri((tmp_path / "mlruns").as_uri())
    with mlflow.start_run() as run:  # what transformers' MLflowCallback does during training
        mlflow.log_metric("train/loss", 1.25, step=3)
    where = report_final(["mlflow"], tmp_path, METRICS, step=3)
    assert where == {"mlflow": f"mlflow run {run.info.run_id}"}
    got = mlflow.MlflowClient().get_run(run.info.run_id).data.metrics
    assert got == {"train/loss": 1.25, "test/exact_match": 0.5, "test/exact_match_n": 50.0,
                   "test/simple/exact_match": 1.0}


@pytest.mark.slow  # a real training run: ~35 s here
def test_a_lora_runs_params_curves_and_test_metrics_are_read_back_from_mlflow(
        tiny_model_dir, bfcl_cache, tmp_path, monkeypatch):  # noqa: F811
    import mlflow

    store = tmp_path / "mlruns"
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.as_uri())
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "agentcoder-test")
    mlflow.set_tracking_uri(store.as_uri())
    cfg = lora_cfg(tiny_model_dir, bfcl_cache, "method.train.max_steps=4", "method.train.logging_steps=1",
                   "method.train.eval_steps=4", "method.train.lr=3e-4", "method.train.report_to=[mlflow]")
    run_dir = tmp_path / "run"
    metrics, _ = run_lora(cfg, run_dir)
    where = report_final(["mlflow"], run_dir, metrics, step=4)  # what the launcher does after the method

    client = mlflow.MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("agentcoder-test").experiment_id])
    assert where == {"mlflow": f"mlflow run {run.info.run_id}"}
    assert float(run.data.params["learning_rate"]) == 3e-4 and run.data.params["max_steps"] == "4"
    losses = client.get_metric_history(run.info.run_id, "loss")
    assert [m.step for m in losses] == [1, 2, 3, 4] and all(m.value > 0 for m in losses)
    assert run.data.metrics["test/exact_match"] == pytest.approx(metrics["overall"]["exact_match"])
