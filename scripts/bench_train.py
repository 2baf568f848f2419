"""Training throughput: TRL's padded default vs the project's method=lora settings, in one process.

    .venv/bin/python scripts/bench_train.py --examples 64 --steps 4 --batch-size 4 --init random   # CPU
    .venv/bin/python scripts/bench_train.py --model qwen2.5-coder-3b --init random --quant 4bit --steps 30
    .venv/bin/python scripts/bench_train.py --configs padded,rows,flat      # also compare packing layouts

Every configuration trains a fresh LoRA (same LoraConfig, lr, batch size, max_length, precision) on
the same rendered BFCL train examples (a seeded random sample of the train split, so every category
is in it) for the same number of optimizer steps; they differ only in what method=lora changes from
SFTConfig's defaults:
  padded  - TRL's default: packing=False (each batch padded to its longest example), gradient_checkpointing=True
  project - method=lora as it runs: packing and gradient checkpointing resolved by their `auto` rules
  rows / flat - the project's settings with that packing layout (see agentcoder/training/packing.py)
Throughput counts real tokens only (padding excluded); peak memory is CUDA max-allocated on GPU,
and on CPU the peak resident set sampled during training.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


class PeakRSS:
    """Samples this process's resident memory in a thread: ru_maxrss cannot be reset between runs."""

    def __init__(self, interval_s: float = 0.05):
        import psutil

        self.proc, self.interval, self.peak = psutil.Process(), interval_s, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def train_once(name: str, cfg: Any, examples: list, args: argparse.Namespace, workdir: Path) -> dict:
    import torch
    from omegaconf import OmegaConf
    from trl import SFTConfig

    from agentcoder.data import PromptFormat
    from agentcoder.data.rows import sft_dataset
    from agentcoder.methods.lora import sft_config, sft_trainer
    from agentcoder.training.session import load_base
    from agentcoder.training.setup import lora_config

    packing = {"padded": "none", "project": cfg.method.train.packing}.get(name, name)
    cfg = OmegaConf.merge(cfg, {"method": {"train": {"packing": packing}}})
    base = load_base(cfg, f"bench {name}")
    project = sft_config(cfg, workdir / name, base)
    if name == "padded":
        # TRL's defaults for everything method=lora sets differently, except precision and the
        # shared schedule, so that the ratio measures packing + checkpointing only.
        config = SFTConfig(
            output_dir=str(workdir / name), max_length=project.max_length, bf16=project.bf16,
            per_device_train_batch_size=project.per_device_train_batch_size,
            gradient_accumulation_steps=project.gradient_accumulation_steps,
            learning_rate=project.learning_rate, max_steps=args.steps, save_strategy="no", report_to="none",
            disable_tqdm=True, include_num_input_tokens_seen="non_padding", seed=cfg.seed,
        )
    else:
        project.max_steps, project.save_strategy, project.report_to = args.steps, "no", []
        project.disable_tqdm = True
        config = project
    dataset = sft_dataset(examples, PromptFormat(base.tokenizer, cfg.model.tool_format), config.max_length)
    if len(dataset) == 0:
        raise SystemExit(f"bench: all {len(examples)} examples are longer than --max-length {config.max_length}")
    trainer = sft_trainer(base, config, dataset, lora_config(cfg))
    on_gpu = base.on_gpu
    if on_gpu:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    with PeakRSS() as rss:
        t0 = time.perf_counter()
        trainer.train()
        if on_gpu:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() if on_gpu else rss.peak
    tokens = trainer.state.num_input_tokens_seen
    result = {
        "name": name, "steps": trainer.state.global_step, "seconds": seconds, "tokens": tokens,
        "tokens_per_s": tokens / seconds, "peak_memory_gib": peak / 2**30,
        "gradient_checkpointing": config.gradient_checkpointing, "packing": base.layout,
        "bf16": config.bf16, "device": base.device.split(":")[0],
    }
    del trainer, base
    if on_gpu:
        torch.cuda.empty_cache()
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m", help="a conf/model name")
    p.add_argument("--init", choices=("pretrained", "random"), default="pretrained")
    p.add_argument("--quant", choices=("none", "8bit", "4bit"), default="none")
    p.add_argument("--examples", type=int, default=400, help="BFCL train examples (rendered)")
    p.add_argument("--steps", type=int, default=20, help="optimizer steps per configuration")
    p.add_argument("--batch-size", type=int, default=8, help="per-device batch (packed rows: project)")
    p.add_argument("--max-length", type=int, default=1024)
    p.add_argument("--configs", default="padded,project",
                   help="comma-separated, run in this order: padded, project, rows, flat")
    p.add_argument("--json", type=Path, default=None, help="also write the results (a list of dicts) here")
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. model.source=hub")
    args = p.parse_args()
    unknown = set(args.configs.split(",")) - {"padded", "project", "rows", "flat"}
    if unknown:
        p.error(f"--configs: unknown {', '.join(sorted(unknown))}; expected padded, project, rows, flat")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from agentcoder.preflight import compose_config

    cfg = compose_config([
        "method=lora", f"model={args.model}", f"model.init={args.init}", f"quant={args.quant}",
        f"method.train.batch_size={args.batch_size}", f"method.train.max_length={args.max_length}",
        "method.train.report_to=[]", *args.overrides,
    ])
    from agentcoder.data import load_splits
    from agentcoder.run import seed_everything

    train = load_splits(cfg).train
    # A seeded sample, not the head: the split keeps corpus order, whose head is one category.
    examples = random.Random(cfg.seed).sample(train, min(args.examples, len(train)))
    print(f"bench: {cfg.model.name} init={args.init} quant={args.quant} examples={len(examples)} "
          f"steps={args.steps} batch={args.batch_size} max_length={args.max_length}")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.configs.split(","):
            seed_everything(cfg.seed)
            results.append(train_once(name, cfg, examples, args, Path(tmp)))
    print(f"\n{'config':<8} {'device':<6} {'steps':>5} {'tokens':>8} {'time_s':>8} {'tok/s':>9} "
          f"{'peak_GiB':>9}  settings")
    for r in results:
        print(f"{r['name']:<8} {r['device']:<6} {r['steps']:>5} {r['tokens']:>8} {r['seconds']:>8.1f} "
              f"{r['tokens_per_s']:>9.1f} {r['peak_memory_gib']:>9.2f}  packing={r['packing']} "
              f"grad_ckpt={r['gradient_checkpointing']} bf16={r['bf16']}")
    if args.json is not None:
        import json

        args.json.write_text(json.dumps(results, indent=2) + "\n")
    base = next((r for r in results if r["name"] == "padded"), None)
    for r in results:
        if base is not None and r is not base:
            print(f"speed-up {r['name']}/padded: {r['tokens_per_s'] / base['tokens_per_s']:.2f}x real tokens/s")


if __name__ == "__main__":
    main()
