"""method=lora: supervised LoRA fine-tuning with TRL's SFTTrainer; QLoRA when quant=8bit|4bit.

    python -m agentcoder.run method=lora data_fraction=0.1
    python -m agentcoder.run method=lora quant=4bit method.train.epochs=1
    python -m agentcoder.run method=lora resume_from=outputs/<day>/<time>     # continue a killed run

Top to bottom (the shared pieces live in agentcoder/training):
  1. data   - the train split as TRL prompt/completion rows, so the loss falls on the assistant's
              answer only (tools and query are context);
  2. model  - the run's model (quantized per cfg.quant), packing layout and gradient checkpointing
              decided by memory, plus a peft LoRA on all linear layers;
  3. train  - SFTTrainer with BFD packing (no compute on pad tokens; `rows` under sdpa, `flat` under
              flash-attention, see training/packing.py), base weights in model.dtype (auto: bf16 where
              the hardware computes it), LoRA weights in fp32, checkpoints for resume;
  4. select - every eval_steps, function-call exact match on a val sample with the same `evaluate` as
              method=baseline; the best adapter is kept in <run_dir>/adapter;
  5. test   - the best adapter on cfg.eval.split, exactly as method=baseline evaluates.

`method.init=sft` is the continued-SFT arm: it starts from the SFT stage of its settings (the adapter
dpo/grpo/ppo start from, sft_train.*) and trains it on with the same loss for method.train's budget.

A method=lora job first looks in the SFT-stage registry (methods/registry.py), holding the stage's
lock: an adapter of its settings (trained by a staged job, or an earlier lora job; `resume=false`
trains anyway) is evaluated instead of trained again; otherwise it trains and registers the adapter,
the stage dpo/ppo/grpo runs of the same settings start from.

Files in the run dir: adapter/ (best), best.json, checkpoints/ (last 2), train_log.jsonl,
tensorboard/, loss_curve.png, predictions.jsonl, and the MethodResult returned to run.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from agentcoder.tracking.records import RunRecord
from agentcoder.tracking.result import MethodResult
from agentcoder.training.adapters import load_policy
from agentcoder.training.session import (
    CHECKPOINT_DIR,
    Base,
    callbacks,
    finish,
    fit,
    load_base,
    prepare,
    train_splits,
)
from agentcoder.training.setup import fit_lengths, lora_config, trainer_args

TAG = "lora"


def sft_config(cfg: DictConfig, output_dir: Path, base: Base) -> Any:
    """TRL's SFTConfig: method.train's shared fields plus what supervised fine-tuning adds."""
    from trl import SFTConfig

    args = trainer_args(cfg, output_dir, on_gpu=base.on_gpu, checkpointing=base.checkpointing)
    # flat rows hold no pad tokens: count all.  Padded batches carry an attention_mask that
    # "non_padding" sums exactly; packed rows have none, so non-pad ids are counted, which misses
    # every <|im_end|> (pad == eos here, ~3 per example): a <1% undercount, never an overcount.
    args["include_num_input_tokens_seen"] = "all" if base.layout == "flat" else "non_padding"
    return SFTConfig(
        **args,
        # Prompt/completion rows with the loss on the completion only, BFD-packed into max_length
        # rows.  With packing, batch_size counts packed rows.
        max_length=cfg.method.train.max_length,
        packing=base.layout != "none",
        packing_strategy="bfd",
        completion_only_loss=True,
    )


def sft_trainer(base: Base, args: Any, train_ds: Any, peft_config: Any, callbacks: list | None = None) -> Any:
    """SFTTrainer on BASE; packed rows as a (batch, max_length) tensor when the layout is 'rows'."""
    from trl import SFTTrainer

    from agentcoder.training.packing import use_packed_rows

    trainer = SFTTrainer(
        model=base.model, args=args, train_dataset=train_ds, processing_class=base.tokenizer,
        peft_config=peft_config, callbacks=callbacks,
    )
    if base.layout == "rows":
        use_packed_rows(trainer, base.tokenizer, on_gpu=base.on_gpu)
    return trainer


def run(cfg: DictConfig, record: RunRecord, *, extra_callbacks: tuple = ()) -> MethodResult:
    """A method=lora job: the registered adapter of its settings, evaluated, or one trained here and
    registered; EXTRA_CALLBACKS (TrainerCallbacks) are for tests and tools."""
    from agentcoder import ranks
    from agentcoder.methods.registry import lookup, register_sft, stage_key, stage_lock

    if cfg.method.init == "sft":
        return continue_stage(cfg, record, extra_callbacks=extra_callbacks)
    key = stage_key(cfg)  # the config as asked (fit_adapter resolves its `auto` lengths)
    with stage_lock(cfg, key, record.dir, TAG):
        entry = ranks.broadcast(lookup(cfg, key) if ranks.is_main() and cfg.resume else None)
        if entry is not None:
            return evaluate_registered(cfg, record, entry)
        result = fit_adapter(cfg, record, extra_callbacks=extra_callbacks)
        if ranks.is_main():
            register_sft(cfg, Path(result.artifacts["adapter"]), record.dir)
        return result


def evaluate_registered(cfg: DictConfig, record: RunRecord, entry: dict[str, Any]) -> MethodResult:
    """The registered adapter of this job's settings on the test split, evaluated as a trained one is
    (methods/baseline.evaluate_model); its training figures, log and loss curve come from the run
    that trained it."""
    import shutil

    from agentcoder import ranks
    from agentcoder.files import METRICS_FILE, TRAIN_LOG_FILE, read_json
    from agentcoder.methods.baseline import evaluate_model
    from agentcoder.methods.registry import SftStage
    from agentcoder.tracking.trainlog import LOSS_CURVE_FILE
    from agentcoder.training.selection import best_objective

    trained_by = Path(entry["run_dir"])
    here = trained_by.resolve() == record.dir.resolve()  # a lora run re-run into its own dir
    print(f"[{TAG}] SFT stage reused: {entry['adapter']} (trained by {'this run dir' if here else trained_by}); "
          f"evaluating it")
    stage = SftStage.registered(entry).figures()
    record.update(stage=stage)
    for name in (TRAIN_LOG_FILE, LOSS_CURVE_FILE):  # the curves of the training this adapter had
        if ranks.is_main() and not here and (trained_by / name).is_file():
            shutil.copyfile(trained_by / name, record.dir / name)
    with_adapter = OmegaConf.merge(cfg, {"model": {"adapter": entry["adapter"]}})
    return evaluate_model(
        with_adapter, record, TAG, trained_adapter=True,
        training=(read_json(trained_by / METRICS_FILE) or {}).get("training") or {},
        artifacts={"adapter": entry["adapter"], "train_log": str(record.dir / TRAIN_LOG_FILE),
                   "loss_curve": str(record.dir / LOSS_CURVE_FILE)},
        details={"lora": OmegaConf.to_container(cfg.method.lora, resolve=True), "stage": stage},
        objective=best_objective(trained_by, cfg.eval.objective),
    )


def continue_stage(cfg: DictConfig, record: RunRecord, *, extra_callbacks: tuple = ()) -> MethodResult:
    """method.init=sft: the SFT stage of this run's settings (registered, or trained here as dpo/grpo/ppo
    would), trained on for method.train's budget with the same loss: more of the same SFT, the arm the
    preference methods started from that stage are compared with at equal compute.  Not registered as
    a stage itself."""
    from agentcoder.methods.stages import sft_adapter, start_details

    stage = sft_adapter(cfg, record.dir, fit_adapter)
    record.update(stage=stage.figures())
    return fit_adapter(cfg, record, start=stage.adapter, extra_callbacks=extra_callbacks,
                       details=start_details(stage))


def fit_adapter(cfg: DictConfig, record: RunRecord, *, start: Path | None = None, extra_callbacks: tuple = (),
                details: dict[str, Any] | None = None) -> MethodResult:
    """Train (a fresh LoRA, or on from the adapter START), select on val, test."""
    from agentcoder.data import PromptFormat
    from agentcoder.data.rows import sft_rows, within_length
    from agentcoder.evaluation.evaluator import select_examples
    from agentcoder.models import load_tokenizer
    from agentcoder.training.selection import ValSelection

    run_dir = record.dir

    # 1. data
    splits = train_splits(cfg, run_dir)
    record.update(data=splits.info)

    # Rows and their lengths decide max_length and the batch size (method.train.*=auto).
    fmt = PromptFormat(load_tokenizer(cfg), cfg.model.tool_format)
    rows, lengths = sft_rows(splits.train, fmt)
    cfg, fitted = fit_lengths(cfg, lengths)
    train_ds, dropped = within_length(splits.train, rows, lengths, cfg.method.train.max_length)
    if len(train_ds) == 0:
        raise ValueError(f"every train example is longer than method.train.max_length={cfg.method.train.max_length}")
    record.update(train={**fitted, "n_train": len(train_ds), "n_train_too_long": sum(dropped.values()),
                         "too_long_by_category": dropped})
    print(f"[{TAG}] max_length={fitted['max_length']} batch_size={fitted['batch_size']}: "
          f"{len(train_ds)} train examples, {sum(dropped.values())} longer left out")

    # 2. model
    if start is None:
        base, peft_config = load_base(cfg, TAG), lora_config(cfg)
    else:
        base, peft_config = load_policy(cfg, run_dir, TAG, adapter=start, mode="continue")
    record.update(model=base.info, train=base.figures())
    val_examples = select_examples(splits.val, cfg.method.train.val_limit)

    # 3. trainer, 4. selection on val
    args = sft_config(cfg, run_dir / CHECKPOINT_DIR, base)
    selection = ValSelection(run_dir, val_examples, base.tokenizer, cfg, TAG)
    trainer = sft_trainer(base, args, train_ds, peft_config, callbacks(cfg, run_dir, selection, extra_callbacks))
    plan = prepare(trainer, selection, base)
    record.update(train=plan.figures())
    training = fit(trainer, selection, base, plan)
    record.update(train=training.as_dict())

    # 5. test
    return finish(
        cfg, trainer.model, base, splits, run_dir, selection, training,
        details={"lora": OmegaConf.to_container(cfg.method.lora, resolve=True), **(details or {})},
    )
