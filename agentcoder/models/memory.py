"""Memory of the process, phase by phase: free what a finished phase left, reset the peak, read it.

A run has phases (load, train, evaluate; a staged method trains an SFT stage first; Hydra's basic
launcher runs a `-m` sweep's jobs one after another in one process), and each reports the peak of its
own phase.  The peak is reset where a phase starts: on a GPU `torch.cuda.reset_peak_memory_stats`; on
Linux the kernel's resettable peak RSS (writing "5" to /proc/self/clear_refs resets VmHWM).  Without
either, the process's lifetime peak (`ru_maxrss`) is what there is (reset_peak_memory returns False).
"""

from __future__ import annotations

import ctypes
import gc
import os
import resource
import sys
from pathlib import Path
from typing import Any

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


# torch's CPU kernels for bf16 (oneDNN, through ideep) keep a compiled kernel per input shape and more,
# up to 1,024 in each of two caches, read from these variables at their first use in the process.  In a
# LoRA run they grew the heap's bytes in use ~1 MB a step (505 -> 807 MB in 400 steps), and the freed
# tensors of every step fragmented the heap around them, so the peak grew with the steps.  At 64 the
# 400-step peak equals the 100-step one and a 40-step A/B ran at the same speed within its noise
# (docs/benchmarks.md).  A value the user set is kept.
KERNEL_CACHE_CAPACITY = 64
KERNEL_CACHE_VARS = ("LRU_CACHE_CAPACITY", "ONEDNN_PRIMITIVE_CACHE_CAPACITY")


def cap_kernel_caches() -> dict[str, str]:
    """Bound oneDNN's kernel caches (KERNEL_CACHE_VARS) unless set already; returns the values in force.
    It takes effect only where no CPU kernel of the process has run yet: call it before the first model."""
    for var in KERNEL_CACHE_VARS:
        os.environ.setdefault(var, str(KERNEL_CACHE_CAPACITY))
    return {var: os.environ[var] for var in KERNEL_CACHE_VARS}


def release_memory() -> None:
    """Free what nothing references any more: reference cycles (a trainer and its callbacks, accelerate's
    wrapped forward), the CUDA allocator's cached blocks, and the heap glibc keeps after frees."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
    trim_heap()


def trim_heap() -> None:
    """Hand the heap's free pages back to the OS (glibc's malloc_trim; a no-op elsewhere)."""
    # glibc holds freed heap memory (in every thread's arena) until trimmed; other libcs lack the call.
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]


def heap_stats() -> dict[str, float]:
    """glibc's view of the process heap in MiB (mallinfo2): its size, the mmapped chunks beside it, the
    bytes in use and those held free; {} under another libc.  A peak that grows while the bytes in use
    stay flat is the allocator holding freed memory; bytes in use that grow are something kept."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        info = libc.mallinfo2()
    except (OSError, AttributeError):
        return {}
    return {"heap_mb": round(info.arena / 2**20, 1), "mmap_mb": round(info.hblkhd / 2**20, 1),
            "in_use_mb": round(info.uordblks / 2**20, 1), "free_in_heap_mb": round(info.fordblks / 2**20, 1)}


def reset_peak_memory(device: Any) -> bool:
    """Free what earlier phases left (release_memory) and start DEVICE's peak afresh; False where the
    peak cannot be reset (a CPU peak is then the process's lifetime peak)."""
    release_memory()
    if str(device).startswith("cuda"):
        import torch

        torch.cuda.reset_peak_memory_stats(device)
        return True
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def peak_memory_bytes(device: Any) -> int:
    """DEVICE's peak memory since the last reset_peak_memory: CUDA's allocated peak; on a CPU the peak
    resident memory (VmHWM; ru_maxrss, the lifetime peak, where /proc is missing)."""
    if str(device).startswith("cuda"):
        import torch

        return int(torch.cuda.max_memory_allocated(device))
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    # ru_maxrss is in KiB on Linux.
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
