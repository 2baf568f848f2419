"""Training and evaluation tokenize a prompt into the same ids, also where the chat template writes BOS
and the tokenizer would add one of its own (DeepSeek-Coder, Llama): TRL tokenizes string prompts with
the tokenizer's special tokens, evaluation without them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agentcoder.data import Example, GoldCall, PromptFormat
from tests.helpers import CHATML_TEMPLATE, build_tiny_tokenizer, compose_cfg, save_tiny_model

TOOL = {"name": "get_weather", "description": "Weather of a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
EXAMPLE = Example("t_0", "test", "simple", [{"role": "user", "content": "Weather in Paris?"}], [TOOL],
                  [GoldCall("get_weather", {"city": ["Paris"]})])


@pytest.fixture(scope="module")
def bos_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with a tokenizer whose template starts with {{ bos_token }} and whose add_bos_token is true."""
    tok = build_tiny_tokenizer()
    tok.bos_token = "<|endoftext|>"
    tok.chat_template = "{{ bos_token }}" + CHATML_TEMPLATE
    tok.add_bos_token = True
    assert tok("x")["input_ids"][0] == tok.bos_token_id  # the tokenizer adds BOS itself
    return save_tiny_model(tmp_path_factory.mktemp("bos_model"), tok)


def evaluation_ids(model: Any, tokenizer: Any, prompt: str) -> list[int]:
    """The ids evaluation's generate_batched feeds the model for PROMPT (its first forward's input)."""
    from agentcoder.evaluation.generate import generate_batched

    seen: list[list[int]] = []

    def grab(module: Any, args: Any, kwargs: dict) -> None:
        if not seen:
            seen.append(kwargs["input_ids"][0].tolist())

    handle = model.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        list(generate_batched(model, tokenizer, [prompt], max_new_tokens=1, progress=False))
    finally:
        handle.remove()
    return seen[0]


def test_trainers_see_the_prompt_ids_evaluation_generates_from(bos_model_dir, tmp_path):
    from datasets import Dataset

    from agentcoder.evaluation.reward import make_reward
    from agentcoder.methods.dpo import dpo_config, dpo_trainer
    from agentcoder.methods.grpo import grpo_config, grpo_trainer
    from agentcoder.methods.lora import sft_config, sft_trainer
    from agentcoder.training.session import load_base
    from agentcoder.training.setup import lora_config

    cfg = compose_cfg("method=lora", "model.source=hub", f"model.hub_id={bos_model_dir}", "method.train.max_length=600",
                      "method.train.batch_size=2", "method.train.report_to=[]")
    base = load_base(cfg, "test")
    base.layout = "none"
    fmt = PromptFormat(base.tokenizer, "json")
    prompt = fmt.prompt(EXAMPLE)
    assert prompt.startswith("<|endoftext|><|im_start|>system")  # the template's BOS, once
    expected = evaluation_ids(base.model, base.tokenizer, prompt)
    assert expected.count(base.tokenizer.bos_token_id) == 1

    sft = sft_trainer(base, sft_config(cfg, tmp_path / "sft", base), Dataset.from_list([fmt.sft_row(EXAMPLE)]),
                      lora_config(cfg))
    row = sft.train_dataset[0]  # the completion carries the labels, the prompt -100
    assert row["input_ids"][: next(i for i, label in enumerate(row["labels"]) if label != -100)] == expected

    target = fmt.target(EXAMPLE)
    pairs = Dataset.from_list([fmt.preference_row(EXAMPLE, target, "[]")])
    dpo = dpo_trainer(base, dpo_config(compose_cfg("method=dpo", "method.train.max_length=600",
                                                   "method.train.report_to=[]"), tmp_path / "dpo", base),
                      pairs, None)
    assert dpo.train_dataset[0]["prompt_ids"] == expected

    grpo_cfg = compose_cfg("method=grpo", "method.train.batch_size=2", "method.grpo.num_generations=2",
                           "method.train.report_to=[]")
    rows = Dataset.from_list([fmt.rl_row(EXAMPLE)])
    grpo = grpo_trainer(base, grpo_config(grpo_cfg, tmp_path / "grpo", base), rows, make_reward(None), None)
    assert grpo._tokenize_prompts([prompt])[0][0] == expected
