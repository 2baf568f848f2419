"""Token-budget batching and chunked generation that drops finished rows, on a tiny real model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agentcoder.evaluation import generate as gen_mod
from agentcoder.evaluation.generate import generate_batched, plan_batches


def test_plan_batches_respects_the_token_budget() -> None:
    lengths = [100, 900, 120, 880, 110, 2000, 90, 95]
    batches = plan_batches(lengths, max_new_tokens=100, max_rows=4, token_budget=2100)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert batches[0] == [5]  # longest first; alone it exceeds the budget and still runs
    for b in batches:
        width = max(lengths[i] for i in b) + 100
        assert len(b) <= 4 and (len(b) == 1 or len(b) * width <= 2100)
    assert [1, 3] in batches  # two long prompts share a narrow batch
    assert any(len(b) == 4 for b in batches)  # short prompts go in wide ones


def test_plan_batches_puts_solo_rows_last_one_each() -> None:
    batches = plan_batches([10, 20, 30, 40], max_new_tokens=8, max_rows=8, token_budget=None, solo={0, 2})
    assert batches == [[3, 1], [0], [2]]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)


def _reference(model: Any, tok: Any, prompt: str, max_new: int, stop: list[int]) -> list[int]:
    """One unpadded generate() call per prompt: what batching must reproduce."""
    import torch

    ids = torch.tensor([tok(prompt, add_special_tokens=False)["input_ids"]])
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new,
                             do_sample=False, eos_token_id=stop, pad_token_id=stop[0])
    return gen_mod._until_stop(out[0, ids.shape[1]:].tolist(), stop)[1]


def test_chunked_generation_with_dropped_rows_matches_one_call_per_prompt(tiny, monkeypatch) -> None:
    model, tok = tiny
    prompts = [f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n" for text in
               ["add two numbers", "def add(a, b):", "return a + b please", "x", "a much longer prompt " * 5]]
    # Make rows stop at different steps: the stop set holds tokens the free run emits early on.
    free = [_reference(model, tok, p, 12, [tok.eos_token_id]) for p in prompts]
    stop = [tok.eos_token_id, free[0][2], free[1][5]]
    model.generation_config.eos_token_id = stop
    try:
        expected = [_reference(model, tok, p, 12, stop) for p in prompts]
        assert len({len(e) for e in expected}) > 1  # rows really finish at different times
        monkeypatch.setattr(gen_mod, "CHUNK_TOKENS", 3)
        got = {g.index: g for g in generate_batched(model, tok, prompts, max_new_tokens=12, batch_size=8,
                                                    token_budget=None, solo=[4], progress=False)}
    finally:
        model.generation_config.eos_token_id = tok.eos_token_id
    assert sorted(got) == list(range(len(prompts)))
    for i, tokens in enumerate(expected):
        assert got[i].output_tokens == len(tokens)
        assert got[i].text == tok.decode(tokens, skip_special_tokens=True)
    assert got[4].batch_size == 1 and got[0].batch_size == 4


def test_evaluate_records_throughput_probe_latency_and_pairing(tiny) -> None:
    from agentcoder.data.example import Example, GoldCall
    from agentcoder.evaluation.evaluator import evaluate, latency_probe_ids

    model, tok = tiny
    tools = [{"name": "add", "description": "add", "parameters": {
        "type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}}]
    examples = [
        Example(f"ex{i}", "test", "simple" if i % 2 else "irrelevance",
                [{"role": "user", "content": f"add {i}"}], tools, [GoldCall("add", {"a": [i]})] if i % 2 else [])
        for i in range(6)
    ]  # fmt: skip
    result = evaluate(model, tok, examples, tool_format="json", max_new_tokens=6, latency_probe=2,
                      parallel_matching="greedy", progress=False)
    probe = latency_probe_ids(examples, 2)
    assert len(probe) == 2 and probe == latency_probe_ids(list(reversed(examples)), 2)  # a fixed choice
    rows = {r["id"]: r for r in result.rows}
    assert all(rows[i]["latency_s"] > 0 for i in probe)
    assert all(r["latency_s"] is None for i, r in rows.items() if i not in probe)
    assert all(r["ms_per_example"] > 0 for r in rows.values())
    overall = result.metrics["overall"]
    assert overall["latency_n"] == 2 and overall["latency_p95_s"] >= overall["latency_p50_s"] > 0
    assert overall["ms_per_example"] == pytest.approx(1000 * overall["wall_time_s"] / 6, rel=0.01)
    assert overall["exact_match_n"] == 6 and len(overall["exact_match_ci"]) == 2
    assert result.metrics["parallel_matching"] == "greedy"
