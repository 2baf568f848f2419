"""What every training method sets up the same way: LoRA, k-bit preparation, memory-driven
settings and the TrainingArguments fields of `method.train` that every TRL config shares."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

# method.train.tokens_per_batch=auto.  On CPU, with bf16 base weights, a LoRA step of SmolLM2 ran 426
# tokens/s at 2 rows of 1024 tokens, 392 at 1 and 333 at 4 (docs/benchmarks.md): larger batches
# only add attention and cast work that does not amortise on 2 cores.
CPU_TOKENS_PER_BATCH = 2048
GPU_TOKENS_PER_BATCH = 8192

# Micro-batch rows are padded to a multiple of this many tokens, so a run meets a few row widths,
# not a new one every step: on CPU, bf16 matmuls (oneDNN) cache kernels and buffers per input
# shape, and a LoRA run's resident memory grew with its steps (SmolLM2-135M, 2 rows of 1024:
# 6.1 GB at 25 steps, 9.1 GB at 98).  In a 2-layer proxy the heap in use grew ~5 MB a step with
# free row widths and stayed flat with fixed ones, which also ran faster (kernels reused).
ROW_MULTIPLE = 64


def packed_row_multiple(max_length: int, *, on_gpu: bool) -> int:
    """The width packed SFT rows are padded to a multiple of.  On CPU the full MAX_LENGTH: one row
    shape for the whole run, so oneDNN reuses one set of kernels (the first 100 steps of a SmolLM2
    run took 484 s against 547 s with ROW_MULTIPLE, one run each, docs/benchmarks.md), and BFD-packed
    rows are ~94% full, so the padding is small.  On GPU a multiple of ROW_MULTIPLE."""
    return ROW_MULTIPLE if on_gpu else max(int(max_length), 1)


def tokens_per_batch(value: int | str) -> int:
    """method.train.tokens_per_batch resolved for the device training will run on."""
    if value != "auto":
        return int(value)
    import torch

    return GPU_TOKENS_PER_BATCH if torch.cuda.is_available() else CPU_TOKENS_PER_BATCH


def score_completions_only() -> None:
    """Make TRL's fused LM head project only the labelled (completion) positions on every device.

    TRL (1.16) does so only where Triton runs (CUDA/XPU): elsewhere it scores every position, so
    that tile shapes stay fixed for compiled backends.  On CPU nothing is compiled, and a BFCL
    prompt is ~80% of its row: scoring it took a quarter of a LoRA step (122 -> 217 tokens/s with
    this, same loss; docs/benchmarks.md).  The kernel module keeps its own Triton check, so only
    the choice of positions changes.
    """
    import trl.trainer.utils as trl_utils

    if hasattr(trl_utils, "_use_triton"):
        trl_utils._use_triton = lambda device: True


def is_quantized(cfg: DictConfig) -> bool:
    return bool(cfg.quant.load_in_4bit or cfg.quant.load_in_8bit)


def lora_config(cfg: DictConfig) -> Any:
    """peft's LoraConfig from method.lora (targets default to the model config's linear layers)."""
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


def prepare_for_kbit(cfg: DictConfig, model: Any, checkpointing: bool) -> Any:
    """On a quantized base: a frozen base ready for checkpointing (peft's QLoRA preparation), its
    non-quantized modules kept in the dtype they were loaded in.

    peft upcasts norms, embeddings and the LM head to fp32, and generation runs outside the trainer's
    autocast: a trained 4/8-bit model then decoded in fp32 (its residual stream starts at the fp32
    embedding) while method=baseline of the same quant, and a registered adapter evaluated on it,
    decode in model.dtype.  Undoing the upcast gives the configuration one compute dtype, in training
    (as a full-precision base trains) and in every evaluation.
    """
    if not is_quantized(cfg):
        return model
    from peft import prepare_model_for_kbit_training

    loaded = {name: p.dtype for name, p in model.named_parameters()}
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing)
    for name, p in model.named_parameters():
        if p.is_floating_point() and p.dtype != loaded.get(name, p.dtype):
            p.data = p.data.to(loaded[name])
    return model


def packing_layout(cfg: DictConfig, model: Any) -> str:
    """method.train.packing resolved to 'rows', 'flat' or 'none' (auto: flat only under flash-attention;
    see agentcoder/training/packing.py)."""
    packing = cfg.method.train.packing
    if packing != "auto":
        return packing
    return "flat" if "flash" in str(getattr(model.config, "_attn_implementation", "")) else "rows"


# Rows one training example puts through the model in a micro-batch: TRL's DPO collator concatenates
# every pair's chosen and rejected rows into one batch (the reference's pass keeps no activations).
ROWS_PER_EXAMPLE = {"dpo": 2}


def rows_per_example(cfg: DictConfig) -> int:
    return ROWS_PER_EXAMPLE.get(str(cfg.method.name), 1)


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
    import torch

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
    # Recipes resolve auto lengths first (fit_lengths); the fallbacks serve callers that do not.
    row = t.max_length if isinstance(t.max_length, int) else 1024
    rows = t.batch_size if isinstance(t.batch_size, int) else max(1, tokens_per_batch(t.tokens_per_batch) // row)
    rows *= rows_per_example(cfg)
    need = activation_bytes(model.config, rows * row, row, 2 if on_gpu else 4, on_gpu)
    budget = memory_budget_bytes(model, device)
    why = {"activation_estimate_gb": round(need / 1e9, 2), "memory_budget_gb": round(budget / 1e9, 2)}
    if t.gradient_checkpointing != "auto":
        return bool(t.gradient_checkpointing), {**why, "reason": "set"}
    if is_quantized(cfg):
        return True, {**why, "reason": "quantized base (QLoRA)"}
    on = need > budget
    return on, {**why, "reason": "activations exceed the memory budget" if on else "activations fit"}


def trainer_args(cfg: DictConfig, output_dir: Path, *, on_gpu: bool, checkpointing: bool) -> dict[str, Any]:
    """The TrainingArguments fields of method.train, for any TRL config class (SFTConfig, DPOConfig, ...).

    Every TRL default we disagree with is set explicitly.
    """
    t = cfg.method.train
    bf16, fp16 = mixed_precision(cfg, on_gpu)
    report_to = [r for r in t.report_to if r != "tensorboard"]  # tensorboard: session.log_callbacks
    return {
        "output_dir": str(output_dir),
        "num_train_epochs": float(t.epochs),
        "max_steps": int(t.max_steps),
        "per_device_train_batch_size": t.batch_size,
        "gradient_accumulation_steps": t.grad_accum,
        "learning_rate": t.lr,
        "lr_scheduler_type": t.scheduler,
        "warmup_steps": 0,  # set by plan_schedule() once the run's step count is known
        "weight_decay": t.weight_decay,
        # TRL turns gradient checkpointing on by default (about 20-30% slower); see gradient_checkpointing().
        _checkpointing_field(): checkpointing,
        # TRL defaults bf16=True even on CPU, where bf16 matmuls are slow on most x86 parts.
        "bf16": bf16,
        "fp16": fp16,
        # Selection is our callback (exact match by generation), not the trainer's loss eval.
        "eval_strategy": "no",
        "save_strategy": "steps",
        "save_steps": t.save_steps or 50,  # set by plan_schedule()
        "save_total_limit": 2,
        "logging_steps": t.logging_steps,
        "logging_first_step": True,
        "report_to": report_to or "none",
        "include_num_input_tokens_seen": "non_padding",
        "seed": cfg.seed,
        "data_seed": cfg.seed,
        "disable_tqdm": False,
        # Pinned host memory only speeds copies to a GPU; on CPU torch warns at every epoch that it is unused.
        "dataloader_pin_memory": on_gpu,
    }


def mixed_precision(cfg: DictConfig, on_gpu: bool) -> tuple[bool, bool]:
    """(bf16, fp16) autocast for training: on a GPU, in the model's dtype (models.loader.resolve_dtype:
    fp16 on a GPU without bf16 units), or in the GPU's half dtype over fp32 weights; none on a CPU."""
    if not on_gpu:
        return False, False
    from agentcoder.models.loader import gpu_half_dtype, resolve_dtype

    dtype = resolve_dtype(str(cfg.model.get("dtype", "auto")), "cuda")[0]
    if dtype == "float32":
        dtype = gpu_half_dtype()[0]
    return dtype == "bfloat16", dtype == "float16"


