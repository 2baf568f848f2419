"""method=lora on a tiny Llama and a tiny fake BFCL wheel: loss, labels, packing masks, QLoRA, resume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from agentcoder.assets import sha256_file
from tests.helpers import compose_cfg
from tests.test_data_loading import build_wheel

SIZES = {"simple_python": 24, "live_parallel": 16, "irrelevance": 10}


@pytest.fixture(scope="module")
def bfcl_cache(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    cache = tmp_path_factory.mktemp("cache")
    return cache, sha256_file(build_wheel(cache, SIZES))


def lora_cfg(model_dir: Path, bfcl_cache: tuple[Path, str], *overrides: str) -> Any:
    cache, sha = bfcl_cache
    return compose_cfg(
        "method=lora", "model.source=hub", f"model.hub_id={model_dir}",
        f"data.categories=[{','.join(SIZES)}]", f"data.embedded.sha256={sha}",
        "eval.limit=4", "eval.max_new_tokens=8", "eval.batch_size=4",
        "method.train.val_limit=4", "method.train.max_length=600", "method.train.batch_size=1",
        "method.train.report_to=[]", "method.train.warmup_ratio=0",
        *overrides, cache_dir=cache,
    )


def run_lora(cfg: Any, run_dir: Path, **kwargs: Any) -> tuple[dict, dict]:
    from agentcoder.methods import lora
    from agentcoder.tracking.records import RunRecord

    record = RunRecord.start(run_dir, cfg, {})
    result = lora.fit_adapter(cfg, record, **kwargs)
    return result.to_metrics(), record.data


def test_training_reduces_loss_and_writes_run_files(tiny_model_dir, bfcl_cache, tmp_path):
    cfg = lora_cfg(
        tiny_model_dir, bfcl_cache, "method.train.max_steps=10", "method.train.lr=1e-2",
        "method.train.logging_steps=1", "method.train.eval_steps=5", "method.train.save_steps=5",
        "method.train.scheduler=constant", "method.train.report_to=[tensorboard]",
    )
    metrics, data = run_lora(cfg, tmp_path)
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    losses = [e["loss"] for e in log if "loss" in e]
    # A loss at every logging step, the evaluation steps included (trainer.log inside a step used to drop it).
    assert [e["step"] for e in log if "loss" in e] == list(range(1, 11))
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.4, losses
    assert [e["step"] for e in log if "val_exact_match" in e] == [5, 10]
    assert all("learning_rate" in e for e in log if "loss" in e)

    t = metrics["training"]
    assert t["steps"] == 10 and t["resumed"] is False
    assert data["train"]["trainable_dtype"] == "float32"  # peft's adapter dtype on an unquantized fp32 base
    assert t["train_tokens_per_s"] > 0 and t["peak_memory_bytes"] > 0
    assert t["best_step"] in (5, 10) and 0.0 <= t["best_val_exact_match"] <= 1.0
    assert json.loads((tmp_path / "best.json").read_text())["step"] == t["best_step"]
    assert len((tmp_path / "predictions.jsonl").read_text().splitlines()) == 4
    assert (tmp_path / "loss_curve.png").stat().st_size > 1000
    assert any((tmp_path / "tensorboard").iterdir())
    # The test figures join the training curves in the same tensorboard run (what run_task sends).
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from agentcoder.tracking.trackers import report_final

    assert report_final(["tensorboard", "codecarbon"], tmp_path, metrics, step=10) == {
        "tensorboard": str(tmp_path / "tensorboard"), "codecarbon": "training curves only"}
    events = EventAccumulator(str(tmp_path / "tensorboard")).Reload()
    assert "train/loss" in events.Tags()["scalars"]
    (em,) = events.Scalars("test/exact_match")
    assert em.step == 10 and em.value == pytest.approx(metrics["overall"]["exact_match"])
    checkpoints = sorted(p.name for p in (tmp_path / "checkpoints").glob("checkpoint-*"))
    assert checkpoints == ["checkpoint-10", "checkpoint-5"]
    assert data["train"]["trainable_params"] > 0

    # The saved adapter is what method=baseline model.adapter=<dir> loads.
    from agentcoder.models import load_model

    base_cfg = compose_cfg(
        "method=baseline", "model.source=hub", f"model.hub_id={tiny_model_dir}",
        f"model.adapter={tmp_path / 'adapter'}", cache_dir=bfcl_cache[0],
    )
    loaded = load_model(base_cfg)
    assert loaded.info["label"].endswith("+adapter")
    assert any("lora_A" in n for n, _ in loaded.model.named_parameters())


@pytest.mark.parametrize("layout", ["rows", "flat"])
def test_only_completion_tokens_carry_labels(tiny_model_dir, bfcl_cache, tmp_path, layout):
    from agentcoder.data import PromptFormat, load_splits
    from agentcoder.data.rows import sft_dataset
    from agentcoder.methods.lora import sft_config, sft_trainer
    from agentcoder.training.session import load_base
    from agentcoder.training.setup import lora_config

    cfg = lora_cfg(tiny_model_dir, bfcl_cache, "method.train.batch_size=2", "method.train.max_length=700",
                   f"method.train.packing={layout}")
    base = load_base(cfg, "test")
    tok = base.tokenizer
    fmt = PromptFormat(tok, "json")
    examples = load_splits(cfg).train[:6]
    trainer = sft_trainer(base, sft_config(cfg, tmp_path, base), sft_dataset(examples, fmt), lora_config(cfg))
    ds = trainer.train_dataset
    assert len(ds) > 1  # several packed rows, so that "rows" and "flat" differ
    batch = trainer.data_collator([ds[i] for i in range(len(ds))])
    assert "attention_mask" not in batch  # packed: the model masks by position_ids
    if layout == "flat":
        assert batch["input_ids"].shape[0] == 1
    else:
        assert batch["input_ids"].shape[0] == len(ds) and batch["input_ids"].shape[1] <= 700
    labels, ids, pos = batch["labels"].flatten(), batch["input_ids"].flatten(), batch["position_ids"].flatten()
    lengths = [sum(ds[i]["seq_lengths"]) for i in range(len(ds))]
    n_pad = batch["input_ids"].numel() - sum(lengths)
    assert int((pos == 0).sum()) == len(examples) + n_pad  # every example present, none split
    assert bool((labels[pos == 0] == -100).all())  # no example learns from the one before it
    # Runs of labelled positions: each is exactly one example's completion (answer + EOS).
    runs, current = [], []
    for i in range(len(labels)):
        if labels[i] != -100:
            assert labels[i] == ids[i]
            current.append(int(ids[i]))
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    completions = sorted(fmt.sft_row(ex)["completion"] for ex in examples)
    assert sorted(tok.decode(r) for r in runs) == completions


def sdpa_llama() -> Any:
    """A 2-layer Llama with sdpa attention, seeded, in eval mode."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=100, attn_implementation="sdpa",
    )
    return LlamaForCausalLM(config).eval()


