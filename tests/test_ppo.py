"""method=ppo: the math against hand-computed numbers, the reward rising on a toy task, a full run."""

from __future__ import annotations

import math

import pytest
import torch

from agentcoder.methods.ppo import completion_mask, gae, masked_whiten, policy_loss, token_rewards, value_loss
from tests.rl_toy import TOY_PROMPTS, letter_share, rose, toy_lora, toy_model
from tests.test_lora import bfcl_cache  # noqa: F401  (module-scoped fixture)


def close(actual: torch.Tensor, expected: list) -> None:
    torch.testing.assert_close(actual, torch.tensor(expected), atol=1e-6, rtol=1e-6)


def test_gae_matches_hand_computed_advantages():
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 9.0]])
    values = torch.tensor([[0.5, 0.5, 0.5], [1.0, 0.0, 7.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])  # row 2 ends after two tokens
    advantages, returns = gae(rewards, values, mask, gamma=0.9, lam=0.5)
    # By hand, backwards, gamma*lam = 0.45.  Row 1: A2 = 1 - 0.5 = 0.5; A1 = (0.9*0.5 - 0.5) + 0.45*0.5 = 0.175;
    # A0 = -0.05 + 0.45*0.175.  Row 2: the reward 9 and value 7 past its end count as 0: A1 = 2, A0 = -1 + 0.45*2.
    close(advantages, [[0.02875, 0.175, 0.5], [-0.1, 2.0, 0.0]])
    close(returns, [[0.52875, 0.675, 1.0], [0.9, 2.0, 0.0]])


def test_whitening_uses_only_the_masked_entries():
    x = torch.tensor([1.0, 2.0, 3.0, 100.0])
    white = masked_whiten(x, torch.tensor([1.0, 1.0, 1.0, 0.0]))
    close(white, [-1.0, 0.0, 1.0, 0.0])  # mean 2, unbiased variance 1


def test_token_rewards_put_the_score_on_the_last_token_and_the_kl_penalty_everywhere():
    scores = torch.tensor([1.0, -0.5])
    logprobs = torch.tensor([[-1.0, -2.0, -3.0], [-1.0, -1.0, -1.0]])
    ref = torch.tensor([[-1.5, -2.0, -2.0], [-1.0, -2.0, -9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    rewards, kl = token_rewards(scores, logprobs, ref, mask, kl_coef=0.1)
    close(kl, [[0.5, 0.0, -1.0], [0.0, 1.0, 0.0]])
    close(rewards, [[-0.05, 0.0, 1.1], [0.0, -0.6, 0.0]])


def test_completion_mask_keeps_the_stop_token_and_drops_what_follows():
    tokens = torch.tensor([[5, 2, 2, 2], [5, 6, 7, 8], [2, 2, 2, 2]])
    assert completion_mask(tokens, [2]).tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]


def test_clipped_policy_loss_matches_hand_computed_numbers():
    ratios = torch.tensor([[1.5, 0.5, 1.1]])
    advantages = torch.tensor([[1.0, -1.0, 2.0]])
    old = torch.zeros(1, 3)
    loss, stats = policy_loss(ratios.log(), old, advantages, torch.ones(1, 3), clip_range=0.2)
    # max(-A r, -A clip(r)): -1.2 (clipped at 1.2), 0.8 (clipped at 0.8), -2.2 (inside the range)
    assert loss.item() == pytest.approx((-1.2 + 0.8 - 2.2) / 3)
    assert stats["clip_fraction"] == pytest.approx(2 / 3)
    assert stats["approx_kl"] == pytest.approx(sum(0.5 * math.log(r) ** 2 for r in (1.5, 0.5, 1.1)) / 3)


def test_clipped_value_loss_matches_hand_computed_numbers():
    values = torch.tensor([[1.0, 0.0, 0.6]])
    old = torch.tensor([[0.5, 0.5, 0.5]])
    returns = torch.tensor([[2.0, 0.0, 0.0]])
    loss, stats = value_loss(values, old, returns, torch.ones(1, 3), clip_range=0.2)
    # clipped values 0.7, 0.3, 0.6: max((V-R)^2, (Vc-R)^2) = 1.69, 0.09, 0.36
    assert loss.item() == pytest.approx(0.5 * (1.69 + 0.09 + 0.36) / 3)
    assert stats["value_clip_fraction"] == pytest.approx(2 / 3)


def test_ppo_raises_the_reward_on_a_toy_task(tiny_model_dir, tiny_tokenizer):
    from peft import get_peft_model

    from agentcoder.config import PpoParams
    from agentcoder.methods import ppo

    policy = ppo.make_policy(get_peft_model(toy_model(tiny_model_dir), toy_lora()), tiny_tokenizer, None)
    p = PpoParams(rollout_batch_size=16, max_new_tokens=8, kl_coef=0.0, ppo_epochs=4)
    optimizer, scheduler = ppo.make_optimizer(policy, 3e-2, 0.0, "constant", 0, 100)
    history = ppo.train_ppo(policy, TOY_PROMPTS, letter_share, p, iterations=6, micro_batch=8, grad_accum=1,
                            optimizer=optimizer, scheduler=scheduler, seed=0, progress=False)
    rewards = [h["reward"] for h in history]
    assert rose(rewards, 0.1), rewards  # last two vs first two iterations
    assert {"reward_std", "clip_fraction", "value_loss", "entropy", "kl"} <= set(history[0])


class StandInTracker:
    """Stands in for an integration callback of transformers that this machine lacks (wandb): keeps
    what a tracker is sent."""

    events: list = []

    def on_train_begin(self, args, state, control, model=None, **kwargs):  # noqa: ANN001
        self.events.append(("begin", model is not None))

    def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
        self.events.append(("log", state.global_step, dict(logs)))

    def on_train_end(self, args, state, control, **kwargs):  # noqa: ANN001
        self.events.append(("end",))


def test_ppo_run_from_base_writes_the_run_files(tiny_model_dir, bfcl_cache, tmp_path, monkeypatch):  # noqa: F811
    from omegaconf import OmegaConf
    from transformers.integrations import integration_utils

    from tests.test_grpo import log_lines, rl_cfg, run_method

    cfg = rl_cfg(
        "ppo", tiny_model_dir, bfcl_cache, "method.init=base", "method.train.max_steps=2",
        "method.train.batch_size=2", "method.ppo.rollout_batch_size=4", "method.ppo.max_new_tokens=8",
        "method.ppo.ppo_epochs=2", "method.train.eval_steps=1", "method.train.report_to=[tensorboard]",
    )
    # Every tracker of report_to gets the curves, as TRL's trainers send them; wandb is not installed
    # here, so its integration callback is stood in for (set past the config check, which wants wandb).
    monkeypatch.setitem(integration_utils.INTEGRATION_TO_CALLBACK, "wandb", StandInTracker)
    monkeypatch.setattr(StandInTracker, "events", [])
    OmegaConf.update(cfg, "method.train.report_to", ["tensorboard", "wandb"])
    from agentcoder.models import memory

    trims = []
    monkeypatch.setattr(memory, "trim_heap", lambda: trims.append("trim"))
    monkeypatch.setattr(memory, "release_memory", lambda: None)  # the val checks' own trim, not counted
    metrics, data = run_method("ppo", cfg, tmp_path)
    assert trims == ["trim", "trim"]  # the heap's free pages go back after each of the two iterations
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = EventAccumulator(str(tmp_path / "tensorboard")).Reload()
    assert [e.step for e in board.Scalars("train/reward")] == [1, 2]
    assert [e.step for e in board.Scalars("train/val_exact_match")] == [1, 2]
    events = StandInTracker.events
    assert events[0] == ("begin", True) and events[-1] == ("end",)
    assert [e[1] for e in events if e[0] == "log" and "reward" in e[2]] == [1, 2]
    assert [e[1] for e in events if e[0] == "log" and "val_exact_match" in e[2]] == [1, 2]
    t = metrics["training"]
    assert metrics["method"] == "ppo" and t["steps"] == 2 and t["optimizer_steps"] == 2 * 2 * 2
    assert metrics["details"]["init"] == "base" and metrics["details"]["ppo"]["ppo_epochs"] == 2
    log = log_lines(tmp_path)
    per_iteration = [e for e in log if "reward" in e]
    assert [e["step"] for e in per_iteration] == [1, 2]
    for key in ("reward_std", "kl", "clip_fraction", "value_loss", "entropy", "loss"):
        assert all(isinstance(e[key], float) for e in per_iteration), key
    assert per_iteration[0]["kl"] == 0.0  # a fresh LoRA starts as the reference (the base)
    assert [e["step"] for e in log if "val_exact_match" in e] == [1, 2]
    assert t["best_step"] in (1, 2) and t["first_reward"] == round(per_iteration[0]["reward"], 4)
    assert len((tmp_path / "predictions.jsonl").read_text().splitlines()) == 4
    assert (tmp_path / "reward_curve.png").stat().st_size > 1000
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    assert data["train"]["schedule"]["iterations"] == 2 and data["train"]["trainable_params"] > 0


def test_ppo_from_the_sft_stage_keeps_it_as_the_frozen_reference(tiny_model_dir, bfcl_cache, tmp_path):  # noqa: F811
    from tests.rl_toy import register_fake_sft
    from tests.test_grpo import log_lines, rl_cfg, run_method

    cfg = rl_cfg(
        "ppo", tiny_model_dir, bfcl_cache, "method.train.max_steps=2", "method.train.batch_size=4",
        "method.ppo.rollout_batch_size=8", "method.ppo.max_new_tokens=8", "method.ppo.ppo_epochs=1",
        "method.train.lr=1e-2", "method.train.scheduler=constant", "method.train.evaluations=1",
        "eval.limit=2", "method.train.val_limit=2",
    )
    adapter = register_fake_sft(cfg, tmp_path / "lora_run")
    metrics, data = run_method("ppo", cfg, tmp_path / "run")
    assert metrics["details"]["sft_adapter"] == str(adapter.resolve())
    assert metrics["details"]["sft_trained_here"] is False and data["stage"]["trained_here"] is False
    log = [e for e in log_lines(tmp_path / "run") if "reward" in e]
    # The policy starts as the SFT adapter and the reference is a frozen copy of it (not the base):
    # no KL at first; once the first rollout's rewards differ, the update moves the policy away.
    assert log[0]["kl"] == 0.0 and log[0]["reward_std"] > 0 and log[1]["kl"] != 0.0
    saved = tmp_path / "run" / "adapter"
    assert (saved / "adapter_config.json").is_file() and not (saved / "reference").exists()
    assert not (tmp_path / "run" / "tensorboard").exists()  # report_to=[]: no tracker, no tensorboard


def test_rollouts_sample_the_distribution_they_score_whatever_the_checkpoint_says(tiny_model_dir, tiny_tokenizer):
    from peft import get_peft_model

    from agentcoder.config import PpoParams
    from agentcoder.methods import ppo

    model = get_peft_model(toy_model(tiny_model_dir), toy_lora())
    gen = model.generation_config  # what a Qwen2.5 instruct checkpoint's generation_config.json carries
    gen.repetition_penalty, gen.top_k, gen.top_p, gen.temperature = 1.3, 20, 0.8, 0.7
    policy = ppo.make_policy(model, tiny_tokenizer, None)
    p = PpoParams(rollout_batch_size=4, max_new_tokens=6, temperature=0.9)
    seen = []
    generate = model.generate

    def spy(*args, **kwargs):
        seen.append(kwargs["generation_config"])
        return generate(*args, **kwargs)

    model.generate = spy
    ppo.rollout(policy, TOY_PROMPTS[:4], letter_share, p, micro_batch=4)
    (config,) = seen
    assert (config.repetition_penalty, config.top_k, config.top_p, config.temperature) == (1.0, 0, 1.0, 0.9)

    # With that config, what generate samples from is softmax(logits / temperature): score_tokens' distribution.
    config.output_scores = config.output_logits = config.return_dict_in_generate = True
    prompt = tiny_tokenizer(TOY_PROMPTS[0]["prompt"], return_tensors="pt")
    out = generate(**prompt, generation_config=config)
    for scores, logits in zip(out.scores, out.logits, strict=True):
        torch.testing.assert_close(scores, logits / 0.9)


def test_explained_variance_matches_hand_computed_numbers():
    from agentcoder.methods.ppo import explained_variance

    returns = torch.tensor([[1.0, 2.0, 3.0, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])  # the last entry is padding
    assert explained_variance(returns.clone(), returns, mask) == pytest.approx(1.0)
    assert explained_variance(torch.full_like(returns, 2.0), returns, mask) == pytest.approx(0.0)
    # residuals (0, 1, 0): variance 2/9 against the returns' 2/3
    values = torch.tensor([[1.0, 1.0, 3.0, 0.0]])
    assert explained_variance(values, returns, mask) == pytest.approx(1 - (2 / 9) / (2 / 3))


def test_reward_parts_sum_to_the_reward_and_missing_eos_is_penalised(tiny_model_dir, tiny_tokenizer):
    from peft import get_peft_model

    from agentcoder.config import PpoParams
    from agentcoder.methods import ppo

    policy = ppo.make_policy(get_peft_model(toy_model(tiny_model_dir), toy_lora()), tiny_tokenizer, None)

    def reward(completions, **_):
        return [float(sum(q.values())) for q in reward.parts(completions)]

    reward.parts = lambda completions, **_: [{"exact": 0.5, "penalties": -0.25} for _ in completions]
    torch.manual_seed(0)
    # 3 new tokens: the random tiny model rarely stops that soon, so most rows are cut
    cut = ppo.rollout(policy, TOY_PROMPTS[:4], reward, PpoParams(max_new_tokens=3, missing_eos_penalty=1.0), 4)
    ended = torch.tensor([1.0 if e else 0.0 for e in ppo.completion_ended(cut.ids[:, cut.width:],
                                                                          policy.stop_ids)])
    torch.testing.assert_close(cut.scores, 0.25 - 1.0 * (1 - ended))
    assert cut.reward_parts == {"exact": 0.5, "penalties": -0.25} and cut.ended_share == ended.mean().item()


class Killed(RuntimeError):
    pass


def kill_after_iteration_2(monkeypatch: pytest.MonkeyPatch, cfg: object, run: object) -> None:
    """Run PPO into RUN until the checkpoint of iteration 2 is written, then die as a kill would."""
    from agentcoder.methods import ppo
    from tests.test_grpo import run_method

    save = ppo.save_checkpoint

    def save_then_die(folder, policy, optimizer, scheduler, loop, *args):
        save(folder, policy, optimizer, scheduler, loop, *args)
        if loop.iteration == 2:
            raise Killed("killed after the checkpoint of iteration 2")

    monkeypatch.setattr(ppo, "save_checkpoint", save_then_die)
    with pytest.raises(Killed):
        run_method("ppo", cfg, run)
    monkeypatch.setattr(ppo, "save_checkpoint", save)


def test_a_killed_ppo_run_resumes_from_its_checkpoint_and_says_so(tiny_model_dir, bfcl_cache, tmp_path,  # noqa: F811
                                                                 monkeypatch):
    from agentcoder.methods import ppo
    from agentcoder.training import checkpoints
    from tests.test_grpo import log_lines, rl_cfg, run_method

    cfg = rl_cfg(
        "ppo", tiny_model_dir, bfcl_cache, "method.init=base", "method.train.max_steps=4",
        "method.train.batch_size=2", "method.ppo.rollout_batch_size=4", "method.ppo.max_new_tokens=8",
        "method.ppo.ppo_epochs=1", "method.train.eval_steps=2", "method.train.report_to=[]",
    )
    run = tmp_path / "run"
    kill_after_iteration_2(monkeypatch, cfg, run)
    assert checkpoints.steps(run / "checkpoints") == [2]

    resumed, data = run_method("ppo", cfg, run)
    fresh, _ = run_method("ppo", cfg, tmp_path / "fresh")
    t = resumed["training"]
    assert t["resumed"] is True and data["train"]["resumed_from"].endswith("iter-2")
    assert fresh["training"]["resumed"] is False and data["attempt"] == 2 and len(data["attempts"]) == 1
    # The resumed loop goes on exactly as the uninterrupted one: same prompts, samples and updates.
    assert [e["reward"] for e in log_lines(run) if "reward" in e][-2:] == \
        [e["reward"] for e in log_lines(tmp_path / "fresh") if "reward" in e][-2:]
    assert t["final_reward"] == fresh["training"]["final_reward"] and t["steps"] == 4
    events = [e["event"] for e in log_lines(run) if "event" in e]
    assert events == ["train_begin", "resume"]
    assert t["train_time_s"] >= torch.load(run / "checkpoints" / "iter-2" / ppo.STATE_FILE,
                                            weights_only=False)["train_time_s"]


@pytest.mark.slow
def test_a_damaged_checkpoint_is_passed_over_and_resume_false_starts_over(tiny_model_dir, bfcl_cache, tmp_path,  # noqa: F811
                                                                        monkeypatch, capsys):
    """The newest checkpoint's policy weights cut in half: the run goes on from the one before it,
    naming the damaged file; resume=false into the completed run then trains it afresh."""
    from omegaconf import OmegaConf

    from agentcoder.training import checkpoints
    from tests.test_grpo import rl_cfg, run_method

    cfg = rl_cfg(
        "ppo", tiny_model_dir, bfcl_cache, "method.init=base", "method.train.max_steps=3",
        "method.train.batch_size=2", "method.ppo.rollout_batch_size=4", "method.ppo.max_new_tokens=8",
        "method.ppo.ppo_epochs=1", "method.train.save_steps=1", "method.train.eval_steps=3",
    )
    run = tmp_path / "run"
    kill_after_iteration_2(monkeypatch, cfg, run)
    weights = run / "checkpoints" / "iter-2" / "policy" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    capsys.readouterr()

    resumed, data = run_method("ppo", cfg, run)
    said = capsys.readouterr().out
    assert f"checkpoint {run / 'checkpoints' / 'iter-2'} is damaged ({weights}: " in said
    assert "resuming after iteration 1 of 3" in said
    assert resumed["training"]["resumed"] is True and data["train"]["resumed_from"].endswith("iter-1")

    again, data = run_method("ppo", OmegaConf.merge(cfg, {"resume": False}), run)
    said = capsys.readouterr().out
    assert "resume=false; starting over" in said and "resuming" not in said
    assert again["training"]["resumed"] is False and "resumed_from" not in data["train"]
    assert checkpoints.steps(run / "checkpoints") == [1, 2]
