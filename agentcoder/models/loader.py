"""Load the run's model: embedded / hub / local folder, bitsandbytes quantization, random init, adapter.

The quantization chosen here applies to the base model for the whole run; methods only add
adapters on top.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from agentcoder.data.prompts import prompt_style
from agentcoder.models.base import LoadedModel, ModelLoadError
from agentcoder.models.embedded import EMBEDDED_NAME, default_embedded_cfg, embedded_model_dir
from agentcoder.models.memory import cap_kernel_caches, reset_peak_memory
from agentcoder.models.tokens import fix_special_tokens, sync_generation_config

TOKEN_ENV = "HF_TOKEN"


# --------------------------------------------------------------------------- paths and errors


def resolve_model_path(cfg: DictConfig) -> str:
    """The HF folder or hub id that load_model reads weights and tokenizer from.

    For the embedded model this materialises the converted folder in the cache.  A hub_id that
    names an existing local directory is returned as an absolute path.
    """
    m = cfg.model
    if m.source == "embedded":
        return str(embedded_model_dir(m, cfg.cache_dir))
    if not m.hub_id:
        raise ModelLoadError(f"model {m.name!r} has source=hub but no model.hub_id")
    local = Path(m.hub_id).expanduser()
    return str(local.resolve()) if local.is_dir() else m.hub_id


def _hub_kwargs(m: DictConfig) -> dict[str, Any]:
    # Token only from the environment; None lets huggingface_hub use a `huggingface-cli login`.
    return {
        "revision": m.revision,
        "trust_remote_code": bool(m.trust_remote_code),
        "token": os.environ.get(TOKEN_ENV) or None,
    }


def _explain(what: str, path: str, err: BaseException) -> str:
    reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
    text = str(err).lower()
    from huggingface_hub import constants

    if constants.is_offline_mode() or "offline" in text:
        return (
            f"cannot load {what} {path!r}: it is not in the local Hugging Face cache and the hub is offline "
            f"(HF_HUB_OFFLINE is set or there is no network); download it with network access first, "
            f"or point model.hub_id at a local folder"
        )
    if any(s in text for s in ("gated", "401", "403", "restricted", "authenticat")):
        return (
            f"cannot load {what} {path!r}: the repository is gated or private; accept its licence on "
            f"huggingface.co and export {TOKEN_ENV}=<token> (or run `huggingface-cli login`)"
        )
    return (
        f"cannot load {what} {path!r} ({reason}); check model.hub_id, network access (HF_HUB_OFFLINE), "
        f"and {TOKEN_ENV} or `huggingface-cli login` for gated models"
    )


def _hub_call(fn: Callable[..., Any], path: str | None, what: str, **kwargs: Any) -> Any:
    """Call a from_pretrained; turn hub / file errors into one ModelLoadError line."""
    from huggingface_hub.errors import HfHubHTTPError

    try:
        return fn(path, **kwargs)
    except ModelLoadError:
        raise
    except (OSError, ValueError, HfHubHTTPError) as err:
        raise ModelLoadError(_explain(what, str(path), err)) from None


# --------------------------------------------------------------------------- tokenizer


def _tokenizer_and_source(cfg: DictConfig) -> tuple[Any, str]:
    from transformers import AutoTokenizer

    m = cfg.model
    if m.init == "random" and m.source == "hub":
        # Random weights need no download, so neither should the tokenizer: use the model's own
        # only if it is already local, else SmolLM2's (a ChatML BPE; vocabularies are grown to fit).
        try:
            tok = AutoTokenizer.from_pretrained(
                resolve_model_path(cfg), local_files_only=True, **_hub_kwargs(m)
            )
            return fix_special_tokens(tok), m.hub_id
        except (OSError, ValueError):
            path = str(embedded_model_dir(default_embedded_cfg(), cfg.cache_dir))
            tok = AutoTokenizer.from_pretrained(path)
            return fix_special_tokens(tok), f"fallback:{EMBEDDED_NAME}"
    path = resolve_model_path(cfg)
    tok = _hub_call(AutoTokenizer.from_pretrained, path, "tokenizer", **_hub_kwargs(m))
    return fix_special_tokens(tok), path


def load_tokenizer(cfg: DictConfig) -> Any:
    """The run's tokenizer without loading weights (pad/eos fixed, padding on the left)."""
    return _tokenizer_and_source(cfg)[0]


