"""method=ppo: PPO with the function-call reward, written here on torch + peft + accelerate.

    python -m agentcoder.run method=ppo data_fraction=0.1
    python -m agentcoder.run method=ppo quant=4bit method.ppo.kl_coef=0.1
    python -m agentcoder.run method=ppo method.init=base          # RL from the base model, no SFT stage

TRL 1.16 has no PPOTrainer (removed in trl PR #7020), so this module is the whole algorithm.  It
follows the PPO-for-language-models formulation of Ziegler et al. 2019 ("Fine-Tuning Language
Models from Human Preferences") with the details of Huang et al. 2024 ("The N+ Implementation
Details of RLHF with PPO: A Case Study on TL;DR Summarization"):

  * one completion per prompt, sampled from the policy at `temperature` (no top-k/top-p); the
    logits are divided by the same temperature whenever log-probabilities are computed;
  * the reward is the rule-based score of the whole completion (agentcoder/evaluation/reward.py),
    given at its last token (the EOS, or the last token of a truncated completion), plus a
    per-token KL penalty  -kl_coef * (log pi(a_t) - log pi_ref(a_t))  to the frozen SFT reference;
  * a scalar value head on the policy's last hidden state (one shared trunk, as TRL's former
    AutoModelForCausalLMWithValueHead), generalized advantage estimation (gamma, lam), advantages
    whitened over the rollout batch;
  * ppo_epochs passes over each rollout batch in shuffled minibatches, with the clipped policy
    loss, the clipped value loss (weight vf_coef) and gradient clipping; dropout off throughout,
    so rollout and update log-probabilities agree.

Memory: the policy and the reference share one base model.  The SFT adapter is loaded twice under
two adapter names, "default" (trainable: the policy) and "reference" (frozen); the reference pass
switches adapters (method.init=base: disables them), so a 3B model fits wherever QLoRA fits.

Top to bottom: the math (pure functions, unit-tested), the policy with its value head, rollout,
update, the training loop, and `run` (data, SFT stage, loop, val selection, test).  Files in the
run dir: adapter/ (best on val), best.json, train_log.jsonl (one line per iteration: reward
mean/std, KL, clip fraction, value loss, entropy, ...), reward_curve.png, loss_curve.png,
predictions.jsonl; the same curves go to every tracker of method.train.report_to (tensorboard/ in
the run dir), through transformers' logging callbacks as for TRL's trainers; checkpoints/iter-N
(policy adapter, value head, optimizer, schedule, RNGs) every save_steps iterations, from which a
killed run goes on exactly as if it had not stopped.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from agentcoder.tracking.records import RunRecord
from agentcoder.tracking.result import MethodResult

TAG = "ppo"
REFERENCE = "reference"  # the adapter name of the frozen SFT copy

# --------------------------------------------------------------------------- the math (pure)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var(returns - values) / Var(returns) over the MASKed tokens: 1 when the value head predicts
    the returns, 0 when it does no better than their mean, below 0 when worse (cleanrl logs it)."""
    var = masked_mean((returns - masked_mean(returns, mask)) ** 2, mask)
    resid = returns - values
    var_resid = masked_mean((resid - masked_mean(resid, mask)) ** 2, mask)
    return float("nan") if var.item() == 0 else 1.0 - (var_resid / var).item()


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """X shifted to mean 0 and scaled to variance 1 over the MASKed entries (unbiased variance);
    masked-out entries become 0."""
    n = mask.sum()
    mean = masked_mean(x, mask)
    var = ((x - mean) ** 2 * mask).sum() / (n - 1).clamp(min=1)
    return (x - mean) * torch.rsqrt(var + eps) * mask


def completion_ended(tokens: torch.Tensor, stop_ids: Sequence[int]) -> torch.Tensor:
    """(B,) True for the rows whose completion holds a stop token (False: cut at max_new_tokens)."""
    return torch.isin(tokens, torch.tensor(list(stop_ids), device=tokens.device)).any(1)


