"""The steps every training recipe shares, in the order a recipe calls them.  They return what they
decide and measure; the recipe writes it to run.json.

    splits = train_splits(cfg, run_dir)           # record data=splits.info
    base = load_base(cfg, tag)                    # record model=base.info, train=base.figures()
    selection = ValSelection(...)                 # (selection.py) val exact match, best adapter
    trainer = <a TRL trainer>(..., callbacks=callbacks(cfg, run_dir, selection))
    plan = prepare(trainer, selection, base)      # record train=plan.figures()
    training = fit(trainer, selection, base, plan)   # record train=training.as_dict()
    return finish(cfg, trainer.model, base, splits, run_dir, selection, training, ...)  # test split

A training loop of our own (PPO) logs through `LoopLoggers` and fills the same `TrainFigures`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from agentcoder import ranks
from agentcoder.files import read_json
from agentcoder.models.base import trainable_dtype
from agentcoder.tracking.records import atomic_write_json
from agentcoder.tracking.result import MethodResult
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
    checkpointing_why: dict[str, Any]
    start_adapter: str | None = None  # the saved adapter training starts from (adapters.load_policy)
    adapter_mode: str | None = None

    @property
    def device(self) -> str:
        return str(self.info["device"])

    @property
    def on_gpu(self) -> bool:
        return self.device.startswith("cuda")

    def figures(self) -> dict[str, Any]:
        """run.json's "train" entries of what was decided at load."""
        start = {"start_adapter": self.start_adapter, "adapter_mode": self.adapter_mode} if self.start_adapter else {}
        return {**start, "packing": self.layout, "gradient_checkpointing": self.checkpointing,
                "checkpointing_why": self.checkpointing_why}


@dataclass
class TrainPlan:
    """What fit() does, decided once the trainer knows its data (setup.plan_schedule)."""

    checkpoint: str | None  # the last checkpoint of a killed run: training resumes from it
    schedule: dict[str, int]
    trainable_params: int
    total_params: int
    world_size: int  # processes training this run (torchrun / accelerate launch)
    global_batch_size: int  # rows per optimizer step over every process: batch_size x grad_accum x world_size
    trainable_dtype: str = ""  # what the trainer holds the trained weights in (models.base.trainable_dtype)

    def figures(self) -> dict[str, Any]:
        """run.json's "train" entries of the plan."""
        resumed = {"resumed_from": self.checkpoint} if self.checkpoint else {}
        return {**resumed, "trainable_params": self.trainable_params, "total_params": self.total_params,
                "schedule": self.schedule, "world_size": self.world_size, "global_batch_size": self.global_batch_size,
                "trainable_dtype": self.trainable_dtype}


