"""Synthetic run directories in the launcher's format, for the comparator's tests (no model needed)."""

from __future__ import annotations

import json
import os
import platform
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agentcoder.evaluation.metrics import compute_metrics

CATEGORIES = ("simple_python", "parallel", "irrelevance")


def example_ids(n: int, prefix: str = "ex") -> list[tuple[str, str]]:
    """N (id, category) pairs cycling over simple / parallel / irrelevance."""
    return [(f"{prefix}{i:03d}", CATEGORIES[i % 3]) for i in range(n)]


def prediction(ex_id: str, category: str, correct: bool, rng: random.Random) -> dict[str, Any]:
    """One predictions.jsonl row consistent with the matcher's fields (gold calls of two mandatory arguments)."""
    expects = category != "irrelevance"
    n_gold = 2 if category == "parallel" else (1 if expects else 0)
    if correct:
        status = "ok" if expects else "no_call"
        reason, func, pc, pt = None, True, n_gold * 2, n_gold * 2
    elif not expects:
        status, reason, func, pc, pt = "ok", "called_when_none_expected", False, 0, 0
    else:
        reason = rng.choice(["wrong_value:city", "wrong_name", "parse_failure", "missing_arg:unit"])
        status = "failure" if reason == "parse_failure" else "ok"
        func = reason.startswith(("wrong_value", "missing_arg"))
        pc, pt = (1, n_gold * 2) if func else (0, 0)
    gold_args = 2 * n_gold
    args = {  # reason -> pred_args, pred_args_right, gold_args_right
        None: (gold_args, gold_args, gold_args), "called_when_none_expected": (1, 0, 0),
        "wrong_value:city": (gold_args, gold_args - 1, gold_args - 1),
        "missing_arg:unit": (gold_args - 1, gold_args - 1, gold_args - 1),
        "wrong_name": (gold_args, 0, 0), "parse_failure": (0, 0, 0),
    }[reason]
    return {"id": ex_id, "category": category, "raw": "...", "correct": correct, "reason": reason, "status": status,
            "function_match": func, "params_correct": pc, "params_total": pt, "expects_call": expects,
            "n_gold_calls": n_gold, "latency_s": round(0.5 + rng.random(), 4), "output_tokens": 20,
            "pred_args": args[0], "pred_args_right": args[1], "gold_args": gold_args, "gold_args_right": args[2]}


# Prediction-row fields that rows written before argument precision/recall existed lack.
ARGUMENT_FIELDS = ("pred_args", "pred_args_right", "gold_args", "gold_args_right")


def write_run(
    run_dir: Path, *, method: str = "lora", quant: str = "none", fraction: float = 1.0, seed: int = 1,
    status: str = "completed", correct: list[bool] | None = None, ids: list[tuple[str, str]] | None = None,
    init: str = "pretrained", model: str = "smollm2-135m", error: str | None = None, shape: str = "new",
    train_steps: int = 0, config_hash: str | None = None, ended_at: str = "2026-11-26T10:00:01",
) -> Path:
    """A run dir as the launcher writes it. SHAPE "new" puts the resolved config in run.json and the
    schema_version-1 metrics; "old" only the group choices, and prediction rows without the argument
    counts (older records)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    ids = ids if ids is not None else example_ids(len(correct) if correct is not None else 30)
    correct = correct if correct is not None else [False] * len(ids)
    rng = random.Random(f"{method}{quant}{fraction}{seed}")
    rows = [prediction(i, c, ok, rng) for (i, c), ok in zip(ids, correct, strict=True)]
    if shape == "old":
        rows = [{k: v for k, v in r.items() if k not in ARGUMENT_FIELDS} for r in rows]
    h = config_hash or f"{model}-{init}-{method}-{quant}-{fraction}-{seed}-{len(ids)}"
    record: dict[str, Any] = {
        "status": status, "config_hash": h, "method": method, "seeds": {"seed": seed, "split_seed": 0},
        "data_fraction": fraction, "started_at": "2026-11-26T10:00:00", "ended_at": None, "duration_s": None,
        "choices": {"model": model, "quant": quant, "method": method, "data": "bfcl", "eval": "default"},
        "overrides": [f"method={method}", f"quant={quant}", f"data_fraction={fraction}", f"seed={seed}"]
        + ([f"model.init={init}"] if init != "pretrained" else []),
    }
    if shape == "new":
        record["config"] = {
            "model": {"name": model, "init": init}, "quant": {"name": quant},
            "method": {"name": method, "train": {"lr": 1e-4}}, "data": {"name": "bfcl", "split_seed": 0},
            "data_fraction": fraction, "seed": seed, "eval": {"split": "test", "limit": len(ids)},
        }
        record["model"] = {"name": model, "init": init, "quant": quant, "label": f"{model}/{quant}"}
    if status == "failed":
        record["error"] = error or "RuntimeError: boom"
    if status != "running":
        record["ended_at"], record["duration_s"] = ended_at, 1.0
    else:  # a live one: this process, on this host (the comparator tells a dead one as `killed`)
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        record.update(pid=os.getpid(), host=platform.node(), started_at=now, heartbeat_at=now)
    (run_dir / "run.json").write_text(json.dumps(record))
    if status != "completed":
        return run_dir
    metrics = compute_metrics(rows, wall_time_s=10.0, peak_memory_bytes=2**30 * (2 if quant == "none" else 1))
    training = None
    if method != "baseline":
        training = {"train_time_s": 100.0 * fraction, "steps": train_steps, "peak_memory_bytes": 3 * 2**30}
        log = [{"step": s, "loss": 2.0 / (1 + s * fraction)} for s in range(1, train_steps + 1)]
        log += [{"step": s, "val_exact_match": min(1.0, 0.1 * s / 5)} for s in range(5, train_steps + 1, 5)]
        (run_dir / "train_log.jsonl").write_text("".join(json.dumps(e) + "\n" for e in log))
    body = {"split": "test", "model": f"{model}/{quant}", **metrics, "training": training}
    if shape == "new":
        body = {"schema_version": 1, "method": method, **body, "artifacts": {}}
    (run_dir / "metrics.json").write_text(json.dumps(body))
    (run_dir / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run_dir


def with_accuracy(n: int, k: int, offset: int = 0) -> list[bool]:
    """N verdicts with exactly K correct, starting at OFFSET (wrapping)."""
    out = [False] * n
    for i in range(k):
        out[(offset + i) % n] = True
    return out