def completion_mask(tokens: torch.Tensor, stop_ids: Sequence[int]) -> torch.Tensor:
    """1 for the generated tokens up to and including the first stop token, 0 after it."""
    is_stop = torch.isin(tokens, torch.tensor(list(stop_ids), device=tokens.device)).long()
    return ((is_stop.cumsum(1) - is_stop) == 0).long()


def token_rewards(scores: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor,
                  mask: torch.Tensor, kl_coef: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards: -kl_coef x (log pi - log pi_ref) everywhere, plus the completion's SCORE
    at its last token.  Returns (rewards, the per-token KL estimate), both zero past the end."""
    kl = (logprobs - ref_logprobs) * mask
    rewards = -kl_coef * kl
    last = (mask.sum(1).long() - 1).clamp(min=0)
    rewards[torch.arange(len(scores)), last] += scores
    return rewards, kl


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float,
        lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation over (batch, tokens): A_t = sum_k (gamma lam)^k delta_{t+k},
    delta_t = r_t + gamma V_{t+1} - V_t, with V = 0 past the completion's end.  Returns
    (advantages, returns = advantages + values), zero past the end."""
    values = values * mask
    rewards = rewards * mask
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        next_value = values[:, t + 1] if t + 1 < rewards.shape[1] else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = delta + gamma * lam * last
        advantages[:, t] = last
    advantages = advantages * mask
    return advantages, (advantages + values) * mask


def policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                mask: torch.Tensor, clip_range: float) -> tuple[torch.Tensor, dict[str, float]]:
    """The clipped surrogate: mean over tokens of max(-A r, -A clip(r, 1-eps, 1+eps)), r = pi/pi_old."""
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    stats = {"clip_fraction": masked_mean((clipped > unclipped).float(), mask).item(),
             "approx_kl": masked_mean(0.5 * log_ratio.detach() ** 2, mask).item()}
    return loss, stats


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               clip_range: float) -> tuple[torch.Tensor, dict[str, float]]:
    """The clipped value loss: 0.5 x mean over tokens of max((V - R)^2, (V_clipped - R)^2), with
    V_clipped = V_old + clip(V - V_old, -eps, eps)."""
    clipped_values = old_values + torch.clamp(values - old_values, -clip_range, clip_range)
    unclipped = (values - returns) ** 2
    clipped = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped, clipped), mask)
    return loss, {"value_clip_fraction": masked_mean((clipped > unclipped).float(), mask).item()}


# --------------------------------------------------------------------------- the policy


@dataclass
class Policy:
    """The peft model whose active adapter is trained, a value head on its last hidden state, and
    where the frozen reference is: another adapter of the same model, or (None) the bare base."""

    model: Any
    value_head: torch.nn.Linear
    tokenizer: Any
    reference: str | None
    accelerator: Any
    stop_ids: list[int]

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad] + list(self.value_head.parameters())


def make_policy(model: Any, tokenizer: Any, reference: str | None, *, on_gpu: bool = False,
                checkpointing: bool = False) -> Policy:
    """Wrap a peft MODEL (its active adapter trainable) for PPO: dropout off, a zero-initialised
    value head, accelerate for bf16 autocast on GPU."""
    from accelerate import Accelerator
    from trl.trainer.utils import disable_dropout_in_model

    from agentcoder.evaluation.generate import stop_ids

    disable_dropout_in_model(model)
    if checkpointing and not getattr(model, "is_activation_checkpointing", False):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    hidden = model.config.get_text_config().hidden_size
    value_head = torch.nn.Linear(hidden, 1)
    torch.nn.init.zeros_(value_head.weight)
    torch.nn.init.zeros_(value_head.bias)
    bf16 = on_gpu and torch.cuda.is_bf16_supported()
    accelerator = Accelerator(mixed_precision="bf16" if bf16 else "no", cpu=not on_gpu)
    model, value_head = accelerator.prepare(model, value_head)
    return Policy(model, value_head, tokenizer, reference, accelerator, stop_ids(model, tokenizer))


