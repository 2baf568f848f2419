"""One skeleton: the method table dispatches, every run returns one result shape, run.json holds
the resolved config, and the Hydra task hands a sweeper the objective metric."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from agentcoder import methods
from agentcoder.config import METHODS, MethodSpec, built_methods
from agentcoder.methods import load_method
from agentcoder.preflight import CONF_DIR
from agentcoder.run import run_task


def hydra_multirun(conf_dir: Path, overrides: list[str]) -> list:
    """Run a sweep in-process with Hydra's basic sweeper and return its JobReturns (flattened)."""
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        hydra = Hydra.create_main_hydra2("run", create_config_search_path(str(conf_dir)))
        batches = hydra.multirun(config_name="config", task_function=run_task, overrides=overrides)
    finally:
        GlobalHydra.instance().clear()
    return [job for batch in batches for job in batch]


def test_a_sweeper_receives_the_objective_metric_and_run_json_holds_the_resolved_config(tmp_path):
    jobs = hydra_multirun(CONF_DIR, ["method=debug", "method.value=0.25,0.75", f"hydra.sweep.dir={tmp_path}"])
    assert [job.return_value for job in jobs] == [0.25, 0.75]

    record = json.loads((tmp_path / "1" / "run.json").read_text())
    assert record["config"]["method"] == {"name": "debug", "fail": False, "fail_rank": None, "value": 0.75,
                                          "sleep_s": 0.0}
    assert record["objective"] == {"metric": "exact_match", "split": "val", "n": None, "value": 0.75}
    assert record["config"]["eval"]["objective"] == "exact_match"
    assert "${" not in json.dumps(record["config"])  # resolved, e.g. cache_dir
    metrics = json.loads((tmp_path / "1" / "metrics.json").read_text())
    assert metrics["schema_version"] == 1
    assert set(metrics) == {"schema_version", "method", "split", "model", "overall", "per_category", "training",
                            "artifacts", "details", "evaluation", "objective"}


@dataclass
class ToyMethod:
    name: str = "toy"
    score: float = 0.5


TOY_MODULE = '''
from agentcoder.tracking.result import MethodResult, val_objective

def run(cfg, record):
    overall = {"exact_match": cfg.method.score * 2}
    return MethodResult(method="toy", split="test", model="none", overall=overall,
                        objective=val_objective("exact_match", {"exact_match": cfg.method.score}, 10))
'''


def test_a_method_added_through_the_table_alone_is_dispatched(tmp_path, monkeypatch):
    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    (conf / "method" / "toy.yaml").write_text("name: toy\nscore: 0.5\n")
    (tmp_path / "toy_method.py").write_text(TOY_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(METHODS, "toy", MethodSpec(ToyMethod, "toy_method"))

    jobs = hydra_multirun(conf, ["method=toy", "method.score=0.1,0.3", f"hydra.sweep.dir={tmp_path / 'sweep'}"])
    assert [job.return_value for job in jobs] == pytest.approx([0.1, 0.3])  # its val figure, never test
    assert "toy" in built_methods()
    metrics = json.loads((tmp_path / "sweep" / "0" / "metrics.json").read_text())
    assert metrics["method"] == "toy" and metrics["overall"] == {"exact_match": pytest.approx(0.2)}


def test_unknown_keys_of_another_method_are_refused(tmp_path):
    from agentcoder.config import ConfigError
    from tests.helpers import compose_cfg

    with pytest.raises(ConfigError, match="method.grpo"):
        compose_cfg("method=ppo", "+method.grpo.beta=0.1")
    with pytest.raises(ConfigError, match="method.dpo.beta"):
        compose_cfg("method=dpo", "method.dpo.beta=0")
    cfg = compose_cfg("method=grpo")
    assert cfg.method.train.lr == 5.0e-5 and cfg.method.train.tokens_per_batch == "auto"  # shared method.train
    assert "beta" not in cfg.method and cfg.method.grpo.beta == 0.04


def test_planned_methods_say_so(monkeypatch):
    monkeypatch.setitem(METHODS, "planned", MethodSpec(ToyMethod, None))
    with pytest.raises(methods.MethodNotAvailable, match="method planned is not available yet"):
        load_method("planned")
    with pytest.raises(methods.MethodNotAvailable, match="unknown method"):
        load_method("nope")
