"""method=dpo: direct preference optimisation on the policy's own mistakes, from the LoRA (SFT) stage.

    python -m agentcoder.run method=dpo data_fraction=0.1
    python -m agentcoder.run method=dpo quant=4bit method.dpo.num_samples=8 method.dpo.beta=0.2
    python -m agentcoder.run method=dpo method.init=base           # from the base model, no SFT stage

Top to bottom (the shared pieces live in agentcoder/training):
  1. data    - the train split;
  2. policy  - the SFT stage's adapter (reused from a lora run with the same model, quant, data,
               data_fraction and seed, or trained here: methods/stages.py), loaded trainable;
  3. pairs   - k sampled answers per train prompt, scored by the evaluation's parse + match:
               chosen = a correct sample, else the gold answer; rejected = a sample of the most
               frequent failure kind; prompts without a wrong sample give no pair (or, with
               method.dpo.corrupted_pairs, gold vs a corrupted gold).  No-call prompts take part
               (training/pairs.py);
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
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from agentcoder.files import atomic_write_text
from agentcoder.tracking.records import RunRecord
from agentcoder.tracking.result import MethodResult

TAG = "dpo"
SAMPLES_FILE = "samples.jsonl"  # every sampled candidate with its verdict
PAIRS_FILE = "pairs.jsonl"
CURVES_FILE = "dpo_curves.png"


# --------------------------------------------------------------------------- trainer


def dpo_config(cfg: DictConfig, output_dir: Path, base: Any) -> Any:
    """TRL's DPOConfig: method.train's shared fields plus method.dpo's loss."""
    from trl import DPOConfig

    from agentcoder.training.setup import ROW_MULTIPLE, trainer_args

    d = cfg.method.dpo
    args = trainer_args(cfg, output_dir, on_gpu=base.on_gpu, checkpointing=base.checkpointing)
    return DPOConfig(**args, beta=d.beta, loss_type=[d.loss_type], max_length=cfg.method.train.max_length,
                     pad_to_multiple_of=ROW_MULTIPLE)  # a few row widths, not one per step (setup.py)


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
    from agentcoder.data import PromptFormat
    from agentcoder.data.rows import sft_rows
    from agentcoder.evaluation.evaluator import select_examples
    from agentcoder.files import RUN_FILE, TRAIN_LOG_FILE, read_json
    from agentcoder.methods.lora import fit_adapter
    from agentcoder.methods.stages import sft_adapter
    from agentcoder.models import load_tokenizer
    from agentcoder.tracking.trainlog import plot_dpo_curves
    from agentcoder.training.adapters import load_policy
    from agentcoder.training.pairs import build_pairs, load_or_sample
    from agentcoder.training.selection import ValSelection
    from agentcoder.training.session import CHECKPOINT_DIR, callbacks, finish, fit, prepare, train_splits
    from agentcoder.training.setup import fit_lengths

    run_dir, d, t = record.dir, cfg.method.dpo, cfg.method.train

    # 1. data; method.train.max_length/batch_size=auto fitted to prompt + gold answer (longer pairs are dropped)
    splits = train_splits(cfg, run_dir)
    record.update(data=splits.info)
    gold_lengths = sft_rows(splits.train, PromptFormat(load_tokenizer(cfg), cfg.model.tool_format))[1]
    cfg, fitted = fit_lengths(cfg, gold_lengths)
    t = cfg.method.train
    record.update(train=fitted)

    # 2. policy: the SFT stage's adapter, trainable (or the base, method.init=base)
    stage = sft_adapter(cfg, run_dir, fit_adapter) if cfg.method.init == "sft" else None
    record.update(stage=stage.figures() if stage else {"init": "base"})
    base, peft_config = load_policy(cfg, run_dir, TAG, adapter=stage.adapter if stage else None, mode="continue")
    record.update(model=base.info, train=base.figures())
    base.layout = "none"  # DPO batches are padded chosen/rejected pairs; TRL does not pack them
    fmt = PromptFormat(base.tokenizer, cfg.model.tool_format)

    # 3. pairs from the policy's own samples
    limit = d.max_prompt_length
    examples = [ex for ex in splits.train if limit is None or fmt.n_tokens(fmt.prompt(ex)) <= limit]
    n_fitting = len(examples)
    examples = select_examples(examples, d.max_prompts)
    # Sampling is compute spent on the preference data: the comparator counts it beside train_time_s
    # (at equal compute).  A resumed run reuses its samples, so the earlier attempt's time stands.
    earlier = (read_json(run_dir / RUN_FILE) or {}).get("pairs", {}).get("sample_time_s")
    reused = (run_dir / SAMPLES_FILE).is_file()
    t0 = time.perf_counter()
    samples = load_or_sample(cfg, base.model, fmt, examples, run_dir / SAMPLES_FILE)
    sample_time_s = earlier if reused else round(time.perf_counter() - t0, 3)
    pairs, counts = build_pairs(examples, samples, fmt, corrupted_pairs=d.corrupted_pairs, max_length=t.max_length)
    counts["sample_time_s"] = sample_time_s
    counts["n_prompts_too_long"] = len(splits.train) - n_fitting
    counts["n_prompts_sampled"] = len(examples)
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
    plan = prepare(trainer, selection, base)
    record.update(train=plan.figures())
    training = fit(trainer, selection, base, plan)
    record.update(train=training.as_dict())
    figures = dpo_figures(run_dir / TRAIN_LOG_FILE)
    plot_dpo_curves(run_dir / TRAIN_LOG_FILE, run_dir / CURVES_FILE)

    # 6. test
    result = finish(cfg, trainer.model, base, splits, run_dir, selection, training, details={
        "pairs": counts, "dpo": {**OmegaConf.to_container(d, resolve=True), **figures},
        "lora": OmegaConf.to_container(cfg.method.lora, resolve=True),
        "stage": {"init": cfg.method.init, "sft_adapter": str(stage.adapter) if stage else None,
                  "trained_here": stage.trained_here if stage else False},
    })
    result.artifacts.update(pairs=str(run_dir / PAIRS_FILE), samples=str(run_dir / SAMPLES_FILE),
                            dpo_curves=str(run_dir / CURVES_FILE))
    return result