def reference_pass(policy: Policy) -> Any:
    """A context in which the model computes as the frozen reference."""
    from trl.trainer.utils import use_adapter

    return use_adapter(policy.model, policy.reference)


def score_tokens(policy: Policy, ids: torch.Tensor, mask: torch.Tensor, width: int, temperature: float, *,
                 values: bool = True, entropy: bool = False) -> tuple[torch.Tensor, Any, Any]:
    """Log-probabilities of the completion tokens ids[:, width:] (logits / TEMPERATURE), and
    optionally the value head's estimates and the policy's entropy at the same positions."""
    from trl.trainer.utils import entropy_from_logits, selective_log_softmax

    n_completion = ids.shape[1] - width
    position_ids = (mask.cumsum(1) - 1).clamp(min=0)  # as generate() numbers left-padded rows
    out = policy.model(input_ids=ids, attention_mask=mask, position_ids=position_ids, use_cache=False,
                       output_hidden_states=values, logits_to_keep=n_completion + 1)
    logits = out.logits[:, :-1].float() / temperature
    logprobs = selective_log_softmax(logits, ids[:, width:])
    value = None
    if values:
        hidden = out.hidden_states[-1][:, width - 1 : -1].float()
        value = policy.value_head(hidden).squeeze(-1)
    ent = entropy_from_logits(logits.detach()) if entropy else None
    return logprobs, value, ent


# --------------------------------------------------------------------------- rollout


@dataclass
class Rollout:
    """One batch of sampled completions with everything the PPO update needs (B rows, T tokens)."""

    ids: torch.Tensor  # (B, width + T) prompt (left-padded) + completion (pad after its end)
    attention: torch.Tensor  # (B, width + T)
    mask: torch.Tensor  # (B, T) 1 on the completion's tokens
    width: int  # prompt columns
    logprobs: torch.Tensor
    values: torch.Tensor
    advantages: torch.Tensor  # whitened
    returns: torch.Tensor
    scores: torch.Tensor  # (B,) the reward function's score per completion
    kl: torch.Tensor  # (B, T) log pi - log pi_ref
    texts: list[str]
    reward_parts: dict[str, float]  # mean of each part of the score (empty for a plain reward function)
    ended_share: float  # share of completions that end with a stop token (not cut at max_new_tokens)

    def __len__(self) -> int:
        return len(self.texts)


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def rollout_generation(p: Any) -> dict[str, Any]:
    """The rollouts' sampling settings (method.ppo), every other field neutral; recorded in metrics.json."""
    from agentcoder.evaluation.generate import generation_settings

    return generation_settings({"do_sample": True, "temperature": p.temperature})


