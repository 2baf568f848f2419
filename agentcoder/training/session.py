"""The steps every training recipe shares, in the order a recipe calls them:

    base = load_base(cfg, record, tag)            # model + tokenizer, layout and checkpointing decided
    selection = ValSelection(...)                 # (selection.py) val exact match, best adapter
    trainer = <a TRL trainer>(..., callbacks=callbacks(cfg, record.dir, selection))
    training = fit(trainer, selection, base, record)   # resume, train, figures, loss curve
    return finish(cfg, trainer.model, base, splits, record, selection, training, ...)  # test split
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from agentcoder.methods.result import MethodResult
from agentcoder.tracking.records import RunRecord
from agentcoder.training.selection import ValSelection, keep_best
from agentcoder.training.setup import (
    gradient_checkpointing,
    is_quantized,
    packing_layout,
    plan_schedule,
    prepare_for_kbit,
    score_completions_only,
)

CHECKPOINT_DIR = "checkpoints"


@dataclass
class Base:
    """The run's model ready for an adapter, with what was decided for training it."""

    model: Any
    tokenizer: Any
    info: dict[str, Any]
    layout: str  # packing: rows | flat | none
    checkpointing: bool

    @property
    def device(self) -> str:
        return str(self.info["device"])

    @property
    def on_gpu(self) -> bool:
        return self.device.startswith("cuda")


def train_splits(cfg: DictConfig, record: RunRecord) -> Any:
    """Every training recipe's first step: put back the best adapter a kill may have left half-renamed,
    load and record the splits, and refuse an empty train split."""
    from agentcoder.data import load_splits
    from agentcoder.training.selection import ADAPTER_DIR, recover_adapter

    recover_adapter(record.dir / ADAPTER_DIR)
    splits = load_splits(cfg)
    record.update(data=splits.info)
    if not splits.train:
        raise ValueError("the train split is empty; raise data_fraction or data.max_examples")
    return splits


def load_base(cfg: DictConfig, record: RunRecord | None, tag: str) -> Base:
    """Load cfg.model (quantized per cfg.quant), decide packing and checkpointing, prepare k-bit."""
    from agentcoder.models import load_model

    score_completions_only()
    loaded = load_model(cfg)
    layout = packing_layout(cfg, loaded.model)
    checkpointing, why = gradient_checkpointing(cfg, loaded.model, str(loaded.info["device"]))
    if record is not None:
        record.update(model=loaded.info)
        record.update(train={"packing": layout, "gradient_checkpointing": checkpointing, "checkpointing_why": why})
    print(f"[{tag}] packing={layout} gradient_checkpointing={checkpointing} ({why['reason']})")
    model = prepare_for_kbit(cfg, loaded.model, checkpointing)
    return Base(model, loaded.tokenizer, loaded.info, layout, checkpointing)


def callbacks(cfg: DictConfig, run_dir: Path, selection: ValSelection, extra: tuple = ()) -> list[Any]:
    """train_log.jsonl, val selection, the caller's extras, and tensorboard when method.train.report_to has it."""
    from agentcoder.tracking.trainlog import TRAIN_LOG_FILE, train_log_callback

    out: list[Any] = [train_log_callback(run_dir / TRAIN_LOG_FILE), selection, *extra]
    if "tensorboard" in cfg.method.train.report_to:
        from torch.utils.tensorboard import SummaryWriter
        from transformers.integrations import TensorBoardCallback

        out.append(TensorBoardCallback(SummaryWriter(log_dir=str(run_dir / "tensorboard"))))
    return out


