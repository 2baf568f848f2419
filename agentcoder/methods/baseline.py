"""method=baseline: evaluate the model as it is (optionally quantized, optionally with a saved adapter).

    python -m agentcoder.run method=baseline quant=4bit
    python -m agentcoder.run method=baseline model.adapter=outputs/<day>/<time>/adapter
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from agentcoder.tracking.records import RunRecord


def run(cfg: DictConfig, record: RunRecord) -> dict[str, Any]:
    from agentcoder.data import load_splits
    from agentcoder.evaluation.evaluator import evaluate_run
    from agentcoder.evaluation.metrics import format_table
    from agentcoder.models import load_model

    splits = load_splits(cfg)
    record.update(data=splits.info)
    loaded = load_model(cfg)
    record.update(model=loaded.info)

    result = evaluate_run(cfg, loaded.model, loaded.tokenizer, splits, record.dir)
    metrics = {**result.metrics, "split": cfg.eval.split, "model": loaded.info.get("label")}
    print(format_table(metrics))
    return metrics
