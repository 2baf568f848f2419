"""Resident memory of a method=lora run, step by step: does the CPU peak grow with steps or with data?

    python scripts/memory_growth.py --out /tmp/mem.jsonl -- method.train.max_steps=150 method.train.max_length=256

The measurement left for a machine to itself (issue 29: ~10 and ~35 min on a 2-core CPU), the same data
and rows per step at 1x and 4x the steps, on this commit and on one before it:

    python scripts/memory_growth.py --out mem100.jsonl -- experiment=cpu_study seed=1 sft_train.epochs=3 \
        method.train.max_steps=100
    python scripts/memory_growth.py --out mem400.jsonl -- experiment=cpu_study seed=1 sft_train.epochs=3 \
        method.train.max_steps=400

Trains (fit_adapter: no registry; its val checks and test-split evaluation included) and writes one line
per optimizer step: the step, the process's resident memory (VmRSS) and its peak so far (VmHWM), and
glibc's view of its heap (mallinfo2: bytes in use and bytes held free).  A peak that grows while the
bytes in use stay flat is the allocator holding freed memory (fragmentation); bytes in use that grow are
something kept (a leak, or a cache).  The last line printed has the run's training peak.

What it found (docs/benchmarks.md): the bytes in use grew ~1 MB a step, oneDNN's kernel caches (a
compiled kernel per input shape, 1,024 per cache), and the freed tensors of each step fragmented the heap
around them: 5,279 MB at step 100, 7,159 at 400 with the heap trimmed every 10 steps.  With the caches at
64 kernels (models/memory.cap_kernel_caches, set by load_model) the peak was 5,136 MB at both.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="jsonl: one line per optimizer step")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the method=lora run")
    args = parser.parse_args()

    from transformers import TrainerCallback

    from agentcoder.methods import lora
    from agentcoder.models.memory import heap_stats
    from agentcoder.preflight import compose_config
    from agentcoder.tracking.records import RunRecord

    out = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    class Sampler(TrainerCallback):
        def __init__(self) -> None:
            self.fh = out.open("w")

        def on_step_end(self, targs, state, control, **kwargs):  # noqa: ANN001
            row = {"step": state.global_step, "s": round(time.perf_counter() - t0, 1),
                   "rss_mb": round(_status_kb("VmRSS") / 1024, 1), "hwm_mb": round(_status_kb("VmHWM") / 1024, 1),
                   **heap_stats()}
            self.fh.write(json.dumps(row) + "\n")
            self.fh.flush()

    cfg = compose_config(["method=lora", "method.train.report_to=[]", *args.overrides])
    with tempfile.TemporaryDirectory() as tmp:
        record = RunRecord.start(Path(tmp), cfg, {"overrides": ["(scripts/memory_growth.py)"]})
        result = lora.fit_adapter(cfg, record, extra_callbacks=(Sampler(),))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    t = result.training or {}
    print(json.dumps({"steps": t.get("steps"), "train_peak_gb": round((t.get("peak_memory_bytes") or 0) / 1e9, 3),
                      "max_hwm_mb": max(r["hwm_mb"] for r in rows), "first": rows[0], "last": rows[-1]}))


if __name__ == "__main__":
    main()
