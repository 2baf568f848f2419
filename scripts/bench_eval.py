"""Benchmark: the project's batched evaluator against a per-example `generate` loop, in one process.

    python scripts/bench_eval.py --examples 32                       # embedded SmolLM2, CPU
    python scripts/bench_eval.py --examples 256 --init random        # GPU: architecture only

Both paths see the same examples, prompts and greedy settings; the script prints examples/s for
each, the speed-up ratio, and how many verdicts agree (greedy decoding should agree on all but
rare numerical ties between padded and unpadded batches).
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def per_example_loop(model, tokenizer, prompts: list[str], max_new_tokens: int) -> tuple[list[str], float]:
    """The naive reference: one unpadded generate() call per example."""
    import torch

    from agentcoder.evaluation.generate import _stop_ids, _until_stop

    stop = _stop_ids(model, tokenizer)
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
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", default="auto")
    ap.add_argument("--split", default="test")
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

    loop_texts, loop_s = per_example_loop(model, tok, prompts, args.max_new_tokens)
    result = evaluate(model, tok, examples, tool_format=cfg.model.tool_format, max_new_tokens=args.max_new_tokens,
                      batch_size=args.batch_size, progress=False)
    batch_s = result.metrics["overall"]["wall_time_s"]

    loop_verdicts = [judge(ex, text)["correct"] for ex, text in zip(examples, loop_texts, strict=True)]
    batch_verdicts = [row["correct"] for row in result.rows]
    same_text = sum(a == row["raw"] for a, row in zip(loop_texts, result.rows, strict=True))
    same_verdict = sum(a == b for a, b in zip(loop_verdicts, batch_verdicts, strict=True))
    n = len(examples)
    print(f"per-example loop : {n / loop_s:8.2f} ex/s  ({1000 * loop_s / n:8.1f} ms/ex)")
    print(f"batched evaluator: {n / batch_s:8.2f} ex/s  ({1000 * batch_s / n:8.1f} ms/ex)")
    print(f"speed-up ratio   : {loop_s / batch_s:8.2f}x")
    print(f"same verdicts    : {same_verdict}/{n}   same text: {same_text}/{n}")
    print(f"exact match (loop / batched): {sum(loop_verdicts) / n:.3f} / {sum(batch_verdicts) / n:.3f}")
    sys.stdout.flush()
    os._exit(0 if same_verdict >= n - max(1, n // 20) else 1)


if __name__ == "__main__":
    main()