# --------------------------------------------------------------------------- model


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(requested: str, device: str) -> tuple[str, str]:
    """model.dtype resolved for DEVICE: (dtype name, why), recorded in run.json.

    auto: bf16 on a GPU that computes it natively, fp16 on one that does not (T4, V100: torch's
    is_bf16_supported() counts emulation, which runs bf16 at a fraction of fp16's speed); on a CPU,
    bf16 where it computes bf16 in hardware (AVX512-BF16 / AMX: a 2048x2048 bf16 matmul ran 2.6x fp32
    there, a LoRA step 1.9x), else fp32 (without bf16 units a CPU emulates bf16 and is slower than fp32).
    Also the dtype of the non-quantized modules (embeddings, norms) under 8-/4-bit.
    """
    if requested != "auto":
        return requested, "set"
    if device.startswith("cuda"):
        return gpu_half_dtype()
    if cpu_has_bf16():
        return "bfloat16", "auto: CPU with bf16 units (avx512_bf16/amx_bf16)"
    return "float32", "auto: CPU without bf16 units"


def gpu_half_dtype() -> tuple[str, str]:
    """The GPU's half-precision dtype and why: bf16 where it has bf16 units, else fp16."""
    import torch

    if torch.cuda.is_bf16_supported(including_emulation=False):
        return "bfloat16", "auto: GPU with bf16 units"
    return "float16", "auto: GPU without bf16 units (bf16 would be emulated): fp16"


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def compute_dtype(q: DictConfig, device: str) -> str:
    """The 4-bit compute dtype actually used: the config's, except bf16 where the device has no bf16
    units (a GPU: its half dtype, fp16; a CPU: fp32).

    Measured here (2-core AVX2 CPU): 16 greedy tokens of SmolLM2 in NF4 took ~60 s with bf16
    compute and 2.6 s with fp32; the weights stay NF4 either way, so only speed differs.
    """
    if q.bnb_4bit_compute_dtype != "bfloat16":
        return q.bnb_4bit_compute_dtype
    if device.startswith("cuda"):
        return gpu_half_dtype()[0]
    return q.bnb_4bit_compute_dtype if cpu_has_bf16() else "float32"


def _quantization_config(q: DictConfig, device: str = "cpu") -> Any:
    import torch
    from transformers import BitsAndBytesConfig

    if q.load_in_4bit:
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=q.bnb_4bit_quant_type,
            bnb_4bit_use_double_quant=q.bnb_4bit_use_double_quant,
            bnb_4bit_compute_dtype=getattr(torch, compute_dtype(q, device)),
        )
    if q.load_in_8bit:
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=q.llm_int8_threshold)
    return None


def _random_model(cfg: DictConfig, tokenizer: Any, dtype: Any, quant: Any, device: str) -> tuple[Any, dict]:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    arch = OmegaConf.to_container(cfg.model.architecture, resolve=True) or {}
    if "model_type" not in arch:
        raise ModelLoadError(
            f"model.init=random needs model.architecture with a model_type "
            f"(model {cfg.model.name!r} has none)"
        )
    extra: dict[str, Any] = {}
    if len(tokenizer) > arch.get("vocab_size", 0):
        # The fallback tokenizer's ids must all index the embedding (deepseek-coder's 32256 < 49152).
        extra["vocab_resized"] = [arch.get("vocab_size"), len(tokenizer)]
        arch["vocab_size"] = len(tokenizer)
    try:
        config = AutoConfig.for_model(**arch)
    except (KeyError, ValueError, TypeError) as err:
        raise ModelLoadError(f"model.architecture is not a valid config: {err}") from None
    for attr in ("pad_token_id", "eos_token_id", "bos_token_id"):
        value = getattr(tokenizer, attr, None)
        setattr(config, attr, value if value is not None else tokenizer.eos_token_id)
    if cfg.model.attn_implementation:
        config._attn_implementation = cfg.model.attn_implementation
    cuda = device.startswith("cuda")
    rng_devices = [torch.device(device).index or 0] if cuda else []
    # Seeded from cfg.seed without disturbing the global RNG state the run seeds itself.
    with torch.random.fork_rng(devices=rng_devices):
        torch.manual_seed(int(cfg.seed))
        if quant is None:
            with torch.device(device):
                return AutoModelForCausalLM.from_config(config, dtype=dtype), extra
        # bitsandbytes quantizes while loading weights, so the random state dict goes through
        # from_pretrained (no files involved).
        with torch.device(device if cuda else "cpu"):
            dense = AutoModelForCausalLM.from_config(config, dtype=dtype)
        model_cls = MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]
        state = dense.state_dict()
        del dense
        model = model_cls.from_pretrained(
            None, config=config, state_dict=state, quantization_config=quant,
            device_map={"": device}, dtype=dtype,
        )
    return model, extra


def _count_params(model: Any) -> tuple[int, int]:
    total = trainable = 0
    for p in model.parameters():
        # 4-bit Params4bit store two weights per byte; the quant state keeps the true shape.
        qs = getattr(p, "quant_state", None)
        n = int(math.prod(qs.shape)) if qs is not None else p.numel()
        total += n
        trainable += n if p.requires_grad else 0
    return total, trainable