@torch.no_grad()
def rollout(policy: Policy, rows: Sequence[dict[str, Any]], reward: Callable[..., list[float]], p: Any,
            micro_batch: int) -> Rollout:
    """Sample one completion per row's prompt, score it, and compute values, KL and advantages."""
    from transformers import GenerationConfig

    tok, model = policy.tokenizer, policy.model
    device = policy.accelerator.device
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else policy.stop_ids[0]
    encoded = [tok(r["prompt"], add_special_tokens=False)["input_ids"] for r in rows]
    width = max(len(e) for e in encoded)
    prompt = torch.full((len(rows), width), pad_id, dtype=torch.long)
    prompt_mask = torch.zeros_like(prompt)
    for i, e in enumerate(encoded):  # left padding keeps every prompt's end aligned
        prompt[i, width - len(e) :] = torch.tensor(e)
        prompt_mask[i, width - len(e) :] = 1
    prompt, prompt_mask = prompt.to(device), prompt_mask.to(device)

    model.eval()
    # Sampled from softmax(logits / temperature) exactly, the distribution score_tokens scores: every
    # sampling and penalty field comes from the config, none from the checkpoint's generation_config.
    config = GenerationConfig(**rollout_generation(p), max_new_tokens=p.max_new_tokens,
                              eos_token_id=policy.stop_ids, pad_token_id=pad_id)
    out = model.generate(input_ids=prompt, attention_mask=prompt_mask, generation_config=config)
    completion = out[:, width:]
    mask = completion_mask(completion, policy.stop_ids)
    completion = torch.where(mask.bool(), completion, pad_id)
    texts = [tok.decode(c[m.bool()], skip_special_tokens=True) for c, m in zip(completion, mask, strict=True)]
    columns = {k: [r[k] for r in rows] for k in rows[0] if k != "prompt"}
    split = getattr(reward, "parts", None)  # make_reward's functions also give the score's parts
    parts = split(texts, **columns) if split else [{} for _ in texts]
    scores = torch.tensor([sum(q.values()) for q in parts] if split else reward(texts, **columns),
                          dtype=torch.float32, device=device)
    ended = completion_ended(completion, policy.stop_ids)
    if p.missing_eos_penalty is not None:
        scores = scores - p.missing_eos_penalty * (~ended).float()

    ids = torch.cat([prompt, completion], 1)
    attention = torch.cat([prompt_mask, mask], 1)
    logprobs, values, ref_logprobs = [], [], []
    for s in _chunks(len(rows), micro_batch):
        with policy.accelerator.autocast():  # the update's numerics, so that its first ratios are 1
            lp, v, _ = score_tokens(policy, ids[s], attention[s], width, p.temperature)
            with reference_pass(policy):
                ref_logprobs.append(score_tokens(policy, ids[s], attention[s], width, p.temperature,
                                                 values=False)[0])
        logprobs.append(lp)
        values.append(v)
    logprobs, values, ref = torch.cat(logprobs), torch.cat(values), torch.cat(ref_logprobs)
    maskf = mask.float()
    rewards, kl = token_rewards(scores, logprobs, ref, maskf, p.kl_coef)
    advantages, returns = gae(rewards, values, maskf, p.gamma, p.lam)
    return Rollout(ids, attention, maskf, width, logprobs * maskf, values * maskf,
                   masked_whiten(advantages, maskf), returns, scores, kl, texts,
                   {k: sum(q[k] for q in parts) / len(parts) for k in parts[0]}, ended.float().mean().item())


# --------------------------------------------------------------------------- update


def ppo_update(policy: Policy, ro: Rollout, optimizer: Any, scheduler: Any, p: Any, micro_batch: int,
               grad_accum: int, generator: torch.Generator) -> dict[str, float]:
    """ppo_epochs passes over RO in shuffled minibatches of micro_batch x grad_accum rows, one
    optimizer step each; returns the means of the losses and diagnostics."""
    policy.model.train()
    sums: dict[str, float] = {}
    n_micro = 0
    minibatch = micro_batch * grad_accum
    for _ in range(p.ppo_epochs):
        order = torch.randperm(len(ro), generator=generator)
        for mb in _chunks(len(ro), minibatch):
            rows = order[mb]
            optimizer.zero_grad()
            for part in _chunks(len(rows), micro_batch):
                i = rows[part].to(ro.ids.device)
                with policy.accelerator.autocast():
                    logprobs, values, entropy = score_tokens(policy, ro.ids[i], ro.attention[i], ro.width,
                                                             p.temperature, entropy=True)
                mask = ro.mask[i]
                pg, pg_stats = policy_loss(logprobs, ro.logprobs[i], ro.advantages[i], mask, p.clip_range)
                vf, vf_stats = value_loss(values, ro.values[i], ro.returns[i], mask, p.value_clip_range)
                loss = pg + p.vf_coef * vf
                policy.accelerator.backward(loss * len(i) / len(rows))
                figures = {"loss": loss.item(), "policy_loss": pg.item(), "value_loss": vf.item(),
                           "entropy": masked_mean(entropy, mask).item(), **pg_stats, **vf_stats}
                for k, v in figures.items():
                    sums[k] = sums.get(k, 0.0) + v
                n_micro += 1
            policy.accelerator.clip_grad_norm_(policy.parameters(), p.max_grad_norm)
            optimizer.step()
            scheduler.step()
    return {k: v / max(n_micro, 1) for k, v in sums.items()}


