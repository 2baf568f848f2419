"""Preference pairs from a policy's own samples (method=dpo): sample k answers per prompt, score them
with the evaluation's parse + match, and pair a right answer with the policy's typical wrong one.

The choice of the pair is pure (`choose_pair`, `build_pairs`, `corrupt_answer`): tested without a model.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from agentcoder import ranks
from agentcoder.data.example import Example, GoldCall
from agentcoder.data.prompts import render_target
from agentcoder.files import atomic_write_text


@dataclass(frozen=True)
class Candidate:
    """A sampled answer, scored by the evaluation's parse + match."""

    text: str
    correct: bool
    reason: str | None = None  # the failure's kind (the matcher's reason up to ':'), None when correct


def failure_kind(reason: str | None) -> str | None:
    """'wrong_value:city' -> 'wrong_value': pairs are counted by the kind of mistake, not the argument."""
    return reason.split(":", 1)[0] if reason else None


def choose_pair(gold: str, candidates: Sequence[Candidate], corrupted: Candidate | None = None) -> dict | None:
    """The preference pair of one prompt, or None.

    chosen: the most frequent correct candidate, else GOLD.  rejected: the most frequent text among
    the candidates of the most frequent failure kind (ties: the first sampled), so the pair targets
    the policy's typical mistake; with no wrong candidate, CORRUPTED (a wrong answer) if given.
    """
    wrong = [c for c in candidates if not c.correct]
    if not wrong and corrupted is not None and not corrupted.correct:
        wrong = [corrupted]
    if not wrong:
        return None
    reason = Counter(c.reason for c in wrong).most_common(1)[0][0]
    rejected = Counter(c.text for c in wrong if c.reason == reason).most_common(1)[0][0]
    right = Counter(c.text for c in candidates if c.correct)
    chosen, source = (right.most_common(1)[0][0], "sample") if right else (gold, "gold")
    if chosen == rejected:
        return None
    return {"chosen": chosen, "rejected": rejected, "reason": reason or "unknown", "chosen_from": source,
            "corrupted": not any(not c.correct for c in candidates)}


def corrupt_answer(example: Example, tool_format: str) -> str:
    """A wrong answer close to the gold one: a call where none is due; else the gold without one
    required argument, without its last call, or with a misspelt function name."""
    if not example.answer:
        tool = example.tools[0] if example.tools else {}
        name = tool.get("function", tool).get("name", "f")
        return render_target(replace(example, answer=[GoldCall(name, {})]), tool_format)
    calls = [GoldCall(c.name, dict(c.arguments)) for c in example.answer]
    first = calls[0]
    needed = [a for a, values in first.arguments.items() if values and "" not in values]
    if needed:
        del first.arguments[needed[0]]
    elif len(calls) > 1:
        calls.pop()
    else:
        first.name += "_v2"
    return render_target(replace(example, answer=calls), tool_format)


def score(example: Example, text: str) -> Candidate:
    from agentcoder.evaluation.evaluator import score_output

    _, verdict = score_output(example.answer, example.tools, text)
    return Candidate(text, verdict.correct, failure_kind(verdict.reason))


def build_pairs(
    examples: Sequence[Example], samples: dict[str, list[Candidate]], fmt: Any, *, corrupted_pairs: bool,
    max_length: int | None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Preference rows (prompt/chosen/rejected plus id, category, reason) and their counts."""
    rows, too_long, no_pair = [], 0, 0
    no_call = {ex.id for ex in examples if not ex.expects_call}
    for ex in examples:
        if ex.id not in samples:
            continue
        corrupted = score(ex, corrupt_answer(ex, fmt.tool_format)) if corrupted_pairs else None
        pair = choose_pair(fmt.target(ex), samples[ex.id], corrupted)
        if pair is None:
            no_pair += 1
            continue
        row = fmt.preference_row(ex, pair["chosen"], pair["rejected"])
        # Truncation keeps the start: a cut answer would teach the pair's ends away.
        longest = max(fmt.n_tokens(row["prompt"] + row[k]) for k in ("chosen", "rejected"))
        if max_length is not None and longest > max_length:
            too_long += 1
            continue
        rows.append({"id": ex.id, "category": ex.category, **row,
                     **{k: pair[k] for k in ("reason", "chosen_from", "corrupted")}})
    every = [c for cands in samples.values() for c in cands]
    counts = {
        "n_prompts_sampled": len(samples),
        "n_samples": len(every),
        "sample_exact_match": round(sum(c.correct for c in every) / len(every), 4) if every else None,
        "n_pairs": len(rows),
        "n_prompts_without_pair": no_pair,
        "n_pairs_too_long": too_long,
        "by_reason": dict(Counter(r["reason"] for r in rows).most_common()),
        "chosen_from": dict(Counter(r["chosen_from"] for r in rows)),
        "no_call_pairs": sum(1 for r in rows if r["id"] in no_call),
    }
    return rows, counts


# --------------------------------------------------------------------------- sampling (the policy)


def sample_candidates(cfg: DictConfig, model: Any, fmt: Any, examples: Sequence[Example]) -> dict[str, list[Candidate]]:
    """k candidates per example from MODEL with the batched generator (sampling on), each scored."""
    from transformers import set_seed

    from agentcoder.evaluation.generate import generate_batched

    d, k = cfg.method.dpo, cfg.method.dpo.num_samples
    set_seed(cfg.seed)  # the same pairs whether the SFT stage was reused or trained just before
    prompts = [fmt.prompt(ex) for ex in examples for _ in range(k)]
    texts: list[str] = [""] * len(prompts)
    for gen in generate_batched(
        model, fmt.tokenizer, prompts, max_new_tokens=d.max_completion_length or cfg.eval.max_new_tokens,
        batch_size=cfg.eval.batch_size, desc=f"sample x{k}",
        sampling={"do_sample": True, "temperature": d.temperature, "top_p": d.top_p},
    ):
        texts[gen.index] = gen.text
    return {ex.id: [score(ex, t) for t in texts[i * k : (i + 1) * k]] for i, ex in enumerate(examples)}


def load_or_sample(cfg: DictConfig, model: Any, fmt: Any, examples: Sequence[Example], path: Path) -> dict:
    """SAMPLES_FILE's candidates when a killed run left it (its checkpoints trained on them), else sample."""
    if ranks.world_size() > 1 and not ranks.broadcast(path.is_file()):
        # Rank 0 samples (the run's one random stream: a one-process run's pairs) and the others read its
        # file: every rank trains on the same pairs.
        if ranks.is_main():
            _sample_into(cfg, model, fmt, examples, path)
        ranks.barrier()
        return _read_samples(path)
    if path.is_file():
        print(f"[dpo] reusing the samples in {path}")
        return _read_samples(path)
    return _sample_into(cfg, model, fmt, examples, path)


def _read_samples(path: Path) -> dict[str, list[Candidate]]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {r["id"]: [Candidate(**c) for c in r["candidates"]] for r in rows}


def _sample_into(cfg: DictConfig, model: Any, fmt: Any, examples: Sequence[Example], path: Path) -> dict:
    samples = sample_candidates(cfg, model, fmt, examples)
    atomic_write_text(path, "".join(
        json.dumps({"id": i, "candidates": [asdict(c) for c in cands]}, ensure_ascii=False) + "\n"
        for i, cands in samples.items()
    ))
    return samples