def _checkpointing_field() -> str:
    # transformers 5.24 renamed gradient_checkpointing (now a deprecated alias); older 5.x lack the new name.
    from dataclasses import fields

    from transformers import TrainingArguments

    names = {f.name for f in fields(TrainingArguments)}
    return "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"


def plan_schedule(cfg: DictConfig, trainer: Any) -> dict[str, int]:
    """Fit warmup, evaluations and checkpoints to the run's length, once the trainer knows its data.

    A fixed warmup of 10 steps in a 7-step run never reaches the peak learning rate, and a fixed
    eval_steps of 50 never evaluates it: both scale with the run instead.  Sets trainer.args and
    returns the plan (recorded in run.json).
    """
    import math

    t = cfg.method.train
    args = trainer.args
    per_epoch = max(1, math.ceil(len(trainer.get_train_dataloader()) / args.gradient_accumulation_steps))
    total = int(t.max_steps) if t.max_steps > 0 else max(1, math.ceil(float(t.epochs) * per_epoch))
    eval_steps = int(t.eval_steps) if t.eval_steps else max(1, math.ceil(total / t.evaluations))
    args.warmup_steps = math.ceil(t.warmup_ratio * total)
    args.save_steps = int(t.save_steps) if t.save_steps else eval_steps
    return {"total_steps": total, "warmup_steps": args.warmup_steps, "eval_steps": eval_steps,
            "save_steps": args.save_steps}