# --------------------------------------------------------------------------- the loop


def prompt_batches(n: int, size: int, seed: int) -> Iterator[list[int]]:
    """Endless batches of SIZE row indices: a fresh seeded permutation every pass over the N rows."""
    generator = torch.Generator().manual_seed(seed)
    queue: list[int] = []
    while True:
        while len(queue) < size:
            queue += torch.randperm(n, generator=generator).tolist()
        yield queue[:size]
        queue = queue[size:]


def optimizer_steps(iterations: int, rollout_size: int, p: Any, micro_batch: int, grad_accum: int) -> int:
    return iterations * p.ppo_epochs * math.ceil(rollout_size / (micro_batch * grad_accum))


def make_optimizer(policy: Policy, lr: float, weight_decay: float, scheduler: str, warmup_steps: int,
                   total_steps: int) -> tuple[Any, Any]:
    """AdamW over the trainable adapter and the value head (eps 1e-5, as Huang et al.) and the LR schedule."""
    from transformers import get_scheduler

    optimizer = torch.optim.AdamW(policy.parameters(), lr=lr, weight_decay=weight_decay, eps=1e-5)
    optimizer = policy.accelerator.prepare(optimizer)
    return optimizer, get_scheduler(scheduler, optimizer, num_warmup_steps=warmup_steps,
                                    num_training_steps=total_steps)


def train_ppo(policy: Policy, rows: Sequence[dict[str, Any]], reward: Callable[..., list[float]], p: Any, *,
              iterations: int, micro_batch: int, grad_accum: int, optimizer: Any, scheduler: Any, seed: int,
              on_iteration: Callable[[int, dict[str, float]], None] | None = None,
              resume: LoopState | None = None, save: Callable[[LoopState], None] | None = None,
              progress: bool = True) -> list[dict[str, float]]:
    """ITERATIONS of rollout + update over ROWS ({"prompt", ...the reward's columns}); returns one
    dict of figures per iteration (reward mean/std, KL, clip fraction, value loss, entropy, ...).

    RESUME continues a checkpointed loop after its iteration (the same prompts, shuffles and samples
    follow as if it had not stopped); SAVE gets the loop's state after every iteration."""
    from tqdm.auto import tqdm

    from agentcoder.training.checkpoints import restore_rng_states, rng_states

    generator = torch.Generator().manual_seed(seed)
    batches = prompt_batches(len(rows), min(p.rollout_batch_size, len(rows)), seed)
    history: list[dict[str, float]] = []
    start = 0
    if resume is not None:
        start, history = resume.iteration, list(resume.history)
        for _ in range(start):
            next(batches)
        generator.set_state(resume.generator)
        restore_rng_states(resume.rng)
    bar = tqdm(range(start + 1, iterations + 1), desc="ppo", unit="it", disable=not progress)
    for it in bar:
        ro = rollout(policy, [rows[i] for i in next(batches)], reward, p, micro_batch)
        lr = scheduler.get_last_lr()[0]  # this iteration's (first) learning rate
        update = ppo_update(policy, ro, optimizer, scheduler, p, micro_batch, grad_accum, generator)
        lengths = ro.mask.sum(1)
        figures = {
            "reward": ro.scores.mean().item(),
            "reward_std": ro.scores.std(unbiased=False).item(),
            "kl": masked_mean(ro.kl, ro.mask).item(),  # per token, as GRPO logs it
            "kl_per_completion": ro.kl.sum(1).mean().item(),
            "completion_length": lengths.mean().item(),
            "tokens": int(ro.attention.sum().item()),
            "learning_rate": lr,
            "explained_variance": explained_variance(ro.values, ro.returns, ro.mask),
            "ended_share": ro.ended_share,
            **{f"reward_{k}": v for k, v in ro.reward_parts.items()},
            **update,
        }
        history.append(figures)
        bar.set_postfix(reward=f"{figures['reward']:.3f}", kl=f"{figures['kl']:.4f}")
        if on_iteration is not None:
            on_iteration(it, figures)
        if save is not None:
            save(LoopState(it, history, generator.get_state(), rng_states()))
    return history


