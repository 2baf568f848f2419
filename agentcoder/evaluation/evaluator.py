"""Evaluate a model on examples: render -> batched generate -> parse -> match -> metrics.

The same function serves `method=baseline`, LoRA's validation checks and its final test run,
so every number in a comparison comes from one code path.  Under several processes each rank
generates its share of the examples and every rank gets all rows back (agentcoder/ranks.py).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from agentcoder import ranks
from agentcoder.data.example import Example
from agentcoder.evaluation.generate import generate_batched, generation_settings
from agentcoder.evaluation.matcher import PairingMode
from agentcoder.evaluation.metrics import compute_metrics
from agentcoder.evaluation.scoring import IrrelevanceRule, argument_counts, score_output
from agentcoder.files import PREDICTIONS_FILE
from agentcoder.models.memory import peak_memory_bytes, reset_peak_memory


@dataclass
class EvalResult:
    metrics: dict[str, Any]
    rows: list[dict[str, Any]]
    split: str | None = None  # what evaluate_run evaluated; None: nothing (eval.split=none)


def select_examples(examples: Sequence[Example], limit: int | None) -> list[Example]:
    """A deterministic cap: the LIMIT examples with the smallest id hash, a fair mix of categories.

    Splits keep corpus order (category by category), so a plain head would test one category.
    """
    if limit is None or limit >= len(examples):
        return list(examples)
    ranked = sorted(examples, key=lambda e: hashlib.sha256(f"eval:{e.id}".encode()).hexdigest())
    keep = {e.id for e in ranked[:limit]}
    return [e for e in examples if e.id in keep]


def judge(example: Example, raw: str, *, parallel_matching: PairingMode = "optimal",
          irrelevance_unparsed: IrrelevanceRule = "correct") -> dict[str, Any]:
    """Parse one raw output and match it against the example's gold calls (a predictions row's verdict)."""
    parsed, verdict = score_output(example.answer, example.tools, raw, parallel_matching=parallel_matching,
                                   irrelevance_unparsed=irrelevance_unparsed)
    args = argument_counts(example.answer, example.tools, parsed)
    return {
        "status": parsed.status,
        "calls": [asdict(c) for c in parsed.calls],
        "parse_reason": parsed.reason,
        "correct": verdict.correct,
        "reason": verdict.reason,
        "function_match": verdict.function_match,
        "params_correct": verdict.params_correct,
        "params_total": verdict.params_total,
        # The counts behind argument precision and recall (metrics.METRICS).
        **asdict(args),
    }


def latency_probe_ids(examples: Sequence[Example], k: int) -> set[str]:
    """The K examples timed alone: a fixed choice by id hash, so runs probe the same prompts."""
    ranked = sorted(examples, key=lambda e: hashlib.sha256(f"latency:{e.id}".encode()).hexdigest())
    return {e.id for e in ranked[: max(0, k)]}


def evaluate(
    model: Any,
    tokenizer: Any,
    examples: Sequence[Example],
    *,
    tool_format: str,
    max_new_tokens: int,
    batch_size: int | str = "auto",
    token_budget: int | str | None = "auto",
    latency_probe: int = 0,
    parallel_matching: PairingMode = "optimal",
    irrelevance_unparsed: IrrelevanceRule = "correct",
    progress: bool = True,
    desc: str = "eval",
) -> EvalResult:
    """Generate for every example, judge it, and compute the metrics.

    LATENCY_PROBE examples (a fixed choice) are generated one at a time after the batched rest;
    their rows carry `latency_s`, the single-request latency. Every row carries `ms_per_example`,
    its share of its batch's wall time (throughput).
    """
    from agentcoder.data.prompts import render_prompt

    # Rows are dealt out across ranks (every world_size-th), so each rank gets long and short prompts alike.
    mine = ranks.shard(len(examples))
    prompts = [render_prompt(examples[i], tokenizer, tool_format) for i in mine]
    probe = latency_probe_ids(examples, latency_probe) if latency_probe else set()
    solo = [j for j, i in enumerate(mine) if examples[i].id in probe]
    device = next(model.parameters()).device
    rows: list[dict[str, Any] | None] = [None] * len(examples)
    t0 = time.perf_counter()
    for gen in generate_batched(
        model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size, token_budget=token_budget,
        solo=solo, progress=progress and ranks.is_main(), desc=desc,
    ):
        index = mine[gen.index]
        ex = examples[index]
        rows[index] = {
            "id": ex.id,
            "category": ex.category,
            "prompt_tokens": gen.prompt_tokens,
            "output_tokens": gen.output_tokens,
            "raw": gen.text,
            **judge(ex, gen.text, parallel_matching=parallel_matching, irrelevance_unparsed=irrelevance_unparsed),
            "expects_call": ex.expects_call,
            "n_gold_calls": len(ex.answer),
            "ms_per_example": round(1000 * gen.seconds, 3),
            "latency_s": round(gen.seconds, 6) if ex.id in probe else None,
        }
    # Rounded before use, so the recorded wall time and the rates derived from it agree.
    wall = round(time.perf_counter() - t0, 6)
    peak = peak_memory_bytes(device)
    if ranks.world_size() > 1:  # every rank's rows; the slowest rank's time, the largest rank's memory
        shares = [got for per_rank in ranks.gather([(wall, peak, [(i, rows[i]) for i in mine])]) for got in per_rank]
        wall, peak = max(w for w, _, _ in shares), max(m for _, m, _ in shares)
        for _, _, share in shares:
            for i, row in share:
                rows[i] = row
    done = [r for r in rows if r is not None]
    metrics = compute_metrics(done, wall_time_s=wall, peak_memory_bytes=peak)
    metrics["overall"]["wall_time_s"] = wall
    metrics["parallel_matching"] = parallel_matching
    metrics["irrelevance_unparsed"] = irrelevance_unparsed
    metrics["generation"] = {**generation_settings(), "max_new_tokens": max_new_tokens}  # what decoded
    return EvalResult(metrics=metrics, rows=done)


def evaluate_as_run(cfg: Any, model: Any, tokenizer: Any, examples: Sequence[Example], *, desc: str,
                    progress: bool = True, latency_probe: int = 0) -> EvalResult:
    """EXAMPLES evaluated with the run's settings (cfg.eval's lengths, batching and matching): the test
    split, val selection and a baseline's val objective all go through here."""
    return evaluate(
        model, tokenizer, examples, tool_format=cfg.model.tool_format, max_new_tokens=cfg.eval.max_new_tokens,
        batch_size=cfg.eval.batch_size, token_budget=cfg.eval.token_budget, latency_probe=latency_probe,
        parallel_matching=cfg.eval.parallel_matching, irrelevance_unparsed=cfg.eval.irrelevance_unparsed,
        progress=progress, desc=desc,
    )


