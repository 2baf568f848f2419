"""method.grpo.use_vllm: refused on a bitsandbytes base before any model loads, and vLLM's context sized
from the run's lengths (vLLM is not installed here; only what reaches TRL's GRPOConfig is checked)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from agentcoder.config import ConfigError
from tests.helpers import compose_cfg
from tests.test_launcher import ML_STACK, launch

REFUSALS = {
    "8bit": "method.grpo.use_vllm=true is not allowed with quant=8bit: vLLM cannot load 8-bit bitsandbytes weights",
    "4bit": "method.grpo.use_vllm=true is not allowed with quant=4bit: vLLM with a 4-bit bitsandbytes base is not "
            "shown to work here",
}


@pytest.mark.parametrize("quant", sorted(REFUSALS))
def test_vllm_on_a_quantized_base_is_refused_in_one_line(quant):
    with pytest.raises(ConfigError) as err:
        compose_cfg("method=grpo", "method.grpo.use_vllm=true", f"quant={quant}")
    lines = [ln for ln in str(err.value).splitlines() if "quant=" in ln]
    assert len(lines) == 1 and lines[0].startswith(REFUSALS[quant])


def test_the_refusal_comes_before_any_model_loads(tmp_path):
    proc = launch("method=grpo", "method.grpo.use_vllm=true", "quant=8bit", f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode != 0
    assert REFUSALS["8bit"] in proc.stderr
    assert not (proc.imported & ML_STACK), proc.imported & ML_STACK
    assert not (tmp_path / "run").exists()


def test_vllm_context_is_the_longest_prompt_plus_a_completion(tmp_path):
    from agentcoder.methods.grpo import grpo_config

    cfg = compose_cfg("method=grpo", "method.grpo.max_completion_length=96", "method.train.report_to=[]")
    base = SimpleNamespace(on_gpu=False, checkpointing=False)
    assert grpo_config(cfg, tmp_path, base, longest_prompt=700).vllm_max_model_length is None  # no vLLM, no say
    cfg.method.grpo.use_vllm = True
    # Before: unset, so vLLM took the model's own context (32,768 for Qwen2.5-Coder).
    assert grpo_config(cfg, tmp_path, base, longest_prompt=700).vllm_max_model_length == 796