def _load_adapter(model: Any, adapter: str) -> Any:
    from huggingface_hub.errors import HfHubHTTPError
    from peft import PeftModel

    local = Path(adapter).expanduser()
    looks_local = local.is_absolute() or adapter.startswith(".") or local.exists()
    if looks_local and not (local / "adapter_config.json").is_file():
        raise ModelLoadError(
            f"model.adapter={adapter!r} is not a saved peft adapter (no adapter_config.json)"
        )
    target = str(local.resolve()) if looks_local else adapter
    try:
        return PeftModel.from_pretrained(model, target, is_trainable=False)
    except (OSError, ValueError, HfHubHTTPError) as err:
        raise ModelLoadError(_explain("adapter", target, err)) from None


def quiet_library_warnings(*, int8: bool = False) -> None:
    """Filter the libraries' warnings that no user can act on, each where it cannot be fixed at its cause."""
    if int8:
        # LLM.int8 casts activations to fp16 by design; bitsandbytes warns on every matmul.
        warnings.filterwarnings("ignore", message=r"MatMul8bitLt: inputs will be cast", category=UserWarning)
    # peft reads transformers' deprecated `is_gradient_checkpointing` each time it wraps a model
    # (PeftModel.__init__): a warning no user can act on, once per adapter.
    warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
    # TRL's GRPO turns checkpointing off around each generation and on again, through transformers'
    # deprecated names: two warnings a step on a checkpointed run.
    warnings.filterwarnings("ignore", message=r"`gradient_checkpointing_(enable|disable)` is deprecated",
                            category=FutureWarning)


def load_model(cfg: DictConfig, *, device: str | None = None) -> LoadedModel:
    """Load cfg.model quantized per cfg.quant on DEVICE (None: cuda if available else cpu).

    info records the measurements a run reports: load time (tokenizer, conversion on first use
    and weights), parameter counts, memory footprint, device, dtype, quantization and labels.
    """
    import torch
    from transformers import AutoModelForCausalLM

    start = time.perf_counter()
    m = cfg.model
    device = device or _default_device()
    # A new phase: what the last one left (an SFT stage's model, a sweep's previous job) goes first,
    # and the peaks measured from here on are this phase's.
    reset_peak_memory(device)
    kernel_caches = cap_kernel_caches()
    dtype_name, dtype_why = resolve_dtype(str(m.get("dtype", "auto")), device)
    dtype = getattr(torch, dtype_name)
    quant = _quantization_config(cfg.quant, device)
    quiet_library_warnings(int8=bool(cfg.quant.load_in_8bit))
    tokenizer, tokenizer_source = _tokenizer_and_source(cfg)
    extra: dict[str, Any] = {}
    if m.init == "random":
        model, extra = _random_model(cfg, tokenizer, dtype, quant, device)
        path = None
    else:
        path = resolve_model_path(cfg)
        kwargs: dict[str, Any] = {"dtype": dtype, "device_map": {"": device}, "use_safetensors": True}
        if quant is not None:
            kwargs["quantization_config"] = quant
        if m.attn_implementation:
            kwargs["attn_implementation"] = m.attn_implementation
        model = _hub_call(AutoModelForCausalLM.from_pretrained, path, "model", **kwargs, **_hub_kwargs(m))
    sync_generation_config(model, tokenizer, OmegaConf.to_container(m.generation, resolve=True))
    if m.adapter:
        model = _load_adapter(model, m.adapter)
    n_params, n_trainable = _count_params(model)
    label = f"{m.name}/{cfg.quant.name}"
    if m.init == "random":
        label += "/random-init"
    if m.adapter:
        label += "+adapter"
    info: dict[str, Any] = {
        "load_time_s": round(time.perf_counter() - start, 3),
        "n_params": n_params,
        "n_trainable_params": n_trainable,
        "footprint_bytes": int(model.get_memory_footprint()),
        "device": device,
        "dtype": str(getattr(model, "dtype", dtype)).removeprefix("torch."),
        "dtype_requested": str(m.get("dtype", "auto")),
        "dtype_reason": dtype_why,
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
        "quant": cfg.quant.name,
        "compute_dtype": compute_dtype(cfg.quant, device) if cfg.quant.load_in_4bit else None,
        "init": m.init,
        "label": label,
        "source": m.source,
        "name": m.name,
        "hub_id": m.hub_id,
        "path": path,
        "adapter": m.adapter,
        "tokenizer_source": tokenizer_source,
        "prompt_style": prompt_style(tokenizer),  # data/prompts.py: chat template, or the plain format
        "cpu_kernel_caches": kernel_caches if device == "cpu" else None,
        **extra,
    }
    return LoadedModel(model=model, tokenizer=tokenizer, info=info)