def test_packed_rows_do_not_attend_across_examples():
    import torch

    from agentcoder.training.packing import PackedRowsCollator

    model = sdpa_llama()
    docs = [torch.randint(1, 100, (n,)).tolist() for n in (7, 5, 4, 9)]
    rows = [{"input_ids": docs[0] + docs[1], "labels": docs[0] + docs[1], "seq_lengths": [7, 5]},
            {"input_ids": docs[2], "labels": docs[2], "seq_lengths": [4]},
            {"input_ids": docs[3], "labels": docs[3], "seq_lengths": [9]}]
    batch = PackedRowsCollator(pad_token_id=0, return_position_ids=True)(rows)
    assert batch["input_ids"].shape == (3, 12)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
        alone = [model(input_ids=torch.tensor([d])).logits[0] for d in docs]
    assert torch.allclose(logits[0, :7], alone[0], atol=1e-5)
    assert torch.allclose(logits[0, 7:], alone[1], atol=1e-5)
    assert torch.allclose(logits[1, :4], alone[2], atol=1e-5)
    assert torch.allclose(logits[2, :9], alone[3], atol=1e-5)
    assert batch["labels"][1, 4:].eq(-100).all() and batch["labels"][0, 7] == -100


def test_packed_sequences_do_not_attend_across_boundaries():
    import torch

    model = sdpa_llama()
    a, b = torch.randint(0, 100, (1, 7)), torch.randint(0, 100, (1, 5))
    with torch.no_grad():
        alone = torch.cat([model(input_ids=a).logits, model(input_ids=b).logits], dim=1)
        packed_ids = torch.cat([a, b], dim=1)
        position_ids = torch.cat([torch.arange(7), torch.arange(5)])[None]
        # As SFTTrainer.compute_loss calls it: use_cache=False.  With a cache object, transformers
        # skips the packed-sequence detection and the rows DO attend across the boundary.
        packed = model(input_ids=packed_ids, position_ids=position_ids, use_cache=False).logits
        leaky = model(input_ids=packed_ids, position_ids=position_ids, use_cache=True).logits
    assert torch.allclose(packed, alone, atol=1e-5)
    assert not torch.allclose(leaky[:, 7:], alone[:, 7:], atol=1e-3)