# --------------------------------------------------------------------------- checkpoints


@dataclass
class LoopState:
    """Where the PPO loop stands after an iteration: what a resumed loop needs to go on identically."""

    iteration: int
    history: list[dict[str, float]]
    generator: torch.Tensor  # the minibatch shuffles' RNG
    rng: dict[str, Any]  # the sampling's RNGs (training/checkpoints.rng_states: CPU and every CUDA device)


STATE_FILE = "ppo_state.pt"
POLICY_DIR = "policy"


def save_checkpoint(folder: Path, policy: Policy, optimizer: Any, scheduler: Any, loop: LoopState,
                    train_time_s: float, config_hash: str) -> Path:
    """Policy adapter, value head, optimizer, schedule, RNGs and iteration into FOLDER/iter-N
    (training/checkpoints.save: written whole, the last two kept)."""
    from agentcoder.training import checkpoints

    def write(target: Path) -> None:
        policy.model.save_pretrained(str(target / POLICY_DIR), selected_adapters=[policy.model.active_adapter])
        torch.save({"iteration": loop.iteration, "history": loop.history, "generator": loop.generator,
                    "rng": loop.rng, "value_head": policy.value_head.state_dict(),
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "train_time_s": train_time_s}, target / STATE_FILE)

    return checkpoints.save(folder, loop.iteration, write, config_hash)


