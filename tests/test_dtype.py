"""model.dtype: auto picks bf16 only where the hardware computes it; a bf16 base trains fp32 adapters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agentcoder.models import loader
from tests.helpers import compose_cfg
from tests.test_lora import SIZES, bfcl_cache  # noqa: F401  (module-scoped fixture)


def cfg_for(model_dir: Path, *extra: str) -> Any:
    return compose_cfg("method=lora", "model.source=hub", f"model.hub_id={model_dir}", *extra)


@pytest.mark.parametrize("has_bf16, expected", [(True, "bfloat16"), (False, "float32")])
def test_auto_on_cpu_follows_the_bf16_units(monkeypatch, has_bf16, expected):
    monkeypatch.setattr(loader, "cpu_has_bf16", lambda: has_bf16)
    dtype, why = loader.resolve_dtype("auto", "cpu")
    assert dtype == expected and why.startswith("auto: CPU")
    # Without bf16 units nothing changes from fp32: auto is fp32 and so are the eval batch defaults.
    from agentcoder.evaluation.generate import CPU_BATCH, CPU_TOKEN_BUDGET, resolve_batch_size, resolve_token_budget

    if not has_bf16:
        assert resolve_batch_size("auto", "cpu", dtype) == CPU_BATCH
        assert resolve_token_budget("auto", "cpu", dtype) == CPU_TOKEN_BUDGET


@pytest.mark.parametrize("value", ["float32", "bfloat16", "float16"])
def test_a_set_dtype_is_taken_as_it_is(monkeypatch, value):
    monkeypatch.setattr(loader, "cpu_has_bf16", lambda: False)
    assert loader.resolve_dtype(value, "cpu") == (value, "set")


def test_a_bad_dtype_fails_in_one_line_before_loading():
    from agentcoder.config import ConfigError

    with pytest.raises(ConfigError, match=r"model\.dtype=fp8.*auto, float32, bfloat16, float16"):
        compose_cfg("model.dtype=fp8")


def test_bf16_base_loads_records_why_and_keeps_lora_weights_fp32(tiny_model_dir, tmp_path):
    import torch
    from datasets import Dataset

    from agentcoder.methods.lora import sft_config, sft_trainer
    from agentcoder.training.session import load_base
    from agentcoder.training.setup import lora_config

    cfg = cfg_for(tiny_model_dir, "model.dtype=bfloat16", "method.train.max_length=64", "method.train.batch_size=2",
                  "method.train.report_to=[]")
    base = load_base(cfg, "t")
    assert base.info["dtype"] == "bfloat16" and base.info["dtype_reason"] == "set"
    rows = [{"prompt": "What is the weather?", "completion": '[{"name": "f", "arguments": {}}]<|im_end|>'}] * 4
    trainer = sft_trainer(base, sft_config(cfg, tmp_path, base), Dataset.from_list(rows), lora_config(cfg))
    params = dict(trainer.model.named_parameters())
    lora = [p for n, p in params.items() if "lora_" in n]
    frozen = [p for n, p in params.items() if "lora_" not in n and p.dim() == 2]
    assert lora and all(p.dtype == torch.float32 and p.requires_grad for p in lora)
    assert frozen and all(p.dtype == torch.bfloat16 and not p.requires_grad for p in frozen)
    trainer.args.max_steps, trainer.args.save_strategy = 2, "no"
    trainer.train()
    assert all(torch.isfinite(p).all() for p in lora)


@pytest.mark.parametrize("native, expected", [(True, "bfloat16"), (False, "float16")])
def test_auto_on_a_gpu_takes_bf16_only_from_bf16_units(monkeypatch, native, expected):
    """A stand-in for torch.cuda: a T4/V100 reports bf16 as supported through emulation only."""
    import torch

    from agentcoder.training.setup import trainer_args

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: native or including_emulation)
    dtype, why = loader.resolve_dtype("auto", "cuda")
    assert dtype == expected and why.startswith("auto: GPU")
    assert ("emulated" in why) is not native  # run.json's model.dtype_reason says why fp16
    four_bit = compose_cfg("quant=4bit").quant
    assert loader.compute_dtype(four_bit, "cuda") == expected
    args = trainer_args(compose_cfg("method=lora", "model.dtype=auto"), Path("x"), on_gpu=True, checkpointing=False)
    assert (args["bf16"], args["fp16"]) == (native, not native)


def attention_input_dtypes(monkeypatch: Any) -> list[Any]:
    """The dtype of the hidden states entering every attention block during evaluate_run's evaluation."""
    from agentcoder.evaluation import evaluator

    seen: list[Any] = []
    real = evaluator.evaluate

    def grab(module: Any, args: tuple, kwargs: dict) -> None:
        seen.append((kwargs.get("hidden_states") if "hidden_states" in kwargs else args[0]).dtype)

    def evaluate(model: Any, *args: Any, **kwargs: Any) -> Any:
        hooks = [m.register_forward_pre_hook(grab, with_kwargs=True)
                 for name, m in model.named_modules() if name.endswith("self_attn")]
        try:
            return real(model, *args, **kwargs)
        finally:
            for hook in hooks:
                hook.remove()

    monkeypatch.setattr(evaluator, "evaluate", evaluate)
    return seen


def test_baseline_and_lora_of_one_4bit_config_decode_in_one_dtype(tiny_model_dir, bfcl_cache, monkeypatch, tmp_path):  # noqa: F811
    """peft's k-bit preparation upcasts norms and embeddings to fp32; a trained 4-bit model must still
    evaluate in model.dtype, as baseline-4bit (and a registered adapter evaluated on it) does."""
    import torch

    from tests.test_grpo import run_method
    from tests.test_lora import lora_cfg, run_lora

    quant = ("quant=4bit", "quant.bnb_4bit_compute_dtype=float32", "model.dtype=bfloat16", "eval.limit=2",
             "eval.max_new_tokens=4")
    baseline = attention_input_dtypes(monkeypatch)
    cache_dir, sha = bfcl_cache
    run_method("baseline", compose_cfg("method=baseline", "model.source=hub", f"model.hub_id={tiny_model_dir}",
                                       f"data.categories=[{','.join(SIZES)}]", f"data.embedded.sha256={sha}",
                                       *quant, cache_dir=cache_dir), tmp_path / "baseline")
    assert baseline and set(baseline) == {torch.bfloat16}
    trained = attention_input_dtypes(monkeypatch)
    run_lora(lora_cfg(tiny_model_dir, bfcl_cache, *quant, "method.train.max_steps=1", "method.train.val_limit=2"),
             tmp_path / "lora")
    assert trained and set(trained) == {torch.bfloat16}
