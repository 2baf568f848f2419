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
    from agentcoder.evaluation.evaluator import PREDICTIONS_FILE, evaluate, select_examples, write_predictions
    from agentcoder.evaluation.metrics import format_table
    from agentcoder.models import load_model

    splits = load_splits(cfg)
    record.update(data=splits.info)
    loaded = load_model(cfg)
    record.update(model=loaded.info)

    examples = select_examples(getattr(splits, cfg.eval.split), cfg.eval.limit)
    result = evaluate(
        loaded.model,
        loaded.tokenizer,
        examples,
        tool_format=cfg.model.tool_format,
        max_new_tokens=cfg.eval.max_new_tokens,
        batch_size=cfg.eval.batch_size,
        desc=f"eval {cfg.eval.split}",
    )
    write_predictions(record.dir / PREDICTIONS_FILE, result.rows)
    metrics = {**result.metrics, "split": cfg.eval.split, "model": loaded.info.get("label")}
    print(format_table(metrics))
    return metrics
