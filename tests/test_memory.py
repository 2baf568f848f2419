"""Memory figures belong to their run and phase: each phase's peak is its own (a sweep's jobs share one
process under Hydra's basic launcher), and a finished phase's model is gone before the next one loads."""

from __future__ import annotations

import json
import weakref
from pathlib import Path
from typing import Any

import pytest

from agentcoder.models.memory import peak_memory_bytes, reset_peak_memory
from tests.helpers import build_tiny_tokenizer
from tests.test_lora import SIZES, bfcl_cache, lora_cfg, run_lora  # noqa: F401  (module-scoped fixture)


def test_a_reset_cpu_peak_forgets_what_was_freed():
    import numpy as np

    reset_peak_memory("cpu")
    block = np.ones(400 * 2**20 // 8)  # 400 MiB, touched
    high = peak_memory_bytes("cpu")
    del block
    assert reset_peak_memory("cpu") is True
    assert peak_memory_bytes("cpu") < high - 300 * 2**20


def save_llama(path: Path, tokenizer: Any, hidden: int, layers: int) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=4, vocab_size=len(tokenizer),
                         max_position_embeddings=512, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


@pytest.mark.slow  # a real two-job sweep in a subprocess: over a minute here
def test_jobs_of_one_in_process_sweep_report_their_own_peaks(bfcl_cache, tmp_path):  # noqa: F811
    """Hydra's basic launcher runs `-m` jobs in one process: a small model's job after a large one's
    reports the small footprint, not the largest peak so far."""
    from tests.test_launcher import launch

    tok = build_tiny_tokenizer()
    large = save_llama(tmp_path / "large", tok, hidden=1024, layers=12)  # ~490 MB of fp32 weights
    small = save_llama(tmp_path / "small", tok, hidden=64, layers=2)
    proc = launch("-m", "method=baseline", "model.source=hub", f"model.hub_id={large},{small}", "model.dtype=float32",
                  f"data.categories=[{','.join(SIZES)}]", f"data.embedded.sha256={bfcl_cache[1]}", "eval.limit=2",
                  "eval.max_new_tokens=2", f"cache_dir={bfcl_cache[0]}", f"hydra.sweep.dir={tmp_path / 'sweep'}",
                  timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    peaks = []
    for job in ("0", "1"):
        run = json.loads((tmp_path / "sweep" / job / "run.json").read_text())
        assert Path(run["model"]["path"]).name == ("large" if job == "0" else "small")
        metrics = json.loads((tmp_path / "sweep" / job / "metrics.json").read_text())
        peaks.append(metrics["overall"]["peak_memory_bytes"])
    print(f"sweep peaks (large, small): {peaks}")
    assert peaks[1] < peaks[0] - 200 * 2**20, peaks


def test_a_finished_phase_model_is_freed_before_the_next_loads(tiny_model_dir, bfcl_cache, monkeypatch, tmp_path):  # noqa: F811
    """As a staged method's SFT stage is trained in-process and then a second base loads."""
    from transformers import AutoModelForCausalLM

    from agentcoder.models import load_model

    loaded: list[weakref.ref] = []
    alive_at_next_load: list[bool] = []
    real = AutoModelForCausalLM.from_pretrained.__func__

    def tracked(cls: Any, *args: Any, **kwargs: Any) -> Any:
        alive_at_next_load.extend(ref() is not None for ref in loaded)
        model = real(cls, *args, **kwargs)
        loaded.append(weakref.ref(model))
        return model

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", classmethod(tracked))
    run_lora(lora_cfg(tiny_model_dir, bfcl_cache, "method.train.max_steps=1", "eval.limit=2",
                      "method.train.val_limit=2"), tmp_path)
    assert len(loaded) == 1
    load_model(lora_cfg(tiny_model_dir, bfcl_cache))  # the next phase
    assert alive_at_next_load == [False]


@pytest.mark.parametrize("device", ["cuda:0"])
def test_a_gpu_phase_resets_the_gpu_peak(monkeypatch, device):
    """A stand-in for torch.cuda: the GPU's peak is reset where a phase starts (only a GPU can show the figure)."""
    import torch

    calls: list[str] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("empty_cache"))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda d=None: calls.append(f"reset {d}"))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda d=None: 123)
    assert reset_peak_memory(device) is True
    assert calls == ["empty_cache", f"reset {device}"] and peak_memory_bytes(device) == 123