def read_checkpoint(target: Path, device: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(state, policy adapter weights) of checkpoint TARGET, each file read whole or named as damaged."""
    from peft import load_peft_weights
    from peft.utils import SAFETENSORS_WEIGHTS_NAME

    from agentcoder.training.checkpoints import read_part

    state = read_part(target / STATE_FILE, lambda f: torch.load(f, weights_only=False))
    weights = read_part(target / POLICY_DIR / SAFETENSORS_WEIGHTS_NAME,
                        lambda f: load_peft_weights(str(f.parent), device=device))
    return state, weights


def load_checkpoint(folder: Path, policy: Policy, optimizer: Any, scheduler: Any, config_hash: str, *,
                    resume: bool = True) -> tuple[LoopState, float, Path] | None:
    """The newest whole checkpoint in FOLDER of this config loaded into POLICY, OPTIMIZER and SCHEDULER:
    (loop state, training seconds of the attempts so far, its dir); None to start over
    (training/checkpoints.resume_point says why)."""
    from peft import set_peft_model_state_dict

    from agentcoder.training.checkpoints import resume_point

    device = str(next(policy.value_head.parameters()).device)
    found = resume_point(folder, lambda target: read_checkpoint(target, device), config_hash, resume=resume, tag=TAG)
    if found is None:
        return None
    target, (state, weights) = found
    set_peft_model_state_dict(policy.model, weights, adapter_name=policy.model.active_adapter)
    policy.value_head.load_state_dict(state["value_head"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    loop = LoopState(state["iteration"], state["history"], state["generator"], state["rng"])
    return loop, float(state["train_time_s"]), target


# --------------------------------------------------------------------------- the recipe


def run(cfg: DictConfig, record: RunRecord) -> MethodResult:
    """SFT stage (or base), PPO iterations with val selection, test."""
    from transformers import TrainingArguments

    from agentcoder.data import PromptFormat
    from agentcoder.data.rows import rl_dataset
    from agentcoder.evaluation.evaluator import peak_memory_bytes, select_examples
    from agentcoder.evaluation.reward import make_reward
    from agentcoder.files import BEST_FILE, TRAIN_LOG_FILE, read_json
    from agentcoder.methods.lora import fit_adapter
    from agentcoder.methods.stages import start_details, start_policy
    from agentcoder.models.memory import trim_heap
    from agentcoder.tracking.trainlog import LOSS_CURVE_FILE, REWARD_CURVE_FILE, plot_loss_curve, plot_reward_curve
    from agentcoder.training.selection import ADAPTER_DIR, ValSelection
    from agentcoder.training.session import CHECKPOINT_DIR, LoopLoggers, TrainFigures, finish, train_splits
    from agentcoder.training.setup import prompt_budget, trainer_args

    run_dir, p, t = record.dir, cfg.method.ppo, cfg.method.train

    # 1. data: prompts plus the columns the reward reads
    splits = train_splits(cfg, run_dir)
    record.update(data=splits.info)

    # 2. model: policy = the SFT adapter (trainable), reference = a frozen copy on the same base
    base, peft_config, stage = start_policy(cfg, record, TAG, fit_adapter)
    if peft_config is not None:  # method.init=base: a fresh LoRA; the reference is the bare base
        from peft import get_peft_model

        base.model, reference = get_peft_model(base.model, peft_config), None
    else:
        base.model.load_adapter(str(stage.adapter), adapter_name=REFERENCE, is_trainable=False)
        reference = REFERENCE
    # The settings the trackers record as the run's config, as a TRL trainer's; made before the policy's
    # Accelerator, since TrainingArguments resets accelerate's state.
    args = TrainingArguments(**trainer_args(cfg, run_dir / CHECKPOINT_DIR, on_gpu=base.on_gpu,
                                            checkpointing=base.checkpointing))
    policy = make_policy(base.model, base.tokenizer, reference, on_gpu=base.on_gpu,
                         checkpointing=base.checkpointing)
    fmt = PromptFormat(base.tokenizer, cfg.model.tool_format)
    rows = list(rl_dataset(splits.train, fmt, prompt_budget(cfg, p.max_new_tokens)))
    if not rows:
        raise ValueError(f"every train prompt is longer than method.train.max_length={t.max_length}"
                         f" less method.ppo.max_new_tokens={p.max_new_tokens}")

    # 3. schedule: iterations of rollout_batch_size prompts; optimizer steps; evaluations
    rollout_size = min(p.rollout_batch_size, len(rows))
    per_epoch = math.ceil(len(rows) / rollout_size)
    iterations = int(t.max_steps) if t.max_steps > 0 else max(1, math.ceil(float(t.epochs) * per_epoch))
    total = optimizer_steps(iterations, rollout_size, p, t.batch_size, t.grad_accum)
    schedule = {"iterations": iterations, "optimizer_steps": total, "warmup_steps": math.ceil(t.warmup_ratio * total),
                "eval_steps": int(t.eval_steps) if t.eval_steps else max(1, math.ceil(iterations / t.evaluations))}
    n_trainable = sum(q.numel() for q in policy.parameters())
    record.update(train={"n_train": len(rows), "n_train_too_long": len(splits.train) - len(rows),
                         "schedule": schedule, "trainable_params": n_trainable,
                         "total_params": sum(q.numel() for q in base.model.parameters())})
    print(f"[{TAG}] schedule: {schedule}")
    optimizer, scheduler = make_optimizer(policy, t.lr, t.weight_decay, t.scheduler, schedule["warmup_steps"], total)

    # A killed run goes on from its last checkpoint (every save_steps iterations, by default with every
    # evaluation).  The best adapter of an earlier attempt counts only if it lies on the trajectory
    # continued here; a run that starts over starts its selection over too.
    checkpoint_dir, config_hash = run_dir / CHECKPOINT_DIR, record.data["config_hash"]
    resumed = load_checkpoint(checkpoint_dir, policy, optimizer, scheduler, config_hash, resume=cfg.resume)
    loop, earlier_s, resumed_from = resumed if resumed is not None else (None, 0.0, None)
    best = read_json(run_dir / BEST_FILE) or {}
    if best and (loop is None or (best.get("step") or 0) > loop.iteration):
        (run_dir / BEST_FILE).unlink(missing_ok=True)
        shutil.rmtree(run_dir / ADAPTER_DIR, ignore_errors=True)
    if loop is not None:
        print(f"[{TAG}] resuming after iteration {loop.iteration} of {iterations} from {resumed_from}")
        record.update(train={"resumed_from": str(resumed_from)})
    save_steps = int(t.save_steps) if t.save_steps else schedule["eval_steps"]

    # 4. the loop; every eval_steps iterations val exact match selects the adapter.  Its figures go to
    # train_log.jsonl and the trackers of method.train.report_to, as TRL's trainers log theirs.
    selection = ValSelection(run_dir, select_examples(splits.val, t.val_limit), base.tokenizer, cfg, TAG)
    loggers = LoopLoggers(cfg, run_dir, args, max_steps=iterations)
    loggers.begin(policy.model, step=loop.iteration if loop else 0)

    def on_iteration(it: int, figures: dict[str, float]) -> None:
        loggers.log(it, figures)
        if selection.examples and (it % schedule["eval_steps"] == 0 or it == iterations):
            loggers.log(it, selection.check(policy.model, it))
        # An iteration generates rollouts and then trains on them: like a val check, generation leaves
        # glibc's heap fragmented, so its free pages go back each iteration (HeapTrim in TRL's trainers).
        trim_heap()

    def save(state: LoopState) -> None:
        if state.iteration % save_steps == 0 and state.iteration < iterations:
            elapsed = earlier_s + time.perf_counter() - t0
            save_checkpoint(checkpoint_dir, policy, optimizer, scheduler, state, elapsed, config_hash)

    if base.on_gpu:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    history = train_ppo(policy, rows, make_reward(cfg.method.reward), p, iterations=iterations,
                        micro_batch=t.batch_size, grad_accum=t.grad_accum, optimizer=optimizer,
                        scheduler=scheduler, seed=cfg.seed, on_iteration=on_iteration, resume=loop, save=save)
    train_time = time.perf_counter() - t0
    loggers.end()
    plot_reward_curve(run_dir / TRAIN_LOG_FILE, run_dir / REWARD_CURVE_FILE)
    plot_loss_curve(run_dir / TRAIN_LOG_FILE, run_dir / LOSS_CURVE_FILE)
    tokens = sum(h["tokens"] for h in history)
    attempt_tokens = sum(h["tokens"] for h in history[loop.iteration if loop else 0:])
    training = TrainFigures(
        train_time_s=round(earlier_s + train_time, 3),  # every attempt's
        val_eval_time_s=round(selection.eval_time_s, 3),
        train_tokens=tokens,
        train_tokens_per_s=round(attempt_tokens / max(train_time - selection.eval_time_s, 1e-9), 2),
        steps=iterations,
        optimizer_steps=total,
        warmup_steps=schedule["warmup_steps"],
        epochs=round(iterations * rollout_size / len(rows), 4),
        final_train_loss=round(history[-1]["loss"], 6),
        first_reward=round(history[0]["reward"], 4),
        final_reward=round(history[-1]["reward"], 4),
        best_val_exact_match=selection.best_score,
        best_step=selection.best_step,
        final_val_exact_match=selection.last_score,
        n_val=len(selection.examples),
        peak_memory_bytes=int(peak_memory_bytes(base.device)),
        resumed=loop is not None,
        packing="none",
        gradient_checkpointing=base.checkpointing,
    )
    record.update(train=training.as_dict())

    # 5. test: the best adapter (the reference adapter is dropped first)
    if reference is not None:
        policy.model.delete_adapter(REFERENCE)
    return finish(
        cfg, policy.model, base, splits, run_dir, selection, training,
        details={**start_details(stage), "ppo": OmegaConf.to_container(p, resolve=True),
                 "rollout_generation": rollout_generation(p),
                 "reward": OmegaConf.to_container(cfg.method.reward, resolve=True)},
        artifacts={"reward_curve": str(run_dir / REWARD_CURVE_FILE)},
    )
