"""method=baseline: evaluate the model as it is (optionally quantized, optionally with a saved adapter).

    python -m agentcoder.run method=baseline quant=4bit
    python -m agentcoder.run method=baseline model.adapter=outputs/<day>/<time>/adapter
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from agentcoder.tracking.records import RunRecord
from agentcoder.tracking.result import MethodResult


def run(cfg: DictConfig, record: RunRecord) -> MethodResult:
    return evaluate_model(cfg, record, "baseline")


def evaluate_model(cfg: DictConfig, record: RunRecord, method: str, *, trained_adapter: bool = False,
                   **result: Any) -> MethodResult:
    """Load cfg.model (with cfg.model.adapter) and evaluate it on the test split; RESULT's fields
    (training, details, artifacts, objective) go into the MethodResult.  TRAINED_ADAPTER: the adapter is
    METHOD's result (a lora job's registered adapter, methods/lora.py), merged into a full-precision base
    as a trained run's is, and labelled `+<method>`.

    The objective (unless RESULT brings the one its training selected on): eval.objective on val, read
    from the final evaluation when eval.split=val, else from an evaluation of the val sample a trained
    run selects on (method.train.val_limit's default) when eval.split=none (a search trial); a run
    evaluated on test alone has none.
    """
    from agentcoder.config import training_defaults
    from agentcoder.data import load_splits
    from agentcoder.evaluation.evaluator import evaluate_as_run, evaluate_run, select_examples
    from agentcoder.evaluation.metrics import format_table
    from agentcoder.files import PREDICTIONS_FILE
    from agentcoder.models import load_model
    from agentcoder.tracking.result import val_objective
    from agentcoder.training.setup import is_quantized

    splits = load_splits(cfg)
    record.update(data=splits.info)
    loaded = load_model(cfg)
    record.update(model=loaded.info)
    model = loaded.model.merge_and_unload() if trained_adapter and not is_quantized(cfg) else loaded.model

    evaluation = evaluate_run(cfg, model, loaded.tokenizer, splits, record.dir)
    if "objective" not in result:
        metric, overall, n = cfg.eval.objective, evaluation.metrics["overall"], len(evaluation.rows)
        if cfg.eval.split == "none":
            val = select_examples(splits.val, training_defaults().val_limit)
            got = evaluate_as_run(cfg, model, loaded.tokenizer, val, desc="eval val")
            overall, n = got.metrics["overall"], len(val)
        result["objective"] = val_objective(metric, overall, n) if cfg.eval.split in ("val", "none") else None
    predictions = {"predictions": str(record.dir / PREDICTIONS_FILE)} if evaluation.rows else {}
    artifacts = {**predictions, **result.pop("artifacts", {})}
    label = str(loaded.info.get("label"))
    if trained_adapter:
        label = f"{label.removesuffix('+adapter')}+{method}"
    outcome = MethodResult.from_evaluation(method, evaluation.split, label, evaluation.metrics, artifacts=artifacts,
                                           **result)
    print(format_table(outcome.to_metrics()))
    return outcome
