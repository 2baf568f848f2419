"""A tokenizer without a chat template (a base model: StarCoder2) gets the project's plain prompt format,
the same in training and evaluation, through baseline, lora and dpo; run.json says which format ran."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentcoder.data import Example, GoldCall, PromptFormat
from agentcoder.data.prompts import prompt_style, render_prompt, render_target, tool_instructions
from tests.helpers import build_tiny_tokenizer, compose_cfg, save_tiny_model
from tests.test_dpo import bfcl_cache, dpo_cfg, run_method  # noqa: F401  (module-scoped fixture)

TOOL = {"name": "get_weather", "description": "Weather of a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
EXAMPLE = Example("t_0", "test", "simple", [{"role": "user", "content": "Weather in Paris?"}], [TOOL],
                  [GoldCall("get_weather", {"city": ["Paris"]})])


def plain_tokenizer():  # noqa: ANN201
    tok = build_tiny_tokenizer()
    tok.chat_template = None
    return tok


@pytest.fixture(scope="module")
def plain_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("plain_model"), plain_tokenizer())


def test_no_chat_template_gives_the_plain_format():
    tok = plain_tokenizer()
    prompt = render_prompt(EXAMPLE, tok, "json")
    assert prompt == (
        f"<|im_start|>### System\n{tool_instructions([TOOL], 'json')}\n\n"
        "### User\nWeather in Paris?\n\n### Assistant\n"
    )
    assert prompt_style(tok) == "plain" and prompt_style(build_tiny_tokenizer()) == "chat_template"
    row = PromptFormat(tok, "json").sft_row(EXAMPLE)  # training's prompt is evaluation's
    assert row == {"prompt": prompt, "completion": render_target(EXAMPLE, "json") + "<|im_end|>"}


def test_baseline_runs_without_a_chat_template(plain_model_dir, bfcl_cache, tmp_path):  # noqa: F811
    cfg = compose_cfg("method=baseline", "model.source=hub", f"model.hub_id={plain_model_dir}",
                      *dpo_cfg_overrides(bfcl_cache), cache_dir=bfcl_cache[0])
    metrics, data = run_method("baseline", cfg, tmp_path)
    assert data["model"]["prompt_style"] == "plain" and metrics["overall"]["n"] == 2


@pytest.mark.slow  # an SFT stage, sampling and DPO: over 15 s here
def test_lora_and_dpo_run_without_a_chat_template(plain_model_dir, bfcl_cache, tmp_path):  # noqa: F811
    # method=dpo from the SFT stage: the stage is a method=lora run trained inside it (sft_stage/).
    cfg = dpo_cfg(plain_model_dir, bfcl_cache, "+sft_train.max_steps=2", "+sft_train.val_limit=2",
                  "+sft_train.evaluations=1", "method.dpo.corrupted_pairs=true", "method.dpo.max_prompts=4",
                  "method.train.val_limit=2", "eval.limit=2")
    metrics, data = run_method("dpo", cfg, tmp_path)
    assert data["stage"]["trained_here"] is True and metrics["training"]["steps"] == 2
    stage = json.loads((tmp_path / "sft_stage" / "run.json").read_text())
    assert stage["model"]["prompt_style"] == data["model"]["prompt_style"] == "plain"
    assert stage["train"]["steps"] == 2 and stage["status"] == "completed"
    pairs = [json.loads(line) for line in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    assert pairs and all("### Assistant\n" in p["prompt"] and "<|im_start|>user" not in p["prompt"] for p in pairs)


def dpo_cfg_overrides(cache: tuple[Path, str]) -> list[str]:
    from tests.test_lora import SIZES

    return [f"data.categories=[{','.join(SIZES)}]", f"data.embedded.sha256={cache[1]}", "eval.limit=2",
            "eval.max_new_tokens=8"]