def last_checkpoint(output_dir: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None


def fit(trainer: Any, selection: ValSelection, base: Base, record: RunRecord) -> dict[str, Any]:
    """Train (from the last checkpoint of a killed run, if any) and return the training figures."""
    import torch

    from agentcoder.evaluation.evaluator import peak_memory_bytes
    from agentcoder.tracking.trainlog import LOSS_CURVE_FILE, TRAIN_LOG_FILE, plot_loss_curve

    run_dir = record.dir
    selection.trainer = trainer
    # TRL pads on the right for training; evaluation needs the loader's left padding back.
    base.tokenizer.padding_side = "left"
    checkpoint = last_checkpoint(Path(trainer.args.output_dir))
    if checkpoint:
        print(f"[{selection.tag}] resuming from {checkpoint}")
        record.update(train={"resumed_from": checkpoint})
    n_trainable, n_total = trainer.model.get_nb_trainable_parameters()
    schedule = plan_schedule(selection.cfg, trainer)
    selection.eval_steps = schedule["eval_steps"]
    record.update(train={"trainable_params": n_trainable, "total_params": n_total, "schedule": schedule})
    print(f"[{selection.tag}] schedule: {schedule}")

    if base.on_gpu:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=checkpoint)
    train_time = time.perf_counter() - t0
    state = trainer.state
    # The state restored from a checkpoint carries the tokens of earlier attempts; speed is this attempt's.
    attempt_tokens = state.num_input_tokens_seen - trainer._initial_num_input_tokens_seen
    pure_train = max(train_time - selection.eval_time_s, 1e-9)
    losses = [e["loss"] for e in state.log_history if "loss" in e]
    plot_loss_curve(run_dir / TRAIN_LOG_FILE, run_dir / LOSS_CURVE_FILE)
    return {
        "train_time_s": round(train_time, 3),
        "val_eval_time_s": round(selection.eval_time_s, 3),
        "train_tokens": int(state.num_input_tokens_seen),
        "train_tokens_per_s": round(attempt_tokens / pure_train, 2),
        "steps": int(state.global_step),
        "warmup_steps": schedule["warmup_steps"],
        "epochs": round(float(state.epoch or 0.0), 4),
        "final_train_loss": round(float(losses[-1] if losses else result.training_loss), 6),
        "best_val_exact_match": selection.best_score,
        "best_step": selection.best_step,
        "final_val_exact_match": selection.last_score,
        "n_val": len(selection.examples),
        "peak_memory_bytes": int(peak_memory_bytes(base.device)),
        "resumed": checkpoint is not None,
        "packing": base.layout,
        "gradient_checkpointing": base.checkpointing,
    }


def finish(
    cfg: DictConfig, peft_model: Any, base: Base, splits: Any, record: RunRecord, selection: ValSelection,
    training: dict[str, Any], *, details: dict[str, Any] | None = None, artifacts: dict[str, str] | None = None,
) -> MethodResult:
    """The best adapter on the test split, evaluated as method=baseline evaluates a model.

    On a full-precision base the adapter is merged first: the same function, without the extra
    LoRA matmuls in every layer (~2x faster on CPU).
    """
    from agentcoder.evaluation.evaluator import PREDICTIONS_FILE, evaluate_run
    from agentcoder.evaluation.metrics import format_table
    from agentcoder.tracking.trainlog import LOSS_CURVE_FILE, TRAIN_LOG_FILE

    run_dir = record.dir
    method = str(cfg.method.name)
    adapter_dir = keep_best(peft_model, base.tokenizer, run_dir, selection, base.device)
    test_model = peft_model if is_quantized(cfg) else peft_model.merge_and_unload()
    evaluation = evaluate_run(cfg, test_model, base.tokenizer, splits, run_dir)
    record.update(train=training)
    result = MethodResult.from_evaluation(
        method, cfg.eval.split, f"{base.info.get('label')}+{method}", evaluation.metrics,
        training=training,
        artifacts={
            "adapter": str(adapter_dir), "predictions": str(run_dir / PREDICTIONS_FILE),
            "train_log": str(run_dir / TRAIN_LOG_FILE), "loss_curve": str(run_dir / LOSS_CURVE_FILE),
            **(artifacts or {}),
        },
        details=details or {},
    )
    print(format_table(result.to_metrics()))
    print(f"[{method}] " + json.dumps(training))
    return result
