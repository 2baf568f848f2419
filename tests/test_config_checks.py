"""Each config section checks its own values, once; the SFT stage's `sft_train` is checked exactly as
method.train, and a setting that needs a missing package fails in preflight."""

from __future__ import annotations

import importlib.util

import pytest

from agentcoder.checks import Section, check_train, problems, validate
from agentcoder.config import CONF_DIR, ConfigError, merge_schema, training_defaults
from agentcoder.preflight import check_overrides, normalize_overrides


def preflight_errors(*overrides: str) -> list[str]:
    try:
        check_overrides(CONF_DIR, normalize_overrides(list(overrides)))
    except ConfigError as err:
        return str(err).splitlines()
    return []


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("sft_train.epochs=-1", "sft_train.epochs=-1.0 is not allowed; expected a positive number"),
        ("sft_train.lr=-1", "sft_train.lr=-1.0 is not allowed; expected a learning rate in (0, 1)"),
        ("sft_train.batch_size=0", "sft_train.batch_size=0 is not allowed; expected a positive int or auto"),
        ("sft_train.warmup_ratio=2", "sft_train.warmup_ratio=2.0 is not allowed; expected a share"),
        ("sft_train.max_steps=0", "sft_train.max_steps=0 is not allowed; expected -1"),
        ("sft_train.evaluations=0", "sft_train.evaluations=0 is not allowed; expected a positive int"),
    ],
)
@pytest.mark.parametrize("method", ["dpo", "lora"])
def test_sft_train_is_checked_like_method_train(method, override, expected):
    errors = preflight_errors(f"method={method}", override)
    assert len(errors) == 1 and errors[0].startswith(expected), errors


def test_an_overlay_key_is_overridden_without_a_plus():
    assert preflight_errors("method=lora", "experiment=grid_smoke", "sft_train.max_steps=5") == []


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_use_vllm_without_vllm_fails_in_preflight():
    errors = preflight_errors("method=grpo", "method.grpo.use_vllm=true")
    assert len(errors) == 1 and "method.grpo.use_vllm=true needs vLLM" in errors[0], errors


def test_every_problem_of_a_section_is_listed_once():
    s = Section(training_defaults(), "method.train.")
    s.node.lr, s.node.epochs, s.node.grad_accum = 2.0, 0.0, 0
    check_train(s)
    assert [ln.split("=", 1)[0] for ln in s.lines] == ["method.train.lr", "method.train.epochs",
                                                       "method.train.grad_accum"]


def test_validate_raises_with_every_problem_and_problems_lists_them():
    from tests.helpers import compose_cfg

    with pytest.raises(ConfigError) as err:
        compose_cfg("method=lora", "method.lora.r=0", "eval.limit=0")
    assert str(err.value).splitlines() == [
        "eval.limit=0 is not allowed; expected a positive int or null",
        "method.lora.r=0 is not allowed; expected a positive int (LoRA rank)",
    ]
    cfg = validate(compose_cfg("method=lora"))
    assert problems(merge_schema(cfg)) == []


@pytest.mark.parametrize("method", ["lora", "dpo", "grpo", "ppo"])
def test_grid_smoke_caps_every_methods_training_and_its_stage(method):
    from agentcoder.methods.stages import sft_stage_config
    from tests.helpers import compose_cfg

    cfg = compose_cfg(f"method={method}", "experiment=grid_smoke")
    assert cfg.method.train.max_steps == 3
    assert sft_stage_config(cfg).method.train.max_steps == 3


def test_all_train_values_are_checked_and_named_as_set():
    errors = preflight_errors("method=dpo", "all_train.lr=2")
    assert errors == ["all_train.lr=2.0 is not allowed; expected a learning rate in (0, 1)"]
    assert any("all_train.nope is not a method.train setting" in e for e in preflight_errors("all_train.nope=1"))


@pytest.mark.parametrize(("method", "key"), [("grpo", "grpo.max_completion_length"), ("ppo", "ppo.max_new_tokens")])
def test_rl_sampling_is_as_long_as_eval_unless_set(method, key):
    from omegaconf import OmegaConf

    from tests.helpers import compose_cfg

    def length(*overrides: str) -> int:
        return OmegaConf.select(validate(compose_cfg(f"method={method}", *overrides)).method, key)

    assert length() == 128
    assert length("experiment=grid_smoke") == 16  # the smoke grid's 16 new tokens cap RL sampling too
    assert length("eval.max_new_tokens=32", f"method.{key}=8") == 8
