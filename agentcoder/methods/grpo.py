"""method=grpo: Group Relative Policy Optimization (TRL's GRPOTrainer) with the function-call reward.

    python -m agentcoder.run method=grpo data_fraction=0.1
    python -m agentcoder.run method=grpo quant=4bit method.grpo.num_generations=8 method.train.batch_size=16
    python -m agentcoder.run method=grpo method.init=base        # RL from the base model, no SFT stage

Top to bottom (the shared pieces live in agentcoder/training):
  1. data   - the train split as RL rows: the rendered prompt plus the gold calls and tools the
              reward reads (prompts too long to leave room for a completion are left out);
  2. model  - the SFT stage's adapter (reused from the matching method=lora run, or trained here;
              agentcoder/methods/stages.py) loaded trainable; TRL copies it into a frozen "ref"
              adapter on the same base, the reference of the KL term.  method.init=base starts a
              fresh LoRA on the base instead (the reference is then the base, adapters disabled);
  3. train  - GRPOTrainer: per prompt num_generations sampled completions, each scored by
              agentcoder/evaluation/reward.py; the advantage is the reward's deviation from its
              group's mean; clipped policy-gradient loss plus beta x KL to the reference;
  4. select - val exact match every eval_steps (greedy, as the test), the best adapter kept;
  5. test   - the best adapter on cfg.eval.split, exactly as method=baseline evaluates.

Generation uses transformers' generate; method.grpo.use_vllm=true hands it to vLLM (docs/methods.md).
method.train.batch_size counts completions: a step sees batch_size x grad_accum / num_generations prompts.

Files in the run dir: as method=lora (adapter/, best.json, checkpoints/, train_log.jsonl,
loss_curve.png, predictions.jsonl) plus reward_curve.png (reward and KL per step).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from agentcoder.methods.lora import fit_adapter
from agentcoder.methods.stages import start_details, start_policy
from agentcoder.tracking.records import RunRecord
from agentcoder.tracking.result import MethodResult
from agentcoder.training.session import CHECKPOINT_DIR, Base, callbacks, finish, fit, prepare, train_splits
from agentcoder.training.setup import prompt_budget, trainer_args

TAG = "grpo"


def grpo_config(cfg: DictConfig, output_dir: Path, base: Base, longest_prompt: int | None = None) -> Any:
    """TRL's GRPOConfig: method.train's shared fields plus method.grpo (LONGEST_PROMPT in tokens sizes vLLM)."""
    from trl import GRPOConfig

    g = cfg.method.grpo
    args = trainer_args(cfg, output_dir, on_gpu=base.on_gpu, checkpointing=base.checkpointing)
    # GRPO counts the tokens it generates itself; the trainer's input count has no input_ids to read.
    args["include_num_input_tokens_seen"] = "no"
    return GRPOConfig(
        **args,
        num_generations=g.num_generations,
        beta=g.beta,
        epsilon=g.epsilon,
        temperature=g.temperature,
        max_completion_length=g.max_completion_length,
        use_vllm=g.use_vllm,
        vllm_mode=g.vllm_mode,
        vllm_gpu_memory_utilization=g.vllm_gpu_memory_utilization,
        # vLLM's context: the run's longest prompt plus a completion (unset, vLLM takes the model's,
        # e.g. Qwen2.5's 32,768, whose KV cache may not fit its share of the GPU).
        vllm_max_model_length=longest_prompt + g.max_completion_length if g.use_vllm and longest_prompt else None,
        # Dropout off: with it the policy's log-probabilities would differ from the reference's
        # (and from the sampling pass) by noise alone.
        disable_dropout=True,
    )


def grpo_trainer(base: Base, args: Any, train_ds: Any, reward: Any, peft_config: Any,
                 callbacks: list | None = None) -> Any:
    from trl import GRPOTrainer

    return GRPOTrainer(
        model=base.model, reward_funcs=reward, args=args, train_dataset=train_ds,
        processing_class=base.tokenizer, peft_config=peft_config, callbacks=callbacks,
    )


def run(cfg: DictConfig, record: RunRecord, *, extra_callbacks: tuple = ()) -> MethodResult:
    """SFT stage (or base), GRPO, select on val, test; EXTRA_CALLBACKS (TrainerCallbacks) for tests and tools."""
    from agentcoder.data import PromptFormat
    from agentcoder.data.rows import rl_dataset
    from agentcoder.evaluation.evaluator import select_examples
    from agentcoder.evaluation.reward import make_reward
    from agentcoder.files import TRAIN_LOG_FILE
    from agentcoder.tracking.trainlog import REWARD_CURVE_FILE, plot_reward_curve
    from agentcoder.training.selection import ValSelection

    run_dir, g = record.dir, cfg.method.grpo

    # 1. data
    splits = train_splits(cfg, run_dir)
    record.update(data=splits.info)

    # 2. model: the SFT stage's adapter (or a fresh LoRA) as the policy
    base, peft_config, stage = start_policy(cfg, record, TAG, fit_adapter)
    fmt = PromptFormat(base.tokenizer, cfg.model.tool_format)
    train_ds = rl_dataset(splits.train, fmt, prompt_budget(cfg, g.max_completion_length))
    if len(train_ds) == 0:
        raise ValueError(f"every train prompt is longer than method.train.max_length={cfg.method.train.max_length}"
                         f" less method.grpo.max_completion_length={g.max_completion_length}")
    record.update(train={"n_train": len(train_ds), "n_train_too_long": len(splits.train) - len(train_ds)})
    val_examples = select_examples(splits.val, cfg.method.train.val_limit)

    # 3. trainer with the function-call reward, 4. selection on val
    longest = max(fmt.n_tokens(p) for p in train_ds["prompt"]) if g.use_vllm else None
    args = grpo_config(cfg, run_dir / CHECKPOINT_DIR, base, longest)
    selection = ValSelection(run_dir, val_examples, base.tokenizer, cfg, TAG)
    trainer = grpo_trainer(
        base, args, train_ds, make_reward(cfg.method.reward), peft_config,
        callbacks(cfg, run_dir, selection, extra_callbacks),
    )
    plan = prepare(trainer, selection, base)
    record.update(train=plan.figures())
    training = fit(trainer, selection, base, plan)
    record.update(train=training.as_dict())
    plot_reward_curve(run_dir / TRAIN_LOG_FILE, run_dir / REWARD_CURVE_FILE)

    # 5. test
    return finish(
        cfg, trainer.model, base, splits, run_dir, selection, training,
        details={**start_details(stage), "grpo": OmegaConf.to_container(g, resolve=True),
                 "reward": OmegaConf.to_container(cfg.method.reward, resolve=True)},
        artifacts={"reward_curve": str(run_dir / REWARD_CURVE_FILE)},
    )