@dataclass(kw_only=True)
class TrainFigures:
    """How a run trained, the same figures for every trainer (TRL's and PPO's loop): metrics.json's
    "training" and run.json's "train" hold `as_dict()`."""

    train_time_s: float
    val_eval_time_s: float
    train_tokens: int
    train_tokens_per_s: float  # this attempt's tokens over its training time less val evaluation
    steps: int
    optimizer_steps: int | None = field(default=None, metadata={"only_some": True})  # PPO: several per step
    warmup_steps: int
    epochs: float
    final_train_loss: float
    first_reward: float | None = field(default=None, metadata={"only_some": True})  # PPO: first and last
    final_reward: float | None = field(default=None, metadata={"only_some": True})  # iteration's mean reward
    best_val_exact_match: float | None
    best_step: int | None
    final_val_exact_match: float | None
    n_val: int
    peak_memory_bytes: int
    resumed: bool
    packing: str
    gradient_checkpointing: bool

    def as_dict(self) -> dict[str, Any]:
        """The figures by name; those only some trainers have are left out where unset."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if not (f.metadata.get("only_some") and getattr(self, f.name) is None)}


def train_splits(cfg: DictConfig, run_dir: Path) -> Any:
    """Every training recipe's first step: put back the best adapter a kill may have left half-renamed,
    load the splits, and refuse an empty train split."""
    from agentcoder.data import load_splits
    from agentcoder.training.selection import ADAPTER_DIR, recover_adapter

    recover_adapter(run_dir / ADAPTER_DIR)
    splits = load_splits(cfg)
    if not splits.train:
        raise ValueError("the train split is empty; raise data_fraction or data.max_examples")
    return splits


def load_base(cfg: DictConfig, tag: str) -> Base:
    """Load cfg.model (quantized per cfg.quant), decide packing and checkpointing, prepare k-bit."""
    from agentcoder.models import load_model

    score_completions_only()
    loaded = load_model(cfg)
    layout = packing_layout(cfg, loaded.model)
    checkpointing, why = gradient_checkpointing(cfg, loaded.model, str(loaded.info["device"]))
    print(f"[{tag}] packing={layout} gradient_checkpointing={checkpointing} ({why['reason']})")
    model = prepare_for_kbit(cfg, loaded.model, checkpointing)
    return Base(model, loaded.tokenizer, loaded.info, layout, checkpointing, why)


def log_callbacks(cfg: DictConfig, run_dir: Path) -> list[Any]:
    """train_log.jsonl, and tensorboard into <run_dir>/tensorboard when method.train.report_to has it
    (where the launcher adds the test figures; transformers' own would be a dated dir in checkpoints/).
    The other trackers of report_to are transformers' integrations, which a Trainer adds itself."""
    from agentcoder.files import TRAIN_LOG_FILE
    from agentcoder.tracking.trackers import tensorboard_callback
    from agentcoder.tracking.trainlog import train_log_callback

    out: list[Any] = [train_log_callback(run_dir / TRAIN_LOG_FILE)]
    if "tensorboard" in cfg.method.train.report_to and ranks.is_main():  # a writer makes its file at once
        out.append(tensorboard_callback(run_dir))
    return out


TRAIN_TIME_FILE = "train_time.json"


def train_time_callback() -> Any:
    """A TrainerCallback that writes the training seconds of every attempt so far into each
    checkpoint it follows (checkpoint-N/train_time.json), and reads them back when a run resumes one:
    `earlier_s` + this attempt's time is the run's training time."""
    from transformers import TrainerCallback

    class TrainTime(TrainerCallback):
        earlier_s = 0.0
        t0 = 0.0

        def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001
            self.t0 = time.perf_counter()
            if state.global_step > 0:  # resuming checkpoint-<global_step>
                saved = Path(args.output_dir) / f"checkpoint-{state.global_step}" / TRAIN_TIME_FILE
                self.earlier_s = float((read_json(saved) or {}).get("train_time_s", 0.0))

        def on_save(self, args, state, control, **kwargs):  # noqa: ANN001
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.is_dir() and state.is_world_process_zero:
                atomic_write_json(folder / TRAIN_TIME_FILE,
                                  {"train_time_s": round(self.earlier_s + time.perf_counter() - self.t0, 3)})

    return TrainTime()


# glibc keeps a step's freed tensors in its heap, and what stays allocated between steps leaves them
# in holes the next step's tensors do not all fit, so the heap grows: a 400-step SmolLM2 LoRA run on
# CPU held 6.3 GB free in its heap at the end (0.8 GB in use) and peaked at 9.2 GB, 5.7 GB at step
# 100 (docs/benchmarks.md).  Handing the free pages back every few steps bounds the resident memory
# at a few steps' growth, for the cost of touching those pages again.  What kept growing under the holes
# was oneDNN's kernel caches, now bounded (models/memory.cap_kernel_caches).
HEAP_TRIM_STEPS = 10


def heap_trim_callback() -> Any:
    """A TrainerCallback that trims the heap (models/memory.trim_heap) every HEAP_TRIM_STEPS steps."""
    from transformers import TrainerCallback

    from agentcoder.models.memory import trim_heap

    class HeapTrim(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
            if state.global_step % HEAP_TRIM_STEPS == 0:
                trim_heap()

    return HeapTrim()


def callbacks(cfg: DictConfig, run_dir: Path, selection: ValSelection, extra: tuple = ()) -> list[Any]:
    """A TRL trainer's callbacks: the logs, the time kept across attempts, the heap trim, val
    selection and the caller's extras."""
    train_log, *trackers = log_callbacks(cfg, run_dir)
    # The clock comes before the extras (a test's kill in on_save); the trackers after selection: it
    # logs the last val figures in on_train_end, which closes them.
    return [train_log, train_time_callback(), heap_trim_callback(), selection, *extra, *trackers]


class LoopLoggers:
    """What a TRL trainer's callbacks log, for a training loop of our own (PPO): each figures dict goes
    to train_log.jsonl and to every tracker of method.train.report_to, through transformers' own
    logging callbacks, as Trainer.log sends it."""

    def __init__(self, cfg: DictConfig, run_dir: Path, args: Any, max_steps: int):
        """ARGS: the loop's TrainingArguments (trackers record them as the run's config)."""
        from transformers import TrainerControl, TrainerState
        from transformers.integrations import get_reporting_integration_callbacks

        self.args = args
        self.state = TrainerState(max_steps=max_steps)
        self.control = TrainerControl()
        integrations = [make() for make in get_reporting_integration_callbacks(args.report_to)]
        self.callbacks = [*log_callbacks(cfg, run_dir), *integrations]

    def _send(self, event: str, **kwargs: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, event)(self.args, self.state, self.control, **kwargs)

    def begin(self, model: Any, step: int = 0) -> None:
        """The loop starts, at STEP > 0 when it resumes a checkpoint."""
        self.state.global_step = step
        self._send("on_train_begin", model=model)

    def log(self, step: int, figures: dict[str, Any]) -> None:
        self.state.global_step = step
        self._send("on_log", logs=figures)

    def end(self) -> None:
        self._send("on_train_end")


def last_checkpoint(output_dir: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None


def prepare(trainer: Any, selection: ValSelection, base: Base) -> TrainPlan:
    """Hand TRAINER to the val selection, find a killed run's checkpoint and plan the schedule."""
    selection.trainer = trainer
    # TRL pads on the right for training; evaluation needs the loader's left padding back.
    base.tokenizer.padding_side = "left"
    checkpoint = last_checkpoint(Path(trainer.args.output_dir))
    if checkpoint:
        print(f"[{selection.tag}] resuming from {checkpoint}")
    n_trainable, n_total = trainer.model.get_nb_trainable_parameters()
    schedule = plan_schedule(selection.cfg, trainer)
    selection.eval_steps = schedule["eval_steps"]
    print(f"[{selection.tag}] schedule: {schedule}")
    args = trainer.args
    world = int(args.world_size)
    return TrainPlan(checkpoint, schedule, n_trainable, n_total, world,
                     int(args.per_device_train_batch_size) * int(args.gradient_accumulation_steps) * world,
                     trainable_dtype(trainer.model))


def fit(trainer: Any, selection: ValSelection, base: Base, plan: TrainPlan) -> TrainFigures:
    """Train (from the plan's checkpoint, if any), draw the loss curve, and return the training figures."""
    from agentcoder.files import TRAIN_LOG_FILE
    from agentcoder.models.memory import peak_memory_bytes, reset_peak_memory
    from agentcoder.tracking.trainlog import LOSS_CURVE_FILE, plot_loss_curve

    run_dir = selection.run_dir
    reset_peak_memory(base.device)  # training's own peak, not the load's nor an earlier phase's
    t0 = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=plan.checkpoint)
    train_time = time.perf_counter() - t0
    clock = next((c for c in trainer.callback_handler.callbacks if hasattr(c, "earlier_s")), None)
    earlier_s = clock.earlier_s if clock is not None else 0.0
    state = trainer.state
    # The state restored from a checkpoint carries the tokens of earlier attempts; speed is this attempt's.
    attempt_tokens = state.num_input_tokens_seen - trainer._initial_num_input_tokens_seen
    pure_train = max(train_time - selection.eval_time_s, 1e-9)
    losses = [e["loss"] for e in state.log_history if "loss" in e]
    if ranks.is_main():
        plot_loss_curve(run_dir / TRAIN_LOG_FILE, run_dir / LOSS_CURVE_FILE)
    return TrainFigures(
        train_time_s=round(earlier_s + train_time, 3),  # every attempt's
        val_eval_time_s=round(selection.eval_time_s, 3),
        train_tokens=int(state.num_input_tokens_seen),
        train_tokens_per_s=round(attempt_tokens / pure_train, 2),
        steps=int(state.global_step),
        warmup_steps=plan.schedule["warmup_steps"],
        epochs=round(float(state.epoch or 0.0), 4),
        final_train_loss=round(float(losses[-1] if losses else result.training_loss), 6),
        best_val_exact_match=selection.best_score,
        best_step=selection.best_step,
        final_val_exact_match=selection.last_score,
        n_val=len(selection.examples),
        peak_memory_bytes=int(peak_memory_bytes(base.device)),
        resumed=plan.checkpoint is not None,
        packing=base.layout,
        gradient_checkpointing=base.checkpointing,
    )


def finish(
    cfg: DictConfig, peft_model: Any, base: Base, splits: Any, run_dir: Path, selection: ValSelection,
    training: TrainFigures, *, details: dict[str, Any] | None = None, artifacts: dict[str, str] | None = None,
) -> MethodResult:
    """The best adapter on the test split, evaluated as method=baseline evaluates a model; the run's
    objective is the selected checkpoint's val figure (eval.objective).

    On a full-precision base the adapter is merged first: the same function, without the extra
    LoRA matmuls in every layer (~2x faster on CPU).
    """
    from agentcoder.evaluation.evaluator import evaluate_run
    from agentcoder.evaluation.metrics import format_table
    from agentcoder.files import PREDICTIONS_FILE, TRAIN_LOG_FILE
    from agentcoder.tracking.trainlog import LOSS_CURVE_FILE

    method = str(cfg.method.name)
    adapter_dir = keep_best(peft_model, base.tokenizer, run_dir, selection, base.device)
    selection.trainer = None  # the trainer <-> callback cycle: the phase's model goes with its last reference
    test_model = peft_model if is_quantized(cfg) else peft_model.merge_and_unload()
    evaluation = evaluate_run(cfg, test_model, base.tokenizer, splits, run_dir)
    figures = training.as_dict()
    predictions = {"predictions": str(run_dir / PREDICTIONS_FILE)} if evaluation.rows else {}
    result = MethodResult.from_evaluation(
        method, evaluation.split, f"{base.info.get('label')}+{method}", evaluation.metrics,
        training=figures,
        artifacts={
            "adapter": str(adapter_dir), **predictions,
            "train_log": str(run_dir / TRAIN_LOG_FILE), "loss_curve": str(run_dir / LOSS_CURVE_FILE),
            **(artifacts or {}),
        },
        details=details or {},
        objective=selection.objective(cfg.eval.objective),
    )
    print(format_table(result.to_metrics()))
    print(f"[{method}] " + json.dumps(figures))
    return result
