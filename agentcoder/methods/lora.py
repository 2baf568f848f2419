"""method=lora: supervised LoRA fine-tuning with TRL's SFTTrainer; QLoRA when quant=8bit|4bit.

    python -m agentcoder.run method=lora data_fraction=0.1
    python -m agentcoder.run method=lora quant=4bit method.train.epochs=1
    python -m agentcoder.run method=lora resume_from=outputs/<day>/<time>     # continue a killed run

Top to bottom:
  1. data   - the train split rendered by `render_training_text` into TRL's prompt/completion
              format, so the loss falls on the assistant's answer only (tools and query are context);
  2. model  - the run's model (quantized per cfg.quant) plus a peft LoraConfig on all linear layers;
  3. train  - SFTTrainer with BFD packing (no compute on pad tokens), gradient checkpointing only
              when memory needs it, bf16 on GPU / fp32 on CPU, checkpoints for resume;
  4. select - every eval_steps a callback scores function-call exact match on a val sample with the
              same `evaluate` as method=baseline and keeps the best adapter in <run_dir>/adapter;
  5. test   - the best adapter is evaluated on cfg.eval.split exactly like method=baseline.

Packing (method.train.packing): TRL packs examples best-fit-decreasing into rows of max_length
tokens and then, padding-free, flattens the whole batch into ONE row ('flat').  That is right for
flash-attention, whose varlen kernel reads the collator's cu_seq_lens and never computes attention
across examples.  sdpa and eager attention instead build a dense mask over the row, so a flat row of
batch_size x max_length tokens costs attention quadratic in the whole batch: on CPU, 4 rows of 1024
took 18.3 GiB and ran at 0.58x TRL's padded default.  'rows' (auto's choice without flash-attention)
keeps the packed rows as a (batch, max_length) tensor instead: attention per row, as in a padded batch,
but rows are full.  'none' is TRL's padded batches.

Packed sequences and attention: both layouts pass `position_ids` (restarting at 0 for every example)
and no attention_mask.  With the sdpa and eager attention of transformers 5,
`masking_utils._preprocess_mask_arguments` then calls `find_packed_sequence_indices(position_ids)`
(per row) and `create_causal_mask` ands a block-diagonal mask into the causal one, so examples never
attend across their boundaries.  Only without a KV cache: given use_cache=True the model builds a
DynamicCache and the detection is skipped, so packed rows WOULD attend across examples;
SFTTrainer.compute_loss passes use_cache=False.  tests/test_lora.py checks both cases on a tiny model.

Files in the run dir: adapter/ (best), best.json, checkpoints/ (last 2), train_log.jsonl,
tensorboard/, loss_curve.png, predictions.jsonl, and the metrics returned to run.py.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from transformers import TrainerCallback
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from agentcoder.tracking.records import RunRecord, atomic_write_json, read_json

ADAPTER_DIR = "adapter"
BEST_FILE = "best.json"
CHECKPOINT_DIR = "checkpoints"


# --------------------------------------------------------------------------- 1. data


def training_dataset(examples: list, tokenizer: Any, tool_format: str, max_length: int | None = None) -> Any:
    """A datasets.Dataset of prompt/completion strings: TRL masks the prompt out of the loss.

    Examples longer than MAX_LENGTH tokens are left out: truncation keeps the start, so they
    would lose (part of) their answer and teach the model to stop mid-call or not at all.
    """
    from datasets import Dataset

    from agentcoder.data.prompts import render_training_text

    rows = []
    for ex in examples:
        prompt, completion = render_training_text(ex, tokenizer, tool_format)
        if max_length is None or len(tokenizer(prompt + completion)["input_ids"]) <= max_length:
            rows.append({"prompt": prompt, "completion": completion})
    return Dataset.from_list(rows)


# --------------------------------------------------------------------------- 2. model


def lora_config(cfg: DictConfig) -> Any:
    from peft import LoraConfig

    lo = cfg.method.lora
    targets = list(lo.target_modules) if lo.target_modules else list(cfg.model.lora_target_modules)
    if not targets:
        raise ValueError(
            f"model {cfg.model.name!r} lists no lora_target_modules; set method.lora.target_modules=[...]"
        )
    return LoraConfig(
        r=lo.r, lora_alpha=lo.alpha, lora_dropout=lo.dropout, target_modules=targets, bias="none",
        task_type="CAUSAL_LM",
    )


def _is_quantized(cfg: DictConfig) -> bool:
    return bool(cfg.quant.load_in_4bit or cfg.quant.load_in_8bit)


# --------------------------------------------------------------------------- 3. trainer


def packing_layout(cfg: DictConfig, model: Any) -> str:
    """method.train.packing resolved to 'rows', 'flat' or 'none' (auto: flat only under flash-attention)."""
    packing = cfg.method.train.packing
    if packing != "auto":
        return packing
    return "flat" if "flash" in str(getattr(model.config, "_attn_implementation", "")) else "rows"


def activation_bytes(model_config: Any, tokens: int, row_length: int, dtype_bytes: int, on_gpu: bool) -> int:
    """Rough size of what one micro-batch keeps for backward without gradient checkpointing.

    Per token and layer a Llama/Qwen block with LoRA on every linear layer saves the norms' inputs
    and outputs, the LoRA dropouts' copies, q/k/v and the attention output, the MLP's gate, up,
    activation and product: about 24 x hidden + 9 x intermediate values; CPU attention also keeps
    the heads x row_length probabilities (CUDA's memory-efficient sdpa kernel does not).  Calibrated
    on SmolLM2-135M on CPU, where 4 rows of 1024 tokens peaked at 18.8 GiB (estimate: 16.9 GiB
    plus 0.5 GB of weights).
    """
    c = model_config.get_text_config()
    per_token = 24 * c.hidden_size + 9 * c.intermediate_size
    if not on_gpu:
        per_token += c.num_attention_heads * row_length
    return int(tokens * c.num_hidden_layers * per_token * dtype_bytes)


def memory_budget_bytes(model: Any, device: str) -> int:
    """90% of the device's memory less the model's weights: fixed for a machine and model, unlike
    "free" memory, which earlier runs in the same process leave lower (allocator caches)."""
    if device.startswith("cuda"):
        total = torch.cuda.get_device_properties(torch.device(device)).total_memory
    else:
        import psutil

        total = psutil.virtual_memory().total
    return int(0.9 * total - model.get_memory_footprint())


def gradient_checkpointing(cfg: DictConfig, model: Any, device: str) -> tuple[bool, dict[str, Any]]:
    """method.train.gradient_checkpointing resolved, and why.

    auto: on for quantized bases (QLoRA trades speed for memory, as the QLoRA recipe does: a 3B
    model's activations for 8 x 1024 tokens alone are ~60 GB), otherwise on only when the estimated
    activations of one micro-batch exceed the memory budget.  Checkpointing recomputes every
    layer's forward in backward: about a third more compute.
    """
    t = cfg.method.train
    on_gpu = device.startswith("cuda")
    row = int(t.max_length or 1024)
    need = activation_bytes(model.config, t.batch_size * row, row, 2 if on_gpu else 4, on_gpu)
    budget = memory_budget_bytes(model, device)
    why = {"activation_estimate_gb": round(need / 1e9, 2), "memory_budget_gb": round(budget / 1e9, 2)}
    if t.gradient_checkpointing != "auto":
        return bool(t.gradient_checkpointing), {**why, "reason": "set"}
    if _is_quantized(cfg):
        return True, {**why, "reason": "quantized base (QLoRA)"}
    on = need > budget
    return on, {**why, "reason": "activations exceed the memory budget" if on else "activations fit"}


def sft_config(
    cfg: DictConfig, output_dir: Path, *, on_gpu: bool, layout: str = "rows", checkpointing: bool = False
) -> Any:
    """TRL's SFTConfig from method.train; every TRL default we disagree with is set explicitly."""
    from trl import SFTConfig

    t = cfg.method.train
    report_to = [r for r in t.report_to if r != "tensorboard"]  # tensorboard: our own writer (see run)
    return SFTConfig(
        output_dir=str(output_dir),
        num_train_epochs=float(t.epochs),
        max_steps=int(t.max_steps),
        per_device_train_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.lr,
        lr_scheduler_type=t.scheduler,
        warmup_steps=t.warmup_steps,
        weight_decay=t.weight_decay,
        # Data: prompt/completion with the loss on the completion only; BFD packing into
        # max_length rows (see the module docstring).  With packing, batch_size counts packed rows.
        max_length=t.max_length,
        packing=layout != "none",
        packing_strategy="bfd",
        completion_only_loss=True,
        # TRL turns gradient checkpointing on by default (about 20-30% slower); see gradient_checkpointing().
        gradient_checkpointing=checkpointing,
        # TRL defaults bf16=True even on CPU, where bf16 matmuls are slow on most x86 parts.
        bf16=on_gpu and torch.cuda.is_bf16_supported(),
        fp16=False,
        # Selection is our callback (exact match by generation), not the trainer's loss eval.
        eval_strategy="no",
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=2,
        logging_steps=t.logging_steps,
        logging_first_step=True,
        report_to=report_to or "none",
        # flat rows hold no pad tokens: count all.  Padded batches carry an attention_mask that
        # "non_padding" sums exactly; packed rows have none, so non-pad ids are counted, which misses
        # every <|im_end|> (pad == eos here, ~3 per example): a <1% undercount, never an overcount.
        include_num_input_tokens_seen="all" if layout == "flat" else "non_padding",
        seed=cfg.seed,
        data_seed=cfg.seed,
        disable_tqdm=False,
    )


class PackedRowsCollator(DataCollatorForLanguageModeling):
    """Batches BFD-packed rows as (batch, longest row) instead of flattening them into one row.

    Rows carry position_ids (restarting at 0 for every example) and no attention_mask, so the
    model masks each row block-diagonally.  Row tails are padded with pad id, position 0 and label
    -100: each pad token is a one-token sequence that attends to itself only.
    """

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = super().torch_call(examples)
        del batch["attention_mask"]  # present, it would switch off the packed-sequence detection
        # The first token of each example would otherwise be predicted from the previous example.
        batch["labels"][batch["position_ids"] == 0] = -100
        return batch


def build_trainer(
    model: Any, args: Any, train_ds: Any, tokenizer: Any, cfg: DictConfig, layout: str, callbacks: list | None = None
) -> Any:
    """SFTTrainer with the LoRA config; for layout 'rows' with the PackedRowsCollator."""
    from trl import SFTTrainer

    trainer = SFTTrainer(
        model=model, args=args, train_dataset=train_ds, processing_class=tokenizer,
        peft_config=lora_config(cfg), callbacks=callbacks,
    )
    if layout == "rows":
        # TRL packs (and tokenizes) the dataset either way; it only refuses a custom collator
        # alongside packing, so the flattening collator is swapped for ours once it is built.
        trainer.data_collator = PackedRowsCollator(pad_token_id=tokenizer.pad_token_id, return_position_ids=True)
    return trainer


class ValSelection(TrainerCallback):
    """Every eval_steps (and at the end): val exact match; on improvement, save the adapter.

    The adapter goes to a temp dir first and then takes the place of <run_dir>/adapter, so a
    kill never leaves a half-written best adapter; best.json (score, step) is written after it.
    """

    def __init__(self, run_dir: Path, examples: list, tokenizer: Any, cfg: DictConfig):
        self.run_dir = run_dir
        self.examples = examples
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.eval_steps = int(cfg.method.train.eval_steps)
        self.trainer: Any = None  # set once the trainer exists (trainer.log needs it)
        best = read_json(run_dir / BEST_FILE) or {}  # a resumed run keeps competing with its old best
        self.best_score: float | None = best.get("val_exact_match")
        self.best_step: int | None = best.get("step")
        self.last_step: int | None = None
        self.last_score: float | None = None
        self.eval_time_s = 0.0

    def score(self, model: Any, step: int) -> float:
        from agentcoder.evaluation.evaluator import evaluate

        t0 = time.perf_counter()
        result = evaluate(
            model, self.tokenizer, self.examples, tool_format=self.cfg.model.tool_format,
            max_new_tokens=self.cfg.eval.max_new_tokens, batch_size=self.cfg.eval.batch_size,
            progress=False, desc=f"val@{step}",
        )
        seconds = time.perf_counter() - t0
        self.eval_time_s += seconds
        em = float(result.metrics["overall"]["exact_match"])
        self.last_step, self.last_score = step, em
        improved = self.best_score is None or em > self.best_score
        if improved:
            save_adapter(model, self.tokenizer, self.run_dir / ADAPTER_DIR)
            self.best_score, self.best_step = em, step
            best = {"val_exact_match": em, "step": step, "n_val": len(self.examples)}
            atomic_write_json(self.run_dir / BEST_FILE, best)
        self.trainer.log({"val_exact_match": em, "val_best_exact_match": self.best_score, "val_s": seconds})
        print(f"[lora] step {step}: val exact match {em:.3f} (best {self.best_score:.3f} @ {self.best_step})")
        return em

    def on_step_end(self, args, state, control, model=None, **kwargs):  # noqa: ANN001
        if self.examples and state.global_step % self.eval_steps == 0:
            self.score(model, state.global_step)

    def on_train_end(self, args, state, control, model=None, **kwargs):  # noqa: ANN001
        if self.examples and self.last_step != state.global_step:
            self.score(model, state.global_step)


def save_adapter(model: Any, tokenizer: Any, target: Path) -> None:
    """peft save_pretrained + tokenizer into TARGET, replacing it only once the new one is complete."""
    tmp = target.with_name(f".{target.name}.tmp")
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    if target.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def _last_checkpoint(output_dir: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None


# --------------------------------------------------------------------------- the run


def run(cfg: DictConfig, record: RunRecord, *, extra_callbacks: tuple = ()) -> dict[str, Any]:
    """Train, select on val, test; EXTRA_CALLBACKS (TrainerCallbacks) are for tests and tools."""
    from peft import load_peft_weights, prepare_model_for_kbit_training, set_peft_model_state_dict

    from agentcoder.data import load_splits
    from agentcoder.evaluation.evaluator import evaluate_run, peak_memory_bytes, select_examples
    from agentcoder.evaluation.metrics import format_table
    from agentcoder.models import load_model
    from agentcoder.tracking.trainlog import (
        LOSS_CURVE_FILE,
        TRAIN_LOG_FILE,
        plot_loss_curve,
        train_log_callback,
    )

    run_dir = record.dir
    t = cfg.method.train
    _recover_adapter(run_dir / ADAPTER_DIR)

    # 1. data
    splits = load_splits(cfg)
    record.update(data=splits.info)
    if not splits.train:
        raise ValueError("the train split is empty; raise data_fraction or data.max_examples")

    # 2. model
    loaded = load_model(cfg)
    record.update(model=loaded.info)
    model, tokenizer = loaded.model, loaded.tokenizer
    device = str(loaded.info["device"])
    on_gpu = device.startswith("cuda")
    layout = packing_layout(cfg, model)
    checkpointing, why = gradient_checkpointing(cfg, model, device)
    record.update(train={"packing": layout, "gradient_checkpointing": checkpointing, "checkpointing_why": why})
    print(f"[lora] packing={layout} gradient_checkpointing={checkpointing} ({why['reason']})")
    if _is_quantized(cfg):
        # Casts norms/embeddings to fp32 and freezes the base.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing)
    train_ds = training_dataset(splits.train, tokenizer, cfg.model.tool_format, t.max_length)
    if len(train_ds) == 0:
        raise ValueError(f"every train example is longer than method.train.max_length={t.max_length}")
    val_examples = select_examples(splits.val, t.val_limit)

    # 3. trainer
    output_dir = run_dir / CHECKPOINT_DIR
    args = sft_config(cfg, output_dir, on_gpu=on_gpu, layout=layout, checkpointing=checkpointing)
    selection = ValSelection(run_dir, val_examples, tokenizer, cfg)
    callbacks: list[Any] = [train_log_callback(run_dir / TRAIN_LOG_FILE), selection, *extra_callbacks]
    if "tensorboard" in t.report_to:
        from torch.utils.tensorboard import SummaryWriter
        from transformers.integrations import TensorBoardCallback

        callbacks.append(TensorBoardCallback(SummaryWriter(log_dir=str(run_dir / "tensorboard"))))
    trainer = build_trainer(model, args, train_ds, tokenizer, cfg, layout, callbacks)
    selection.trainer = trainer
    # TRL pads on the right for training; evaluation needs the loader's left padding back.
    tokenizer.padding_side = "left"

    checkpoint = _last_checkpoint(output_dir)
    if checkpoint:
        print(f"[lora] resuming from {checkpoint}")
        record.update(train={"resumed_from": checkpoint})
    n_trainable, n_total = trainer.model.get_nb_trainable_parameters()
    record.update(train={
        "trainable_params": n_trainable, "total_params": n_total, "n_train": len(train_ds),
        "n_train_too_long": len(splits.train) - len(train_ds),
    })

    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=checkpoint)
    train_time = time.perf_counter() - t0
    state = trainer.state
    tokens = state.num_input_tokens_seen - trainer._initial_num_input_tokens_seen
    pure_train = max(train_time - selection.eval_time_s, 1e-9)
    peak = peak_memory_bytes(loaded.info["device"])
    losses = [e["loss"] for e in state.log_history if "loss" in e]
    plot_loss_curve(run_dir / TRAIN_LOG_FILE, run_dir / LOSS_CURVE_FILE)

    # 4. best adapter (or the final one when there is no val split to select on)
    peft_model = trainer.model
    adapter_dir = run_dir / ADAPTER_DIR
    if adapter_dir.is_dir() and selection.best_step is not None:
        best = load_peft_weights(str(adapter_dir), device=str(loaded.info["device"]))
        set_peft_model_state_dict(peft_model, best)
    else:
        save_adapter(peft_model, tokenizer, adapter_dir)

    # 5. test, as method=baseline does.  On a full-precision base the adapter is merged first:
    # the same function, without the extra LoRA matmuls in every layer (~2x faster on CPU).
    test_model = peft_model if _is_quantized(cfg) else peft_model.merge_and_unload()
    evaluation = evaluate_run(cfg, test_model, tokenizer, splits, run_dir)
    training = {
        "train_time_s": round(train_time, 3),
        "val_eval_time_s": round(selection.eval_time_s, 3),
        "train_tokens": int(tokens),
        "train_tokens_per_s": round(tokens / pure_train, 2),
        "steps": int(state.global_step),
        "epochs": round(float(state.epoch or 0.0), 4),
        "final_train_loss": round(float(losses[-1] if losses else result.training_loss), 6),
        "best_val_exact_match": selection.best_score,
        "best_step": selection.best_step,
        "final_val_exact_match": selection.last_score,
        "n_val": len(val_examples),
        "peak_memory_bytes": int(peak),
        "resumed": checkpoint is not None,
        "packing": layout,
        "gradient_checkpointing": checkpointing,
    }
    record.update(train=training)
    metrics = {
        **evaluation.metrics,
        "split": cfg.eval.split,
        "model": f"{loaded.info.get('label')}+lora",
        "adapter": str(adapter_dir),
        "training": training,
        "lora": OmegaConf.to_container(cfg.method.lora, resolve=True),
    }
    print(format_table(metrics))
    print("[lora] " + json.dumps(training))
    return metrics


def _recover_adapter(target: Path) -> None:
    """A kill between the two renames of save_adapter leaves only .adapter.old: put it back."""
    old = target.with_name(f".{target.name}.old")
    if not target.exists() and old.is_dir():
        os.replace(old, target)