def fit_lengths(cfg: DictConfig, lengths: list[int]) -> tuple[DictConfig, dict[str, Any]]:
    """method.train.max_length and batch_size resolved for this run's train examples (token LENGTHS).

    A fixed 1024 dropped a fifth of BFCL's train examples for SmolLM2 (mostly those with many tools),
    skewing what the model learns; auto keeps all but max_drop, and batch_size auto holds the tokens
    per micro-batch at tokens_per_batch, so long rows come in small batches.  Returns the config with
    ints in place of auto, and the figures to record.
    """
    import math

    from omegaconf import OmegaConf

    t = cfg.method.train
    max_length = t.max_length
    if max_length == "auto":
        ordered = sorted(lengths) or [1]
        keep = ordered[max(0, math.ceil((1 - t.max_drop) * len(ordered)) - 1)]
        max_length = 256 * math.ceil(keep / 256)
        context = OmegaConf.select(cfg, "model.architecture.max_position_embeddings")
        if context:
            max_length = min(max_length, int(context))
    longest = max_length or max(lengths, default=1)
    row_tokens = longest * rows_per_example(cfg)  # a DPO pair is two rows in the micro-batch
    batch_size = t.batch_size if t.batch_size != "auto" else max(1, tokens_per_batch(t.tokens_per_batch) // row_tokens)
    fitted = OmegaConf.merge(cfg, {"method": {"train": {"max_length": max_length, "batch_size": batch_size}}})
    return fitted, {"max_length": max_length, "batch_size": batch_size,
                    "max_length_auto": t.max_length == "auto", "batch_size_auto": t.batch_size == "auto"}


def prompt_budget(cfg: DictConfig, completion_tokens: int) -> int | None:
    """The longest prompt that leaves COMPLETION_TOKENS of method.train.max_length (None: no cap)."""
    from omegaconf import OmegaConf

    max_length = cfg.method.train.max_length
    if max_length == "auto":  # RL rows are prompts only: the model's context is the cap
        max_length = OmegaConf.select(cfg, "model.architecture.max_position_embeddings")
    return None if max_length is None else max(1, int(max_length) - completion_tokens)
