"""Training from a saved adapter: keep training it, or merge it into the base and add a fresh LoRA."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.helpers import compose_cfg, save_random_adapter


def cfg_for(model_dir: Path, *extra: str) -> Any:
    return compose_cfg("method=lora", "model.source=hub", f"model.hub_id={model_dir}", *extra)


@pytest.fixture(scope="module")
def saved_adapter(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA whose B matrices are non-zero, so that it changes the model's output."""
    return save_random_adapter(cfg_for(tiny_model_dir), tmp_path_factory.mktemp("sft") / "adapter", std=0.5)


def logits(model: Any) -> Any:
    import torch

    ids = torch.tensor([[5, 17, 42, 99, 3, 250]])
    was_training = model.training
    model.eval()  # LoRA dropout off
    with torch.no_grad():
        out = model(input_ids=ids).logits.float()
    model.train(was_training)
    return out


def reference_logits(model_dir: Path, adapter: Path) -> Any:
    from peft import PeftModel

    from agentcoder.models import load_model

    return logits(PeftModel.from_pretrained(load_model(cfg_for(model_dir)).model, str(adapter)))


def test_continue_keeps_training_the_saved_adapter(tiny_model_dir, saved_adapter):
    import torch
    from peft import PeftModel, load_peft_weights

    from agentcoder.training.adapters import load_policy

    base, peft_config = load_policy(cfg_for(tiny_model_dir), None, "t", adapter=saved_adapter, mode="continue")
    assert peft_config is None and isinstance(base.model, PeftModel)
    trainable = {n for n, p in base.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    saved = load_peft_weights(str(saved_adapter))
    b_key = next(k for k in saved if "lora_B" in k)
    live = dict(base.model.named_parameters())
    live_key = next(n for n in live if n.replace(".default", "") == b_key)
    assert torch.equal(live[live_key].detach(), saved[b_key])  # starts where the SFT stage ended
    assert torch.allclose(logits(base.model), reference_logits(tiny_model_dir, saved_adapter), atol=1e-5)

    ids = torch.tensor([[5, 17, 42, 99]])
    base.model(input_ids=ids, labels=ids).loss.backward()
    assert live[live_key].grad is not None and live[live_key].grad.abs().sum() > 0


def test_merge_folds_the_adapter_into_the_base_and_returns_a_fresh_lora(tiny_model_dir, saved_adapter):
    from peft import LoraConfig, PeftModel

    from agentcoder.training.adapters import load_policy

    base, peft_config = load_policy(cfg_for(tiny_model_dir), None, "t", adapter=saved_adapter, mode="merge")
    assert not isinstance(base.model, PeftModel) and isinstance(peft_config, LoraConfig)
    assert not any("lora_" in n for n, _ in base.model.named_parameters())
    import torch

    assert torch.allclose(logits(base.model), reference_logits(tiny_model_dir, saved_adapter), atol=1e-4)


def test_merge_on_a_4bit_base_merges_in_full_precision_then_quantizes(tiny_model_dir, saved_adapter, tmp_path):
    import shutil

    import torch

    from agentcoder.training.adapters import MERGED_DIR, load_policy

    adapter = tmp_path / "adapter"
    shutil.copytree(saved_adapter, adapter)
    cfg = cfg_for(tiny_model_dir, "quant=4bit", "quant.bnb_4bit_compute_dtype=float32")
    base, _ = load_policy(cfg, None, "t", adapter=adapter, mode="merge")
    assert (tmp_path / MERGED_DIR / "config.json").is_file()
    assert base.info["quant"] == "4bit" and base.info["path"] == str(tmp_path / MERGED_DIR)
    assert any(type(m).__name__ == "Linear4bit" for m in base.model.modules())
    # 4-bit rounding, not a lost adapter: the merged model stays near the full-precision one.
    merged, plain = logits(base.model), reference_logits(tiny_model_dir, saved_adapter)
    without = logits(__import__("agentcoder.models", fromlist=["load_model"]).load_model(cfg_for(tiny_model_dir)).model)
    assert (merged - plain).abs().mean() < (without - plain).abs().mean()
    assert torch.isfinite(merged).all()


def test_a_folder_without_an_adapter_is_refused(tiny_model_dir, tmp_path):
    from agentcoder.training.adapters import load_policy

    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        load_policy(cfg_for(tiny_model_dir), None, "t", adapter=tmp_path, mode="continue")
    with pytest.raises(ValueError, match="continue, merge"):
        load_policy(cfg_for(tiny_model_dir), None, "t", adapter=tmp_path, mode="stack")
