"""Benchmark: evaluation batching strategies on the same examples, back to back in one process.

    python scripts/bench_eval_batching.py                     # make run's 50 test examples, CPU
    python scripts/bench_eval_batching.py --limit 20 --arms fixed8,budget

Arms: `fixed8` is the old evaluator (8 rows per batch sorted longest first, one generate() call
per batch until every row is done); `budget` batches by eval.token_budget; `budget+drop` also
generates in chunks and drops finished rows between them (the evaluator's default). Prints wall
time, examples/s, exact match and how many verdicts agree with the first arm (greedy decoding may
differ on rare numerical ties between differently padded batches).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

# Run as a file, the script must still import this checkout's agentcoder (not an installed one).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=50)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--arms", default="fixed8,budget+drop")
    ap.add_argument("--token-budget", default="auto")
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides")
    args = ap.parse_args()

    import torch

    from agentcoder.data import load_splits
    from agentcoder.evaluation import generate as gen_mod
    from agentcoder.evaluation.evaluator import evaluate, select_examples
    from agentcoder.models import load_model
    from agentcoder.preflight import compose_config

    cfg = compose_config(list(args.overrides))
    examples = select_examples(load_splits(cfg).test, args.limit)
    loaded = load_model(cfg)
    model, tok = loaded.model, loaded.tokenizer
    budget = args.token_budget if args.token_budget == "auto" else int(args.token_budget)
    print(f"model={loaded.info.get('label')} examples={len(examples)} max_new_tokens={args.max_new_tokens} "
          f"threads={torch.get_num_threads()} load={os.getloadavg()[0]:.1f}", flush=True)
    evaluate(model, tok, examples[:2], tool_format=cfg.model.tool_format, max_new_tokens=4, progress=False)

    arms = {
        "fixed8": dict(batch_size=8, token_budget=None, chunk=args.max_new_tokens),
        "budget": dict(batch_size="auto", token_budget=budget, chunk=args.max_new_tokens),
        "budget+drop": dict(batch_size="auto", token_budget=budget, chunk=gen_mod.CHUNK_TOKENS),
        "fixed8+drop": dict(batch_size=8, token_budget=None, chunk=gen_mod.CHUNK_TOKENS),
    }
    first = None
    for name in args.arms.split(","):
        arm = arms[name]
        gen_mod.CHUNK_TOKENS = arm["chunk"]
        load0 = os.getloadavg()[0]
        t0, c0 = time.perf_counter(), time.process_time()
        result = evaluate(model, tok, examples, tool_format=cfg.model.tool_format,
                          max_new_tokens=args.max_new_tokens, batch_size=arm["batch_size"],
                          token_budget=arm["token_budget"], progress=False)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        verdicts = [r["correct"] for r in result.rows]
        first = first or verdicts
        same = sum(a == b for a, b in zip(first, verdicts, strict=True))
        em = result.metrics["overall"]["exact_match"]
        # CPU seconds (all threads) are less inflated than wall time when other jobs share the cores.
        print(f"{name:12s} wall {wall:7.1f} s  cpu {cpu:7.1f} s  {len(examples) / wall:6.3f} ex/s  EM {em:.3f}  "
              f"same verdicts as first arm {same}/{len(examples)}  load {load0:.1f}->{os.getloadavg()[0]:.1f}",
              flush=True)
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
