"""Decoding settings come from the run's config alone: a checkpoint's generation_config.json (a
repetition penalty, top-k, a sampling temperature) changes neither greedy outputs nor what is sampled."""

from __future__ import annotations

import pytest

from agentcoder.evaluation.generate import NEUTRAL_GENERATION, generate_batched, generation_settings

PROMPTS = [
    "<|im_start|>user\nweather in Paris<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>user\nadd 1 and 2<|im_end|>\n<|im_start|>assistant\n",
]
LEAKY = {"repetition_penalty": 1.3, "top_k": 5, "top_p": 0.5, "temperature": 0.3, "do_sample": True,
         "no_repeat_ngram_size": 2}


@pytest.fixture
def model_and_tokenizer(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)


def _texts(model, tok):
    return [g.text for g in generate_batched(model, tok, PROMPTS, max_new_tokens=12, progress=False)]


def test_greedy_outputs_ignore_the_checkpoints_generation_config(model_and_tokenizer):
    model, tok = model_and_tokenizer
    clean = _texts(model, tok)
    for key, value in LEAKY.items():
        setattr(model.generation_config, key, value)
    assert _texts(model, tok) == clean


def test_sampled_scores_are_the_logits_of_the_configured_distribution(model_and_tokenizer):
    import torch
    from transformers import GenerationConfig

    model, tok = model_and_tokenizer
    for key, value in LEAKY.items():
        setattr(model.generation_config, key, value)
    config = GenerationConfig(**generation_settings({"do_sample": True, "temperature": 0.7}), max_new_tokens=8,
                              output_scores=True, output_logits=True, return_dict_in_generate=True,
                              pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    out = model.generate(**tok(PROMPTS[0], return_tensors="pt"), generation_config=config)
    # The tokens were sampled from softmax(logits / 0.7): no penalty, no truncation from the checkpoint.
    for scores, logits in zip(out.scores, out.logits, strict=True):
        torch.testing.assert_close(scores, logits / 0.7)


def test_settings_are_explicit_and_greedy_by_default():
    greedy = generation_settings()
    assert greedy["do_sample"] is False and greedy["repetition_penalty"] == 1.0
    assert NEUTRAL_GENERATION.keys() <= greedy.keys()
    # Sampling-only fields are neutral when sampling, unset (ignored, and not warned about) when greedy.
    assert "top_k" not in greedy and "min_p" not in greedy
    sampled = generation_settings({"do_sample": True, "temperature": 0.5})
    assert sampled["temperature"] == 0.5 and sampled["top_k"] == 0 and sampled["min_p"] == 0.0


def test_greedy_generation_warns_nothing(model_and_tokenizer):
    """The neutral settings themselves draw no transformers warning (they drew two on every call)."""
    import logging

    model, tok = model_and_tokenizer
    seen: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: seen.append(record.getMessage())
    hf = logging.getLogger("transformers")
    hf.addHandler(handler)
    try:
        _texts(model, tok)
    finally:
        hf.removeHandler(handler)
    assert seen == []
