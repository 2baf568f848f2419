"""method=baseline: evaluate the model as it is (optionally quantized, optionally with a saved adapter).

    python -m agentcoder.run method=baseline quant=4bit
    python -m agentcoder.run method=baseline model.adapter=outputs/<day>/<time>/adapter
"""

from __future__ import annotations

from omegaconf import DictConfig

from agentcoder.tracking.records import RunRecord
from agentcoder.tracking.result import MethodResult


def run(cfg: DictConfig, record: RunRecord) -> MethodResult:
    from agentcoder.data import load_splits
    from agentcoder.evaluation.evaluator import evaluate_run
    from agentcoder.evaluation.metrics import format_table
    from agentcoder.files import PREDICTIONS_FILE
    from agentcoder.models import load_model

    splits = load_splits(cfg)
    record.update(data=splits.info)
    loaded = load_model(cfg)
    record.update(model=loaded.info)

    evaluation = evaluate_run(cfg, loaded.model, loaded.tokenizer, splits, record.dir)
    result = MethodResult.from_evaluation(
        "baseline", cfg.eval.split, loaded.info.get("label"), evaluation.metrics,
        artifacts={"predictions": str(record.dir / PREDICTIONS_FILE)},
    )
    print(format_table(result.to_metrics()))
    return result