def write_predictions(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    from agentcoder.files import atomic_write_text

    atomic_write_text(path, "".join(json.dumps(r, default=str) + "\n" for r in rows))


def evaluate_run(cfg: Any, model: Any, tokenizer: Any, splits: Any, run_dir: Path) -> EvalResult:
    """The final evaluation every method ends with: cfg.eval.split capped at cfg.eval.limit,
    with the run's generation settings, predictions written to RUN_DIR/predictions.jsonl.
    eval.split=none (a search trial): nothing is evaluated or written."""
    if cfg.eval.split == "none":
        skipped = "eval.split=none, the test split is not evaluated"
        return EvalResult(metrics={"overall": {}, "per_category": {}, "final_evaluation": skipped}, rows=[])
    examples = select_examples(getattr(splits, cfg.eval.split), cfg.eval.limit)
    # The evaluation's own peak: not training's, nor an earlier job's of the same sweep process.
    reset_peak_memory(next(model.parameters()).device)
    result = evaluate_as_run(cfg, model, tokenizer, examples, latency_probe=cfg.eval.latency_probe,
                             desc=f"eval {cfg.eval.split}")
    if ranks.is_main():
        write_predictions(Path(run_dir) / PREDICTIONS_FILE, result.rows)
    result.split = cfg.eval.split
    return result
