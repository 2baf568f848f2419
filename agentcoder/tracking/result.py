"""The one result shape every method returns, and the `metrics.json` written from it.

Light on purpose (no torch): the comparator and the launcher read it too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Bump when a key of metrics.json changes meaning; the comparator reads it.
METRICS_SCHEMA_VERSION = 1


@dataclass
class MethodResult:
    """What a run produced: test metrics (overall and per category), how it trained, where its files are.

    `training` is None for methods that do not train (baseline).  `details` holds the figures only
    one method has (e.g. LoRA's rank, DPO's pair counts), under "details" in metrics.json.
    """

    method: str
    split: str | None
    model: str | None  # the model label, e.g. smollm2-135m/none+lora
    overall: dict[str, Any]
    per_category: dict[str, dict[str, Any]] = field(default_factory=dict)
    training: dict[str, Any] | None = None
    artifacts: dict[str, str] = field(default_factory=dict)  # name -> path (predictions, adapter, ...)
    details: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] = field(default_factory=dict)  # how it was scored, e.g. parallel_matching
    # What the run returns to a sweeper: {metric, split ("val", never test), n, value}; None when the
    # run measured no validation figure (baseline evaluated on test only).
    objective: dict[str, Any] | None = None

    @classmethod
    def from_evaluation(cls, method: str, split: str | None, model: str | None, metrics: dict[str, Any],
                        **rest: Any) -> MethodResult:
        """A result from an evaluation's metrics ({"overall", "per_category", scoring settings...})."""
        settings = {k: v for k, v in metrics.items() if k not in ("overall", "per_category")}
        return cls(method=method, split=split, model=model, overall=metrics["overall"],
                   per_category=metrics.get("per_category", {}), evaluation=settings, **rest)

    def objective_value(self) -> float | None:
        """The objective's value as a float (what the Hydra task returns to a sweeper), None if absent."""
        return objective_value(self.objective)

    def to_metrics(self) -> dict[str, Any]:
        """The metrics.json document: the same keys for every method."""
        return {
            "schema_version": METRICS_SCHEMA_VERSION,
            "method": self.method,
            "split": self.split,
            "model": self.model,
            "overall": self.overall,
            "per_category": self.per_category,
            "training": self.training,
            "artifacts": self.artifacts,
            "details": self.details,
            "evaluation": self.evaluation,
            "objective": self.objective,
        }


def val_objective(metric: str, overall: dict[str, Any] | None, n: int | None, **where: Any) -> dict[str, Any] | None:
    """The objective record of METRIC read from a validation evaluation's OVERALL figures (n examples;
    WHERE: e.g. the step it was selected at), None when there is no such figure."""
    value = (overall or {}).get(metric)
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    return {"metric": metric, "split": "val", "n": n, "value": float(value), **where}


def objective_value(objective: dict[str, Any] | None) -> float | None:
    """The value of an objective record (run.json's `objective`), None when absent or not on val."""
    if not objective or objective.get("split") != "val" or objective.get("value") is None:
        return None
    return float(objective["value"])