def test_packed_rows_come_in_one_width_on_cpu_and_a_few_on_gpu():
    """CPU bf16 matmuls cache kernels per input shape: on CPU packed rows are padded to max_length
    (one shape for the run), on GPU to a multiple of ROW_MULTIPLE (a few widths)."""
    from types import SimpleNamespace

    from agentcoder.training.packing import use_packed_rows
    from agentcoder.training.setup import ROW_MULTIPLE

    max_length = 4 * ROW_MULTIPLE
    for on_gpu, expected in ((False, {max_length}), (True, {ROW_MULTIPLE * k for k in (1, 2, 3, 4)})):
        trainer = SimpleNamespace(data_collator=None, args=SimpleNamespace(max_length=max_length))
        use_packed_rows(trainer, SimpleNamespace(pad_token_id=0), on_gpu=on_gpu)
        rows = ([{"input_ids": [1] * n, "labels": [1] * n, "seq_lengths": [n]}] for n in range(1, max_length + 1, 5))
        widths = {trainer.data_collator(row)["input_ids"].shape[1] for row in rows}
        assert widths == expected, on_gpu


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_training_hands_a_fragmented_heaps_free_pages_back_every_few_steps():
    """Freed blocks pinned below a block still in use stay resident (glibc trims only the heap's
    top): the heap of a long run grew with its steps.  The trainer's HeapTrim callback hands their
    pages back every HEAP_TRIM_STEPS steps."""
    import ctypes
    from types import SimpleNamespace

    from agentcoder.training.session import HEAP_TRIM_STEPS, callbacks

    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    size = 64 * 1024  # under glibc's mmap threshold: from the heap
    blocks = [libc.malloc(size) for _ in range(6000)]  # ~375 MiB
    for b in blocks:
        ctypes.memset(b, 1, size)  # resident
    for i, b in enumerate(blocks):
        if i % 50:
            libc.free(b)  # every 50th stays: the freed ones are holes, not the heap's top
    selection = SimpleNamespace()
    cfg = SimpleNamespace(method=SimpleNamespace(train=SimpleNamespace(report_to=[])))
    (trim,) = [c for c in callbacks(cfg, Path("/nonexistent"), selection) if type(c).__name__ == "HeapTrim"]
    held = _rss_bytes()
    trim.on_step_end(None, SimpleNamespace(global_step=HEAP_TRIM_STEPS - 1), None)
    assert _rss_bytes() > held - 100 * 2**20  # not every step
    trim.on_step_end(None, SimpleNamespace(global_step=HEAP_TRIM_STEPS), None)
    assert _rss_bytes() < held - 250 * 2**20
    for b in blocks[::50]:
        libc.free(b)


_KERNEL_CACHE_PROBE = """
import sys

import torch

from agentcoder.models.loader import load_model
from agentcoder.models.memory import heap_stats
from tests.helpers import compose_cfg

lm = load_model(compose_cfg("model.source=hub", f"model.hub_id={sys.argv[1]}"), device="cpu")
w = torch.randn(576, 1536, dtype=torch.bfloat16)
torch.randn(8, 576, dtype=torch.bfloat16) @ w
before = heap_stats()["in_use_mb"]
for rows in range(9, 609):  # a new input shape each time, as generation's prompts bring
    x = torch.randn(rows, 576, dtype=torch.bfloat16, requires_grad=True)
    (x @ w).sum().backward()
print(lm.info["cpu_kernel_caches"], heap_stats()["in_use_mb"] - before)
"""


def test_the_kernel_caches_are_bounded_before_the_first_model_loads(tiny_model_dir):
    """oneDNN keeps a compiled kernel per input shape (up to 1,024 per cache by default, ~1 MB each here):
    a long run's heap in use grew with its steps, and its freed tensors fragmented around them.
    load_model bounds the caches before any CPU kernel of the process runs (they read the bound once)."""
    import os
    import subprocess
    import sys

    from agentcoder.models.memory import KERNEL_CACHE_CAPACITY, KERNEL_CACHE_VARS

    env = {k: v for k, v in os.environ.items() if k not in KERNEL_CACHE_VARS}
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", _KERNEL_CACHE_PROBE, str(tiny_model_dir)], env=env, cwd=root,
                         capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    caches, grown_mb = out.rsplit(" ", 1)
    assert caches == str(dict.fromkeys(KERNEL_CACHE_VARS, str(KERNEL_CACHE_CAPACITY)))
    # 600 shapes: unbounded ~700 MB on a CPU whose bf16 matmuls go through oneDNN; bounded, 64 kernels.
    assert float(grown_mb) < 150, grown_mb
