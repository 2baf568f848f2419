"""method=dpo: direct preference optimisation on the policy's own mistakes, from the LoRA (SFT) stage.

    python -m agentcoder.run method=dpo data_fraction=0.1
    python -m agentcoder.run method=dpo quant=4bit method.dpo.num_samples=8 method.dpo.beta=0.2
    python -m agentcoder.run method=dpo method.init=base           # from the base model, no SFT stage

Top to bottom (the shared pieces live in agentcoder/training):
  1. data    - the train split;
  2. policy  - the SFT stage's adapter (reused from a lora run with the same model, quant, data,
               data_fraction and seed, or trained here: training/stages.py), loaded trainable;
  3. pairs   - k sampled answers per train prompt, scored by the evaluation's parse + match:
               chosen = a correct sample, else the gold answer; rejected = a sample of the most
               frequent failure kind; prompts without a wrong sample give no pair (or, with
               method.dpo.corrupted_pairs, gold vs a corrupted gold).  No-call prompts take part;
  4. train   - TRL's DPOTrainer.  Given a peft model that already carries the trainable adapter
               and ref_model=None, it copies that adapter into a frozen "ref" adapter
               (trl/trainer/dpo_trainer.py, `model.add_adapter("ref", ...)`), so the reference is
               the SFT policy, not the bare base; on a 4-bit base too;
  5. select  - val exact match every eval_steps, as for lora; 6. test - the best adapter on the test split.

Files in the run dir (beyond lora's): samples.jsonl (every candidate with its verdict; a resumed run
reuses it), pairs.jsonl (the preference rows), dpo_curves.png (loss, reward margin and accuracy),
sft_stage/ (when the SFT stage was trained here).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from agentcoder.data.example import Example, GoldCall
from agentcoder.data.prompts import render_target
from agentcoder.methods.result import MethodResult
from agentcoder.tracking.records import RunRecord, atomic_write_text

TAG = "dpo"
SAMPLES_FILE = "samples.jsonl"
PAIRS_FILE = "pairs.jsonl"
CURVES_FILE = "dpo_curves.png"


# --------------------------------------------------------------------------- pairs (pure)


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
    if path.is_file():
        print(f"[{TAG}] reusing the samples in {path}")
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return {r["id"]: [Candidate(**c) for c in r["candidates"]] for r in rows}
    samples = sample_candidates(cfg, model, fmt, examples)
    atomic_write_text(path, "".join(
        json.dumps({"id": i, "candidates": [c.__dict__ for c in cands]}, ensure_ascii=False) + "\n"
        for i, cands in samples.items()
    ))
    return samples


# --------------------------------------------------------------------------- trainer


def dpo_config(cfg: DictConfig, output_dir: Path, base: Any) -> Any:
    """TRL's DPOConfig: method.train's shared fields plus method.dpo's loss."""
    from trl import DPOConfig

    from agentcoder.training.setup import trainer_args

    d = cfg.method.dpo
    args = trainer_args(cfg, output_dir, on_gpu=base.on_gpu, checkpointing=base.checkpointing)
    return DPOConfig(**args, beta=d.beta, loss_type=[d.loss_type], max_length=cfg.method.train.max_length)


def dpo_trainer(base: Any, args: Any, train_ds: Any, peft_config: Any, callbacks: list | None = None) -> Any:
    """DPOTrainer with ref_model=None: TRL's frozen copy of the loaded adapter is the reference
    (with PEFT_CONFIG, i.e. method.init=base, the reference is the base with adapters disabled)."""
    from trl import DPOTrainer

    return DPOTrainer(
        model=base.model, ref_model=None, args=args, train_dataset=train_ds, processing_class=base.tokenizer,
        peft_config=peft_config, callbacks=callbacks,
    )


def dpo_figures(log_path: Path) -> dict[str, Any]:
    """Reward margin and accuracy (and loss) at the first and last logging step, from TRL's logs."""
    from agentcoder.tracking.trainlog import read_train_log

    # A val evaluation's log line takes TRL's pending metrics, the loss line of its step has none:
    # the lines of one step are merged.
    by_step: dict[int, dict[str, Any]] = {}
    for entry in read_train_log(log_path):
        if "step" in entry:
            by_step.setdefault(int(entry["step"]), {}).update(entry)
    logged = [by_step[s] for s in sorted(by_step) if "rewards/margins" in by_step[s]]
    if not logged:
        return {}
    keys = ("step", "loss", "rewards/margins", "rewards/accuracies", "rewards/chosen", "rewards/rejected")
    return {"first": {k: logged[0].get(k) for k in keys}, "last": {k: logged[-1].get(k) for k in keys}}


