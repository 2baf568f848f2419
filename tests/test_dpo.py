"""method=dpo: pairs from the policy's own mistakes, the SFT policy as the reference, stage reuse, QLoRA."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agentcoder.data import Example, GoldCall, PromptFormat
from agentcoder.training.pairs import Candidate, build_pairs, choose_pair, corrupt_answer, score
from tests.helpers import compose_cfg, save_random_adapter
from tests.test_data_loading import build_wheel
from tests.test_lora import SIZES

WEATHER = {"name": "get_weather", "description": "Weather of a city.", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string"}}, "required": ["city"]}}


def example(i: str, answer: list[GoldCall]) -> Example:
    return Example(id=i, source="t", category="no_call" if not answer else "simple",
                   messages=[{"role": "user", "content": f"question {i}"}], tools=[WEATHER], answer=answer)


def call(city: str, name: str = "get_weather") -> str:
    return json.dumps([{"name": name, "arguments": {"city": city}}])


PARIS = [GoldCall("get_weather", {"city": ["Paris"], "unit": ["", "celsius"]})]
NO_CALL_TEXT = "None of the available functions can help with this request."


def test_pairs_on_a_constructed_case(tiny_tokenizer):
    fmt = PromptFormat(tiny_tokenizer, "json")
    mixed, wrong, right, none = (example("mixed", PARIS), example("wrong", PARIS), example("right", PARIS),
                                 example("none", []))
    samples = {
        # one correct; two wrong values (the most frequent kind) beat one parse failure
        "mixed": [score(mixed, t) for t in (call("Paris"), call("Rome"), "[{oops", call("Rome"))],
        # nothing correct: the gold answer is chosen
        "wrong": [score(wrong, t) for t in (call("Oslo"), call("Oslo", name="get_wether"), call("Oslo"))],
        "right": [score(right, call("Paris"))] * 3,  # nothing wrong: no pair
        "none": [score(none, t) for t in (NO_CALL_TEXT, call("Paris"))],  # a call where none is due
    }
    assert samples["mixed"][1] == Candidate(call("Rome"), False, "wrong_value")
    rows, counts = build_pairs([mixed, wrong, right, none], samples, fmt, corrupted_pairs=False, max_length=None)
    by_id = {r["id"]: r for r in rows}
    eos = tiny_tokenizer.eos_token
    assert set(by_id) == {"mixed", "wrong", "none"}
    assert by_id["mixed"]["chosen"] == call("Paris") + eos and by_id["mixed"]["chosen_from"] == "sample"
    assert by_id["mixed"]["rejected"] == call("Rome") + eos and by_id["mixed"]["reason"] == "wrong_value"
    assert by_id["wrong"]["chosen"] == fmt.target(wrong) + eos and by_id["wrong"]["chosen_from"] == "gold"
    assert by_id["wrong"]["rejected"] == call("Oslo") + eos
    assert by_id["none"]["chosen"] == NO_CALL_TEXT + eos
    assert by_id["none"]["rejected"] == call("Paris") + eos and by_id["none"]["reason"] == "called_when_none_expected"
    assert by_id["none"]["prompt"] == fmt.prompt(none)
    assert counts["by_reason"] == {"wrong_value": 2, "called_when_none_expected": 1}
    assert counts["n_prompts_without_pair"] == 1 and counts["no_call_pairs"] == 1
    assert counts["chosen_from"] == {"sample": 2, "gold": 1}
    assert counts["sample_exact_match"] == pytest.approx(5 / 12, abs=1e-4)

    # With corrupted pairs, the all-correct prompt gets gold against a corrupted gold.
    rows, counts = build_pairs([right], samples, fmt, corrupted_pairs=True, max_length=None)
    assert len(rows) == 1 and rows[0]["corrupted"] and rows[0]["reason"] == "missing_required"
    assert rows[0]["chosen"] == call("Paris") + eos and json.loads(rows[0]["rejected"][: -len(eos)]) == [
        {"name": "get_weather", "arguments": {}}]
    # A pair longer than max_length is left out rather than truncated.
    _, counts = build_pairs([mixed], samples, fmt, corrupted_pairs=False, max_length=10)
    assert counts["n_pairs"] == 0 and counts["n_pairs_too_long"] == 1


def test_corrupted_answers_are_wrong_in_every_case():
    cases = [
        example("none", []),
        example("one", PARIS),
        example("two", [GoldCall("get_weather", {"unit": ["", "celsius"]})] * 2),  # nothing to drop: one call less
        example("bare", [GoldCall("get_weather", {"unit": ["", "celsius"]})]),  # nor a call: a misspelt name
    ]
    kinds = [score(ex, corrupt_answer(ex, fmt)).reason for ex in cases for fmt in ("json", "qwen")]
    assert kinds == ["called_when_none_expected"] * 2 + ["missing_required"] * 2 + ["wrong_count"] * 2 + [
        "wrong_name"] * 2


def test_choose_pair_rules():
    ok, bad = Candidate("A", True), Candidate("B", False, "no_call")
    assert choose_pair("G", [ok, ok]) is None
    assert choose_pair("G", [ok], corrupted=Candidate("C", False, "wrong_name"))["rejected"] == "C"
    # Ties between failure kinds go to the first sampled one.
    pair = choose_pair("G", [Candidate("X", False, "parse_failure"), bad])
    assert pair == {"chosen": "G", "rejected": "X", "reason": "parse_failure", "chosen_from": "gold",
                    "corrupted": False}


# --------------------------------------------------------------------------- with a tiny model


@pytest.fixture(scope="module")
def bfcl_cache(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    from agentcoder.assets import sha256_file

    cache = tmp_path_factory.mktemp("cache")
    return cache, sha256_file(build_wheel(cache, SIZES))


def dpo_cfg(model_dir: Path, cache: tuple[Path, str], *overrides: str) -> Any:
    """method=dpo on the tiny model; DPO's own trainer settings kept small.  The SFT stage a dpo run
    looks for is trained with lora's default settings, so only eval/data settings are shared."""
    cache_dir, sha = cache
    return compose_cfg(
        "method=dpo", "model.source=hub", f"model.hub_id={model_dir}",
        f"data.categories=[{','.join(SIZES)}]", f"data.embedded.sha256={sha}", "data_fraction=0.25",
        "eval.limit=4", "eval.max_new_tokens=8", "eval.batch_size=8",
        "method.dpo.num_samples=2", "method.train.max_steps=2", "method.train.batch_size=2",
        "method.train.logging_steps=1", "method.train.val_limit=4", "method.train.report_to=[]",
        *overrides, cache_dir=cache_dir,
    )