def test_qlora_4bit_runs_on_cpu(tiny_model_dir, bfcl_cache, tmp_path):
    cfg = lora_cfg(
        tiny_model_dir, bfcl_cache, "quant=4bit", "quant.bnb_4bit_compute_dtype=float32",
        "method.train.max_steps=2", "method.train.eval_steps=2", "method.train.logging_steps=1",
        "eval.limit=2", "method.train.val_limit=2",
    )
    metrics, data = run_lora(cfg, tmp_path)
    assert metrics["training"]["steps"] == 2
    assert data["model"]["quant"] == "4bit"
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    # TRL holds a quantized base's LoRA weights in bf16 (peft's fp32 is cast down), and the record says so.
    assert data["train"]["trainable_dtype"] == "bfloat16"


class Killed(RuntimeError):
    pass


def test_interrupted_run_resumes_from_its_last_checkpoint(tiny_model_dir, bfcl_cache, tmp_path):
    from transformers import TrainerCallback

    class KillAfterFirstCheckpoint(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):  # noqa: ANN001
            raise Killed(f"killed after checkpoint-{state.global_step}")

    steps = ("method.train.max_steps=4", "method.train.save_steps=2", "method.train.eval_steps=2")
    cfg = lora_cfg(tiny_model_dir, bfcl_cache, *steps)
    with pytest.raises(Killed):
        run_lora(cfg, tmp_path / "run", extra_callbacks=(KillAfterFirstCheckpoint(),))
    assert (tmp_path / "run" / "checkpoints" / "checkpoint-2").is_dir()

    earlier = json.loads((tmp_path / "run" / "checkpoints" / "checkpoint-2" / "train_time.json").read_text())
    resumed, data = run_lora(cfg, tmp_path / "run")
    assert data["train"]["resumed_from"].endswith("checkpoint-2")
    assert resumed["training"]["resumed"] is True
    # The record spans the attempts: the killed one's training time is counted, the log marks the resume.
    assert resumed["training"]["train_time_s"] >= earlier["train_time_s"] > 0
    assert data["attempt"] == 2 and data["attempts"][0]["status"] == "running"
    events = [e for e in map(json.loads, (tmp_path / "run" / "train_log.jsonl").read_text().splitlines())
              if "event" in e]
    assert [(e["event"], e["step"]) for e in events] == [("train_begin", 0), ("resume", 2)]

    fresh, _ = run_lora(cfg, tmp_path / "fresh")
    assert resumed["training"]["steps"] == fresh["training"]["steps"] == 4
    assert fresh["training"]["resumed"] is False
    # Totals span the attempts: the resumed run saw as many tokens as the uninterrupted one.
    assert resumed["training"]["train_tokens"] == fresh["training"]["train_tokens"] > 0