# --------------------------------------------------------------------------- the recipe


def run(cfg: DictConfig, record: RunRecord, *, extra_callbacks: tuple = ()) -> MethodResult:
    """SFT stage, pairs from its samples, DPO, select on val, test."""
    from agentcoder.data import PromptFormat, load_splits
    from agentcoder.evaluation.evaluator import select_examples
    from agentcoder.tracking.trainlog import TRAIN_LOG_FILE, plot_dpo_curves
    from agentcoder.training.adapters import load_policy
    from agentcoder.training.selection import ADAPTER_DIR, ValSelection, recover_adapter
    from agentcoder.training.session import CHECKPOINT_DIR, callbacks, finish, fit
    from agentcoder.training.stages import sft_adapter

    run_dir, d, t = record.dir, cfg.method.dpo, cfg.method.train
    recover_adapter(run_dir / ADAPTER_DIR)

    # 1. data
    splits = load_splits(cfg)
    record.update(data=splits.info)
    if not splits.train:
        raise ValueError("the train split is empty; raise data_fraction or data.max_examples")

    # 2. policy: the SFT stage's adapter, trainable (or the base, method.init=base)
    adapter, trained_here = sft_adapter(cfg, record) if cfg.method.init == "sft" else (None, False)
    if adapter is None:
        record.update(stage={"init": "base"})
    base, peft_config = load_policy(cfg, record, TAG, adapter=adapter, mode="continue")
    base.layout = "none"  # DPO batches are padded chosen/rejected pairs; TRL does not pack them
    fmt = PromptFormat(base.tokenizer, cfg.model.tool_format)

    # 3. pairs from the policy's own samples
    limit = d.max_prompt_length
    examples = [ex for ex in splits.train if limit is None or fmt.n_tokens(fmt.prompt(ex)) <= limit]
    samples = load_or_sample(cfg, base.model, fmt, examples, run_dir / SAMPLES_FILE)
    pairs, counts = build_pairs(examples, samples, fmt, corrupted_pairs=d.corrupted_pairs, max_length=t.max_length)
    counts["n_prompts_too_long"] = len(splits.train) - len(examples)
    atomic_write_text(run_dir / PAIRS_FILE, "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs))
    record.update(pairs=counts)
    print(f"[{TAG}] pairs: {json.dumps(counts)}")
    if not pairs:
        raise ValueError("no preference pairs: every sample was correct or too long; raise method.dpo.temperature "
                         "or set method.dpo.corrupted_pairs=true")
    from datasets import Dataset

    train_ds = Dataset.from_list([{k: p[k] for k in ("prompt", "chosen", "rejected")} for p in pairs])

    # 4. trainer, 5. selection on val
    selection = ValSelection(run_dir, select_examples(splits.val, t.val_limit), base.tokenizer, cfg, TAG)
    trainer = dpo_trainer(base, dpo_config(cfg, run_dir / CHECKPOINT_DIR, base), train_ds, peft_config,
                          callbacks(cfg, run_dir, selection, extra_callbacks))
    training = fit(trainer, selection, base, record)
    figures = dpo_figures(run_dir / TRAIN_LOG_FILE)
    plot_dpo_curves(run_dir / TRAIN_LOG_FILE, run_dir / CURVES_FILE)

    # 6. test
    result = finish(cfg, trainer.model, base, splits, record, selection, training, details={
        "pairs": counts, "dpo": {**OmegaConf.to_container(d, resolve=True), **figures},
        "lora": OmegaConf.to_container(cfg.method.lora, resolve=True),
        "stage": {"init": cfg.method.init, "sft_adapter": str(adapter) if adapter else None,
                  "trained_here": trained_here},
    })
    result.artifacts.update(pairs=str(run_dir / PAIRS_FILE), samples=str(run_dir / SAMPLES_FILE),
                            dpo_curves=str(run_dir / CURVES_FILE))
    return result