def run_method(name: str, cfg: Any, run_dir: Path) -> tuple[dict, dict]:
    from agentcoder.methods import load_method
    from agentcoder.tracking.records import RunRecord

    with RunRecord.start(run_dir, cfg, {}) as record:
        result = load_method(name).run(cfg, record)
        record.complete(result.to_metrics())
    return result.to_metrics(), record.data


@pytest.fixture(scope="module")
def sft_adapter_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA whose B matrices are non-zero, so that the SFT policy differs from the base."""
    cfg = compose_cfg("method=dpo", "model.source=hub", f"model.hub_id={tiny_model_dir}")
    return save_random_adapter(cfg, tmp_path_factory.mktemp("sft") / "adapter", std=0.3)


def completion_logps(model: Any, batch: dict) -> Any:
    """Summed log-probs of the completion tokens, computed directly from the logits."""
    import torch

    model.eval()
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
    logps = torch.log_softmax(logits[:, :-1], -1).gather(-1, batch["input_ids"][:, 1:, None])[..., 0]
    return (logps * batch["completion_mask"][:, 1:]).sum(-1)


def test_reference_is_the_sft_policy_and_stays_it(tiny_model_dir, sft_adapter_dir, bfcl_cache, tmp_path):
    import torch
    from datasets import Dataset
    from peft import PeftModel

    from agentcoder.data import load_splits
    from agentcoder.methods.dpo import dpo_config, dpo_trainer
    from agentcoder.models import load_model
    from agentcoder.training.adapters import load_policy

    cfg = dpo_cfg(tiny_model_dir, bfcl_cache, "method.train.lr=5e-3", "method.train.max_steps=3",
                  "method.train.max_length=600")
    base, peft_config = load_policy(cfg, None, "t", adapter=sft_adapter_dir, mode="continue")
    assert peft_config is None
    fmt = PromptFormat(base.tokenizer, "json")
    train = load_splits(cfg).train[:4]
    rows = [fmt.preference_row(ex, fmt.target(ex), corrupt_answer(ex, "json")) for ex in train]
    trainer = dpo_trainer(base, dpo_config(cfg, tmp_path, base), Dataset.from_list(rows), None)
    model = trainer.model
    assert set(model.peft_config) == {"default", "ref"}
    assert not any(p.requires_grad for n, p in model.named_parameters() if ".ref." in n)

    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(rows))])
    sft = PeftModel.from_pretrained(load_model(cfg).model, str(sft_adapter_dir))
    expected = completion_logps(sft, batch)
    with sft.disable_adapter():
        bare = completion_logps(sft, batch)
    assert not torch.allclose(expected, bare, atol=1e-2)  # the SFT adapter matters for these sequences

    def ref_logps() -> Any:
        chosen, rejected = trainer.compute_ref_log_probs(model, batch)
        return torch.cat([chosen, rejected])

    assert torch.allclose(ref_logps(), expected, atol=1e-4)  # step 0: reference == SFT policy
    assert torch.allclose(completion_logps(model, batch), expected, atol=1e-4)  # and so is the policy
    trainer.train()
    assert trainer.state.global_step == 3
    assert torch.allclose(ref_logps(), expected, atol=1e-4)  # the reference stays frozen...
    assert not torch.allclose(completion_logps(model, batch), expected, atol=1e-3)  # ...the policy moved
    margins = [e["rewards/margins"] for e in trainer.state.log_history if "rewards/margins" in e]
    assert len(margins) == 3 and margins[0] == pytest.approx(0.0, abs=1e-4)


@pytest.mark.slow  # real runs through the launcher: over 15 s here
def test_dpo_reuses_the_matching_lora_run_only(tiny_model_dir, bfcl_cache, tmp_path):
    from agentcoder.methods.stages import find_sft
    from tests.test_launcher import launch

    cfg = dpo_cfg(tiny_model_dir, bfcl_cache)
    # A method=lora job as a user starts it (the launcher registers its adapter), with lora's default
    # training settings: those are what a staged method's SFT stage is keyed by.
    proc = launch("method=lora", "model.source=hub", f"model.hub_id={tiny_model_dir}",
                  f"data.categories=[{','.join(SIZES)}]", f"data.embedded.sha256={bfcl_cache[1]}",
                  "data_fraction=0.25", "eval.limit=4", "eval.max_new_tokens=8", "eval.batch_size=8",
                  "model.dtype=float32", f"cache_dir={bfcl_cache[0]}", f"hydra.run.dir={tmp_path / 'lora'}",
                  timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lora_adapter = (tmp_path / "lora" / "adapter").resolve()
    # Another fraction or seed does not find it.
    assert find_sft(dpo_cfg(tiny_model_dir, bfcl_cache, "data_fraction=0.5")) is None
    assert find_sft(dpo_cfg(tiny_model_dir, bfcl_cache, "seed=7")) is None

    metrics, data = run_method("dpo", cfg, tmp_path / "dpo")
    assert data["stage"]["trained_here"] is False and Path(data["stage"]["sft_adapter"]) == lora_adapter
    assert data["train"]["start_adapter"] == str(lora_adapter) and data["train"]["adapter_mode"] == "continue"
    assert not (tmp_path / "dpo" / "sft_stage").exists()
    assert metrics["method"] == "dpo" and metrics["training"]["steps"] == 2
    pairs = [json.loads(line) for line in (tmp_path / "dpo" / "pairs.jsonl").read_text().splitlines()]
    counts = data["pairs"]
    assert counts == metrics["details"]["pairs"] and counts["n_pairs"] == len(pairs) > 0
    assert sum(counts["by_reason"].values()) == len(pairs)
    assert counts["n_prompts_sampled"] == data["data"]["sizes"]["train"]
    assert counts["sample_time_s"] > 0  # compute spent on the pairs, counted at equal compute
    last = metrics["details"]["dpo"]["last"]
    assert last["step"] == 2 and last["loss"] > 0 and 0 <= last["rewards/accuracies"] <= 1
    assert (tmp_path / "dpo" / "dpo_curves.png").stat().st_size > 1000
    assert len((tmp_path / "dpo" / "predictions.jsonl").read_text().splitlines()) == 4
    # The adapter is the policy alone (TRL's frozen "ref" copy is not saved with it).
    assert not (tmp_path / "dpo" / "adapter" / "ref").exists()


def test_qlora_4bit_dpo_run_completes(tiny_model_dir, bfcl_cache, tmp_path):
    from agentcoder.methods.stages import find_sft

    cfg = dpo_cfg(tiny_model_dir, bfcl_cache, "quant=4bit", "quant.bnb_4bit_compute_dtype=float32",
                  "data_fraction=0.1", "eval.limit=2", "method.train.val_limit=2")
    metrics, data = run_method("dpo", cfg, tmp_path)
    # No 4-bit lora run exists: the stage is trained inside the run and registered for the next one.
    assert data["model"]["quant"] == "4bit" and data["stage"]["trained_here"] is True
    assert data["stage"]["sft_adapter"].startswith(str(tmp_path / "sft_stage"))
    assert find_sft(cfg)["adapter"] == data["stage"]["sft_adapter"]
    assert metrics["training"]["steps"] == 2 and data["pairs"]["n_pairs"] > 0
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()


def test_dpo_memory_estimate_counts_chosen_and_rejected_rows(tiny_model_dir, monkeypatch):
    """TRL's DPO collator puts every pair's chosen and rejected rows through the model together."""
    from transformers import AutoModelForCausalLM

    from agentcoder.training import setup

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    shape = ("method.train.batch_size=4", "method.train.max_length=512")
    one_row = setup.activation_bytes(model.config, 4 * 512, 512, 4, False)
    monkeypatch.setattr(setup, "memory_budget_bytes", lambda model, device: int(1.5 * one_row))
    on, why = setup.gradient_checkpointing(compose_cfg("method=lora", *shape), model, "cpu")
    assert on is False and why["reason"] == "activations fit"
    on, why = setup.gradient_checkpointing(compose_cfg("method=dpo", *shape), model, "cpu")
    assert on is True and why["reason"] == "activations exceed the memory budget"
    # batch_size=auto holds a micro-batch's tokens at tokens_per_batch: pairs count two rows.
    auto = ("method.train.tokens_per_batch=2048", "method.train.max_length=512")
    assert setup.fit_lengths(compose_cfg("method=lora", *auto), [])[1]["batch_size"] == 4
    assert setup.fit_lengths(compose_cfg("method=dpo", *auto), [])[1]["batch_size"] == 2