def test_auto_settings_pick_packing_layout_and_checkpointing(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from agentcoder.training.setup import gradient_checkpointing, packing_layout

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    cfg = compose_cfg("method=lora", "model.source=hub", f"model.hub_id={tiny_model_dir}")
    assert packing_layout(cfg, model) == "rows"  # sdpa: a flat row would cost attention over the batch
    model.config._attn_implementation = "flash_attention_2"
    assert packing_layout(cfg, model) == "flat"  # varlen kernel: flat is free of cross-example work
    assert packing_layout(compose_cfg("method=lora", "method.train.packing=none"), model) == "none"

    on, why = gradient_checkpointing(cfg, model, "cpu")
    assert on is False and why["reason"] == "activations fit"
    on, why = gradient_checkpointing(compose_cfg("method=lora", "quant=4bit"), model, "cpu")
    assert on is True and "QLoRA" in why["reason"]
    # A micro-batch whose activations cannot fit in this machine's memory turns it on.
    huge = compose_cfg("method=lora", "method.train.batch_size=100000000")
    on, why = gradient_checkpointing(huge, model, "cpu")
    assert on is True and why["activation_estimate_gb"] > why["memory_budget_gb"]
    on, why = gradient_checkpointing(compose_cfg("method=lora", "method.train.gradient_checkpointing=false",
                                                 "method.train.batch_size=100000000"), model, "cpu")
    assert on is False and why["reason"] == "set"


def test_schedule_fits_a_short_run(tiny_model_dir, bfcl_cache, tmp_path):
    """A 7-step run reaches its peak learning rate and is evaluated, without any per-run tuning."""
    cfg = lora_cfg(tiny_model_dir, bfcl_cache, "method.train.max_steps=7", "method.train.logging_steps=1",
                   "method.train.warmup_ratio=0.3", "method.train.lr=1e-3", "method.train.scheduler=linear",
                   "method.train.evaluations=2")
    metrics, data = run_lora(cfg, tmp_path)
    schedule = data["train"]["schedule"]
    assert schedule == {"total_steps": 7, "warmup_steps": 3, "eval_steps": 4, "save_steps": 4}
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    lrs = {e["step"]: e["learning_rate"] for e in log if "learning_rate" in e}
    assert max(lrs.values()) == pytest.approx(1e-3)  # the peak is reached...
    assert lrs[7] < lrs[3]  # ...and decays after the warmup
    assert [e["step"] for e in log if "val_exact_match" in e] == [4, 7]
    assert (tmp_path / "checkpoints" / "checkpoint-4").is_dir()
    assert metrics["training"]["warmup_steps"] == 3


def test_auto_lengths_keep_all_but_max_drop_and_hold_the_token_budget():
    from agentcoder.training.setup import fit_lengths

    lengths = [100] * 90 + [700] * 8 + [3000] * 2  # 2% very long
    cfg, fitted = fit_lengths(compose_cfg("method=lora", "method.train.tokens_per_batch=8192"), lengths)
    assert fitted["max_length"] == 768 and cfg.method.train.max_length == 768  # 98% kept, a multiple of 256
    assert cfg.method.train.batch_size == 8192 // 768
    _, fitted = fit_lengths(compose_cfg("method=lora", "method.train.tokens_per_batch=8192",
                                        "method.train.max_drop=0"), lengths)
    assert fitted["max_length"] == 3072 and fitted["batch_size"] == 2  # long rows, small batches
    short_context = compose_cfg(
        "method=lora", "method.train.max_drop=0", "model.architecture.max_position_embeddings=2048"
    )
    _, fitted = fit_lengths(short_context, lengths)
    assert fitted["max_length"] == 2048  # never beyond the model's context
    explicit = compose_cfg("method=lora", "method.train.max_length=512", "method.train.batch_size=3")
    _, fitted = fit_lengths(explicit, lengths)
    assert (fitted["max_length"], fitted["batch_size"]) == (512, 3)  # explicit values win


def test_too_long_examples_are_counted_per_category(tiny_model_dir, bfcl_cache):
    from agentcoder.data import PromptFormat, load_splits
    from agentcoder.data.rows import sft_rows, within_length
    from agentcoder.models import load_tokenizer

    cfg = lora_cfg(tiny_model_dir, bfcl_cache)
    train = load_splits(cfg).train
    rows, lengths = sft_rows(train, PromptFormat(load_tokenizer(cfg), "json"))
    cut = sorted(lengths)[len(lengths) // 2]
    ds, dropped = within_length(train, rows, lengths, cut)
    assert len(ds) + sum(dropped.values()) == len(train) and sum(dropped.values()) == sum(n > cut for n in lengths)
    assert set(dropped) <= {ex.category for ex in train}


def test_tokens_per_batch_auto_is_smaller_on_cpu(monkeypatch):
    import torch

    from agentcoder.training.setup import CPU_TOKENS_PER_BATCH, GPU_TOKENS_PER_BATCH, fit_lengths

    lengths = [1000] * 10  # max_length auto: 1024
    for cuda, tokens in ((False, CPU_TOKENS_PER_BATCH), (True, GPU_TOKENS_PER_BATCH)):
        monkeypatch.setattr(torch.cuda, "is_available", lambda cuda=cuda: cuda)
        _, fitted = fit_lengths(compose_cfg("method=lora"), lengths)
        assert fitted["batch_size"] == tokens // 1024


def test_a_lora_job_evaluates_the_registered_adapter_of_its_settings(tiny_model_dir, tmp_path):
    """A staged job (or an earlier lora job) trained and registered the adapter: a method=lora job of
    the same settings evaluates it instead of training again, and reports the training it had;
    resume=false trains anyway."""
    from agentcoder.files import METRICS_FILE
    from agentcoder.methods import lora
    from agentcoder.methods.registry import register_sft
    from agentcoder.tracking.records import RunRecord
    from tests.helpers import save_random_adapter

    cache = tmp_path / "cache"
    cache.mkdir()
    cfg = lora_cfg(tiny_model_dir, (cache, sha256_file(build_wheel(cache, SIZES))), "method.train.max_steps=2")
    trainer_dir = tmp_path / "dpo_run" / "sft_stage"
    adapter = save_random_adapter(cfg, trainer_dir / "adapter", std=0.1)
    (trainer_dir / METRICS_FILE).write_text(json.dumps({"training": {"steps": 7, "train_time_s": 1.5}}))
    (trainer_dir / "train_log.jsonl").write_text('{"step": 1, "loss": 2.0}\n')
    register_sft(cfg, adapter, trainer_dir)

    run_dir = tmp_path / "lora_job"
    result = lora.run(cfg, RunRecord.start(run_dir, cfg, {}))
    assert result.training == {"steps": 7, "train_time_s": 1.5}
    assert result.details["stage"]["trained_here"] is False and result.artifacts["adapter"] == str(adapter.resolve())
    assert not (run_dir / "checkpoints").exists() and (run_dir / "train_log.jsonl").is_file()
    assert len((run_dir / "predictions.jsonl").read_text().splitlines()) == result.overall["n"]

    fresh = tmp_path / "lora_again"
    again = lora.run(OmegaConf.merge(cfg, {"resume": False}), RunRecord.start(fresh, cfg, {}))
    assert again.training["steps"] == 2 and (fresh / "checkpoints").is_dir()


def test_a_lora_run_re_run_into_its_own_dir_evaluates_its_own_adapter(tiny_model_dir, tmp_path):
    """`hydra.run.dir=<a completed lora run> eval.limit=3`: the registry names the run's own adapter; the
    job evaluates it and completes, its train log and curve left where they are."""
    from agentcoder.files import METRICS_FILE
    from agentcoder.methods import lora
    from agentcoder.methods.registry import register_sft
    from agentcoder.tracking.records import RunRecord
    from tests.helpers import save_random_adapter

    cache = tmp_path / "cache"
    cache.mkdir()
    cfg = lora_cfg(tiny_model_dir, (cache, sha256_file(build_wheel(cache, SIZES))), "method.train.max_steps=2")
    run_dir = tmp_path / "lora_run"
    adapter = save_random_adapter(cfg, run_dir / "adapter", std=0.1)
    (run_dir / METRICS_FILE).write_text(json.dumps({"training": {"steps": 2, "train_time_s": 1.5}}))
    (run_dir / "train_log.jsonl").write_text('{"step": 1, "loss": 2.0}\n')
    register_sft(cfg, adapter, run_dir)

    again = OmegaConf.merge(cfg, {"eval": {"limit": 3}})
    with RunRecord.start(run_dir, again, {}) as record:
        result = lora.run(again, record)
        record.complete(result.to_metrics())
    assert record.data["status"] == "completed" and result.overall["n"] == 3
    assert result.training == {"steps": 2, "train_time_s": 1.5}
    assert (run_dir / "train_log.jsonl").read_text() == '{"step": 1, "loss": 2.0}\n'
