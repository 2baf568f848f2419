"""The models package: configs, loading a tiny real Llama at none/8bit/4bit on CPU, random init,
adapters, hub errors and the embedded-model cache protocol.  Real SmolLM2 tests are `slow`."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from agentcoder.models import LoadedModel, ModelLoadError, load_model, load_tokenizer, resolve_model_path
from agentcoder.models import embedded as embedded_mod
from tests.helpers import ROOT, compose_cfg, refuse_network

MODELS = ["smollm2-135m", "qwen2.5-coder-3b", "deepseek-coder-1.3b", "starcoder2-3b"]
# Published sizes (parameters) of the four architectures, to check the architecture facts.
EXPECTED_PARAMS = {
    "smollm2-135m": 134.5e6,
    "qwen2.5-coder-3b": 3.09e9,
    "deepseek-coder-1.3b": 1.35e9,
    "starcoder2-3b": 3.03e9,
}
TINY_ARCH = [
    "model.architecture.hidden_size=64",
    "model.architecture.intermediate_size=128",
    "model.architecture.num_hidden_layers=2",
    "model.architecture.num_attention_heads=4",
    "model.architecture.num_key_value_heads=2",
]


def tiny_cfg(model_dir: Path, *overrides: str):
    return compose_cfg("model.source=hub", f"model.hub_id={model_dir}", *overrides)


def greedy(lm: LoadedModel, text: str = "What is the weather in Paris?", n: int = 4) -> torch.Tensor:
    prompt = lm.tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False
    )
    enc = lm.tokenizer([prompt], return_tensors="pt")
    with torch.no_grad():
        out = lm.model.generate(**enc, max_new_tokens=n, min_new_tokens=n, do_sample=False)
    return out[0, enc["input_ids"].shape[1]:]


# --------------------------------------------------------------------------- configs


@pytest.mark.parametrize("name", MODELS)
def test_model_config_builds_its_architecture(name):
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = compose_cfg(f"model={name}")
    m = cfg.model
    assert m.name == name and m.hub_id and m.generation.max_new_tokens > 0
    assert {"q_proj", "k_proj", "v_proj", "o_proj"} <= set(m.lora_target_modules)
    config = AutoConfig.for_model(**OmegaConf.to_container(m.architecture))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    n = sum(p.numel() for p in model.parameters())
    assert abs(n - EXPECTED_PARAMS[name]) / EXPECTED_PARAMS[name] < 0.02, n
    # every LoRA target names an existing linear layer of the architecture
    leaves = {k.rsplit(".", 1)[-1] for k, mod in model.named_modules() if isinstance(mod, torch.nn.Linear)}
    assert set(m.lora_target_modules) <= leaves


def test_deepseek_rope_scaling_reaches_transformers():
    from transformers import AutoConfig

    arch = compose_cfg("model=deepseek-coder-1.3b").model.architecture
    config = AutoConfig.for_model(**OmegaConf.to_container(arch))
    assert config.rope_parameters["rope_type"] == "linear"
    assert config.rope_parameters["factor"] == 4.0 and config.rope_parameters["rope_theta"] == 100000.0


def test_embedded_constants_match_default_config():
    cfg = compose_cfg()
    assert cfg.model.name == embedded_mod.EMBEDDED_NAME and cfg.model.source == "embedded"
    assert dict(cfg.model.embedded) == embedded_mod.EMBEDDED_ASSET


def test_package_import_is_light():
    code = (
        "import sys, agentcoder.models; "
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# --------------------------------------------------------------------------- tiny model, three quants


@pytest.fixture(scope="module")
def loaded_none(tiny_model_dir):
    return load_model(tiny_cfg(tiny_model_dir, "quant=none"), device="cpu")


def test_quant_none_loads_fp32_on_cpu(loaded_none, tiny_model_dir):
    lm = loaded_none
    info = lm.info
    assert info["dtype"] == "float32" and info["device"] == "cpu" and info["quant"] == "none"
    assert info["init"] == "pretrained" and "random-init" not in info["label"]
    assert info["path"] == str(tiny_model_dir.resolve())
    assert info["n_params"] == sum(p.numel() for p in lm.model.parameters()) > 0
    # fp32 weights plus small buffers (rotary inv_freq)
    assert info["n_params"] * 4 <= info["footprint_bytes"] < info["n_params"] * 4 * 1.01
    assert info["load_time_s"] > 0
    assert not any(isinstance(mod, _bnb_linear_types()) for mod in lm.model.modules())
    tok = lm.tokenizer
    assert tok.padding_side == "left" and tok.pad_token == tok.eos_token == "<|im_end|>"
    assert lm.model.generation_config.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")
    assert lm.model.generation_config.max_new_tokens == 256  # from conf/model/smollm2-135m.yaml
    assert greedy(lm).shape[0] == 4


def _bnb_linear_types():
    import bitsandbytes as bnb

    return (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)


def test_quant_8bit_uses_llm_int8_layers(tiny_model_dir, loaded_none):
    import bitsandbytes as bnb

    lm = load_model(tiny_cfg(tiny_model_dir, "quant=8bit"), device="cpu")
    proj = lm.model.model.layers[0].self_attn.q_proj
    assert isinstance(proj, bnb.nn.Linear8bitLt) and proj.weight.dtype == torch.int8
    assert lm.info["quant"] == "8bit" and lm.info["n_params"] == loaded_none.info["n_params"]
    assert lm.info["footprint_bytes"] < loaded_none.info["footprint_bytes"]
    assert greedy(lm).shape[0] == 4


def test_quant_4bit_uses_nf4_double_quant_layers(tiny_model_dir, loaded_none):
    import bitsandbytes as bnb

    lm = load_model(tiny_cfg(tiny_model_dir, "quant=4bit"), device="cpu")
    linears = [mod for name, mod in lm.model.named_modules() if name.endswith(("_proj",))]
    assert linears and all(isinstance(mod, bnb.nn.Linear4bit) for mod in linears)
    state = linears[0].weight.quant_state
    from agentcoder.models.loader import cpu_has_bf16

    # bf16 compute as configured, except on a CPU without bf16 units (fp32 there: same weights, ~20x faster)
    expected = torch.bfloat16 if cpu_has_bf16() else torch.float32
    assert state.quant_type == "nf4" and state.nested and linears[0].compute_dtype == expected
    assert lm.info["compute_dtype"] == str(expected).removeprefix("torch.")
    # 4-bit packs two weights per byte; the reported count is still the true parameter count
    assert lm.info["n_params"] == loaded_none.info["n_params"]
    assert lm.info["footprint_bytes"] < loaded_none.info["footprint_bytes"]
    new = greedy(lm)
    assert new.shape[0] == 4 and lm.tokenizer.decode(new) != ""


def test_load_tokenizer_without_weights(tiny_model_dir):
    tok = load_tokenizer(tiny_cfg(tiny_model_dir))
    assert tok.padding_side == "left" and tok.pad_token == "<|im_end|>"
    assert resolve_model_path(tiny_cfg(tiny_model_dir)) == str(tiny_model_dir.resolve())


# --------------------------------------------------------------------------- init=random


def test_random_init_builds_the_architecture_without_weights(tiny_model_dir, tiny_tokenizer):
    overrides = ["model=qwen2.5-coder-3b", "model.init=random", *TINY_ARCH,
                 "model.architecture.vocab_size=100"]
    lm = load_model(tiny_cfg(tiny_model_dir, *overrides), device="cpu")
    assert lm.info["init"] == "random" and "random-init" in lm.info["label"] and lm.info["path"] is None
    assert lm.model.config.model_type == "qwen2" and lm.model.config.num_hidden_layers == 2
    assert lm.model.config.rope_parameters["rope_theta"] == 1e6
    # the tokenizer is bigger than the overridden vocabulary: the embedding grows to fit it
    assert lm.info["vocab_resized"] == [100, len(tiny_tokenizer)]
    assert lm.model.get_input_embeddings().num_embeddings == len(tiny_tokenizer)
    assert lm.info["tokenizer_source"] == lm.info["hub_id"]
    assert greedy(lm).shape[0] == 4
    # seeded by cfg.seed: same seed, same weights; another seed, other weights
    again = load_model(tiny_cfg(tiny_model_dir, *overrides), device="cpu")
    other = load_model(tiny_cfg(tiny_model_dir, *overrides, "seed=7"), device="cpu")
    w = lm.model.model.layers[0].mlp.up_proj.weight
    assert torch.equal(w, again.model.model.layers[0].mlp.up_proj.weight)
    assert not torch.equal(w, other.model.model.layers[0].mlp.up_proj.weight)


def test_random_init_quantized_starcoder2(tiny_model_dir):
    import bitsandbytes as bnb

    overrides = ["model=starcoder2-3b", "model.init=random", "quant=4bit", *TINY_ARCH,
                 "model.architecture.vocab_size=512"]
    lm = load_model(tiny_cfg(tiny_model_dir, *overrides), device="cpu")
    assert lm.model.config.model_type == "starcoder2" and "vocab_resized" not in lm.info
    assert isinstance(lm.model.model.layers[0].mlp.c_fc, bnb.nn.Linear4bit)
    assert greedy(lm).shape[0] == 4


def test_random_init_needs_an_architecture(tiny_model_dir):
    with pytest.raises(ModelLoadError, match="architecture"):
        cfg = tiny_cfg(tiny_model_dir, "model.init=random", "~model.architecture.model_type")
        load_model(cfg, device="cpu")


# --------------------------------------------------------------------------- hub errors


def test_unreachable_hub_model_is_one_clear_error(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value_never_logged")
    cfg = compose_cfg("model=qwen2.5-coder-3b", "model.hub_id=agentcoder-tests/no-such-model-xyz")
    # Offline must mean no attempt at all (no lookups, no retries with backoff): record any.
    attempts = refuse_network(monkeypatch)
    with pytest.raises(ModelLoadError) as err:
        load_model(cfg, device="cpu")
    message = str(err.value)
    assert attempts == []
    assert "\n" not in message and "agentcoder-tests/no-such-model-xyz" in message
    assert "HF_HUB_OFFLINE" in message and "hf_secret_value_never_logged" not in message
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_gated_error_names_the_token_variable():
    from agentcoder.models.loader import _explain

    msg = _explain("model", "meta/gated", OSError("You are trying to access a gated repo. 401 Unauthorized"))
    if "HF_HUB_OFFLINE is set" in msg:  # an offline environment reports that first
        pytest.skip("HF_HUB_OFFLINE is set in this environment")
    assert "HF_TOKEN" in msg and "huggingface-cli login" in msg and "meta/gated" in msg


# Preflight refuses these paths first (tests/test_preflight_values.py); the loader still says what is
# wrong for a config built without it (a script, a notebook).


def _unchecked(cfg, key: str, value: str):
    OmegaConf.update(cfg, key, value)
    return cfg


def test_missing_local_folder_is_model_load_error(tmp_path):
    cfg = compose_cfg("model.source=hub", f"model.hub_id={tmp_path}")
    cfg = _unchecked(cfg, "model.hub_id", str(tmp_path / "absent"))
    with pytest.raises(ModelLoadError, match="cannot load"):
        load_tokenizer(cfg)


# --------------------------------------------------------------------------- adapter


def test_saved_lora_adapter_is_applied(tiny_model_dir, tmp_path, loaded_none):
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    # init_lora_weights=False: random B too, so the adapter visibly changes the output
    peft = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft.save_pretrained(tmp_path / "adapter")
    ids = torch.tensor([[1, 5, 9, 42, 7]])
    with torch.no_grad():
        want = peft(input_ids=ids).logits

    lm = load_model(tiny_cfg(tiny_model_dir, f"model.adapter={tmp_path / 'adapter'}"), device="cpu")
    assert isinstance(lm.model, PeftModel) and lm.info["label"].endswith("+adapter")
    assert lm.info["n_trainable_params"] == 0  # loaded for evaluation
    with torch.no_grad():
        got = lm.model(input_ids=ids).logits
        plain = loaded_none.model(input_ids=ids).logits
    assert torch.allclose(got, want, atol=1e-5) and not torch.allclose(got, plain, atol=1e-3)


def test_adapter_path_without_adapter_is_an_error(tiny_model_dir, tmp_path):
    with pytest.raises(ModelLoadError, match="adapter_config.json"):
        load_model(_unchecked(tiny_cfg(tiny_model_dir), "model.adapter", str(tmp_path)), device="cpu")


# --------------------------------------------------------------------------- embedded cache protocol


def test_embedded_cache_converts_once_under_concurrency(tmp_path, monkeypatch):
    # The conversion itself is exercised by the slow test; here the cache protocol: one build
    # for many concurrent callers, and the folder only ever visible complete.
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF-not-really")
    calls, seen_partial = [], []

    def slow_convert(src: Path, out: Path) -> None:
        calls.append(src)
        out.mkdir()
        (out / "model.safetensors").write_bytes(b"x")
        time.sleep(0.3)
        (out / "config.json").write_text("{}")

    monkeypatch.setattr(embedded_mod, "_convert_gguf", slow_convert)
    cfg = compose_cfg(f"model.gguf_path={gguf}", cache_dir=tmp_path / "cache").model
    results = []

    def worker() -> None:
        d = embedded_mod.embedded_model_dir(cfg, tmp_path / "cache")
        if not (d / "config.json").is_file():
            seen_partial.append(d)
        results.append(d)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and not seen_partial and len(set(results)) == 1
    final = results[0]
    assert final.parent == tmp_path / "cache" / "models" and final.name.startswith("smollm2-135m-")
    assert [p.name for p in final.parent.iterdir() if not p.name.endswith(".lock")] == [final.name]
    # another GGUF, another folder
    gguf.write_bytes(b"GGUF-other")
    assert embedded_mod.embedded_model_dir(cfg, tmp_path / "cache") != final and len(calls) == 2


def test_missing_gguf_path_is_an_error(tmp_path):
    cfg = _unchecked(compose_cfg(cache_dir=tmp_path), "model.gguf_path", str(tmp_path / "none.gguf"))
    with pytest.raises(ModelLoadError, match="gguf_path"):
        resolve_model_path(cfg)


# --------------------------------------------------------------------------- real SmolLM2 (slow)


@pytest.mark.slow
def test_embedded_smollm2_generates_and_stops_at_im_end():
    lm = load_model(compose_cfg(), device="cpu")
    tok = lm.tokenizer
    end = tok.convert_tokens_to_ids("<|im_end|>")
    assert tok.eos_token_id == tok.pad_token_id == end == 2
    assert lm.model.generation_config.eos_token_id == end
    assert math.isclose(lm.info["n_params"], 134.5e6, rel_tol=0.01)
    assert Path(lm.info["path"]).name.startswith("smollm2-135m-bcc81830")
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France? Answer in one word."}],
        add_generation_prompt=True, tokenize=False,
    )
    enc = tok([prompt], return_tensors="pt")
    with torch.no_grad():
        out = lm.model.generate(**enc, max_new_tokens=48, do_sample=False)
    new = out[0, enc["input_ids"].shape[1]:].tolist()
    assert new[-1] == end and len(new) < 48
    assert tok.decode(new, skip_special_tokens=True).strip()


@pytest.mark.slow
def test_random_init_falls_back_to_embedded_tokenizer(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    cfg = compose_cfg("model=deepseek-coder-1.3b", "model.init=random", *TINY_ARCH)
    lm = load_model(cfg, device="cpu")
    assert lm.info["tokenizer_source"] == "fallback:smollm2-135m"
    assert lm.info["vocab_resized"] == [32256, 49152]
    assert lm.tokenizer.eos_token == "<|im_end|>" and os.environ["HF_HUB_OFFLINE"] == "1"


def test_trls_checkpointing_toggle_around_generation_warns_nobody(tiny_model_dir):
    """TRL's GRPO disables and re-enables checkpointing around every generation through transformers'
    deprecated names; a run filters those warnings (models/loader.quiet_library_warnings)."""
    import warnings

    from transformers import AutoModelForCausalLM

    from agentcoder.models.loader import quiet_library_warnings

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quiet_library_warnings()
        model.gradient_checkpointing_enable()
        model.gradient_checkpointing_disable()
    assert not [w for w in seen if "is deprecated" in str(w.message)], [str(w.message) for w in seen]
