"""Benchmark: the project's batched evaluator against a per-example `generate` loop, in one process.

    python scripts/bench_eval.py --examples 32                       # embedded SmolLM2, CPU
    python scripts/bench_eval.py --examples 256 --init random        # GPU: architecture only
    python scripts/bench_eval.py --examples 128 --loop-examples 16 --json /tmp/eval.json

Both paths see the same examples, prompts and greedy settings; the script prints examples/s for
each, the speed-up ratio, and how many verdicts agree (greedy decoding should agree on all but
rare numerical ties between padded and unpadded batches).  `--loop-examples K` times the
per-example loop on the first K examples only (it is the slow side: one example at a time, so its
examples/s does not depend on how many are timed); the ratio is then examples/s against examples/s
and verdicts are compared on those K.  `--json PATH` also writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's agentcoder, not another editable install


def per_example_loop(model, tokenizer, prompts: list[str], max_new_tokens: int) -> tuple[list[str], float]:
    """The naive reference: one unpadded generate() call per example."""
    import torch

    from agentcoder.evaluation.generate import _until_stop, stop_ids

    stop = stop_ids(model, tokenizer)
    device = next(model.parameters()).device
    texts = []
    t0 = time.perf_counter()
    for prompt in prompts:
        ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"].to(device)
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                 do_sample=False, eos_token_id=stop, pad_token_id=stop[0])
        texts.append(tokenizer.decode(_until_stop(out[0, ids.shape[1]:].tolist(), stop)[1], skip_special_tokens=True))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return texts, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--quant", default="none")
    ap.add_argument("--init", default="pretrained", choices=["pretrained", "random"])
    ap.add_argument("--examples", type=int, default=32)
    ap.add_argument("--loop-examples", type=int, default=None,
                    help="time the per-example loop on the first K examples only (default: all)")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", default="auto")
    ap.add_argument("--split", default="test")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. model.gguf_path=/tmp/m/x.gguf")
    args = ap.parse_args()

    import torch

    from agentcoder.data import load_splits
    from agentcoder.data.prompts import render_prompt
    from agentcoder.evaluation.evaluator import evaluate, judge
    from agentcoder.models import load_model
    from agentcoder.preflight import compose_config

    cfg = compose_config([f"model={args.model}", f"quant={args.quant}", f"model.init={args.init}", *args.overrides])
    torch.manual_seed(0)
    examples = getattr(load_splits(cfg), args.split)[: args.examples]
    loaded = load_model(cfg)
    model, tok = loaded.model, loaded.tokenizer
    prompts = [render_prompt(ex, tok, cfg.model.tool_format) for ex in examples]
    print(f"model={loaded.info.get('label')} device={loaded.info.get('device')} examples={len(examples)} "
          f"max_new_tokens={args.max_new_tokens} torch={torch.__version__} threads={torch.get_num_threads()}")

    # Warm-up both paths once so neither pays for lazy initialisation.
    per_example_loop(model, tok, prompts[:1], 4)
    evaluate(model, tok, examples[:2], tool_format=cfg.model.tool_format, max_new_tokens=4, progress=False)

    k = len(examples) if args.loop_examples is None else max(1, min(args.loop_examples, len(examples)))
    loop_texts, loop_s = per_example_loop(model, tok, prompts[:k], args.max_new_tokens)
    result = evaluate(model, tok, examples, tool_format=cfg.model.tool_format, max_new_tokens=args.max_new_tokens,
                      batch_size=args.batch_size, progress=False)
    batch_s = result.metrics["overall"]["wall_time_s"]

    loop_verdicts = [judge(ex, text)["correct"] for ex, text in zip(examples[:k], loop_texts, strict=True)]
    batch_verdicts = [row["correct"] for row in result.rows]
    same_text = sum(a == row["raw"] for a, row in zip(loop_texts, result.rows, strict=False))
    same_verdict = sum(a == b for a, b in zip(loop_verdicts, batch_verdicts, strict=False))
    n = len(examples)
    figures = {
        "model": loaded.info.get("label"), "device": str(loaded.info.get("device")), "examples": n,
        "loop_examples": k, "max_new_tokens": args.max_new_tokens,
        "loop_examples_per_s": k / loop_s, "batched_examples_per_s": n / batch_s,
        "loop_ms_per_example": 1000 * loop_s / k, "batched_ms_per_example": 1000 * batch_s / n,
        "speedup": (loop_s / k) / (batch_s / n), "same_verdicts": same_verdict, "same_text": same_text,
        "loop_exact_match": sum(loop_verdicts) / k, "batched_exact_match": sum(batch_verdicts) / n,
    }
    print(f"per-example loop : {k / loop_s:8.2f} ex/s  ({1000 * loop_s / k:8.1f} ms/ex)  on {k} examples")
    print(f"batched evaluator: {n / batch_s:8.2f} ex/s  ({1000 * batch_s / n:8.1f} ms/ex)  on {n} examples")
    print(f"speed-up ratio   : {figures['speedup']:8.2f}x")
    print(f"same verdicts    : {same_verdict}/{k}   same text: {same_text}/{k}")
    print(f"exact match (loop / batched): {figures['loop_exact_match']:.3f} / {figures['batched_exact_match']:.3f}")
    if args.json is not None:
        from agentcoder.tracking.records import atomic_write_json

        atomic_write_json(args.json, figures)
    sys.stdout.flush()
    os._exit(0 if same_verdict >= k - max(1, k // 20) else 1)

if __name__ == "__main__":
    main()
