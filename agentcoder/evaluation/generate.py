"""Fast batched greedy generation: batches by a token budget, left padding, finished rows dropped.

A batch holds rows of similar prompt length (longest first, so an out-of-memory shows up at once)
while rows x (longest prompt + max_new_tokens) stays within the token budget: short prompts go in
wide batches, long prompts in narrow ones, and no batch pads many short rows to one long prompt.
Generation runs in chunks of new tokens; between chunks the rows that reached EOS leave the batch
(their cache rows are dropped), so a batch is not held open for its slowest row at full width.
Progress counts examples and generated tokens, and is redrawn every few seconds even mid-prefill.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

CPU_BATCH = 8
CPU_TOKEN_BUDGET = 4096  # fp32 on CPU: narrow first batches, so the bar moves in seconds
# bf16 on a CPU with bf16 units: prefill runs ~2,000 tokens/s, while decoding one row is bound by
# reading the weights (~34 ms a step at 1 row, ~66 ms at 16), so wide batches pay. 50 test
# examples took 80.0 s at 8 rows / 4096 tokens and 53.9 s at 16 / 16384 (docs/benchmarks.md).
CPU_BF16_BATCH = 16
CPU_BF16_TOKEN_BUDGET = 16384
GPU_BATCH = 64
GPU_TOKEN_BUDGET = 65536
CHUNK_TOKENS = 32  # new tokens per generate() call between drops of finished rows
_REFRESH_S = 2.0  # the progress line is redrawn at least this often while tokens are produced


# Every field through which a checkpoint's generation_config.json could change what is decoded or
# sampled, set explicitly: transformers fills each field left None from the checkpoint (a Qwen2.5
# instruct checkpoint ships repetition_penalty > 1, which would penalise the tokens a tool call copies
# from the prompt, and, in RL, sample from another distribution than the one the log-probs score).
# min_new_tokens=0 also overrides a checkpoint's min_length (transformers derives min_length from it).
NEUTRAL_GENERATION = {
    "num_beams": 1, "top_p": 1.0, "typical_p": 1.0, "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0, "repetition_penalty": 1.0, "encoder_repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0, "length_penalty": 1.0, "renormalize_logits": False,
    "suppress_tokens": [], "begin_suppress_tokens": [],
    "min_new_tokens": 0, "encoder_no_repeat_ngram_size": 0,
}
# Fields that only sampling reads: set when sampling, left unset when greedy (transformers warns on
# every generate() call about a sampling-only field set for greedy decoding, and greedy ignores them).
NEUTRAL_SAMPLING = {"top_k": 0, "min_p": 0.0}


def generation_settings(sampling: dict[str, Any] | None = None) -> dict[str, Any]:
    """The decoding settings of a run, from its config alone: greedy, or SAMPLING's do_sample /
    temperature / top_p on top of neutral values for every other sampling and penalty field."""
    settings = {**NEUTRAL_GENERATION, "do_sample": False, "temperature": 1.0, **(sampling or {})}
    if settings["do_sample"]:
        settings = {**NEUTRAL_SAMPLING, **settings}
    else:
        settings["temperature"] = 1.0  # unused when greedy; 1.0 keeps transformers from warning
    return settings


@dataclass
class Generation:
    index: int  # position in the input list
    text: str
    prompt_tokens: int
    output_tokens: int
    seconds: float  # the batch's wall time divided by its size (for a batch of one: its latency)
    batch_size: int


def _cpu_half(device: Any, dtype: Any) -> bool:
    return not str(device).startswith("cuda") and str(dtype).removeprefix("torch.") in ("bfloat16", "float16")


def resolve_batch_size(batch_size: int | str, device: Any, dtype: Any = None) -> int:
    if batch_size != "auto":
        return int(batch_size)
    if str(device).startswith("cuda"):
        return GPU_BATCH
    return CPU_BF16_BATCH if _cpu_half(device, dtype) else CPU_BATCH


def resolve_token_budget(token_budget: int | str | None, device: Any, dtype: Any = None) -> int | None:
    if token_budget is None or token_budget != "auto":
        return None if token_budget is None else int(token_budget)
    if str(device).startswith("cuda"):
        return GPU_TOKEN_BUDGET
    return CPU_BF16_TOKEN_BUDGET if _cpu_half(device, dtype) else CPU_TOKEN_BUDGET


def plan_batches(
    lengths: Sequence[int],
    *,
    max_new_tokens: int,
    max_rows: int,
    token_budget: int | None,
    solo: Collection[int] = (),
) -> list[list[int]]:
    """Indices grouped into batches of similar length, longest first, each within the budget.

    A row that alone exceeds the budget still gets a batch of its own. SOLO indices each get a
    batch of one, last (when the model is warm), for single-request latency.
    """
    order = sorted((i for i in range(len(lengths)) if i not in solo), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    for i in order:
        if batches:
            cur = batches[-1]
            width = lengths[cur[0]] + max_new_tokens  # the first row is the longest
            fits = token_budget is None or (len(cur) + 1) * width <= token_budget
            if len(cur) < max_rows and fits:
                cur.append(i)
                continue
        batches.append([i])
    return batches + [[i] for i in sorted(solo)]


def _model_device(model: Any) -> Any:
    return next(model.parameters()).device


def generate_batched(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    batch_size: int | str = "auto",
    token_budget: int | str | None = "auto",
    solo: Collection[int] = (),
    progress: bool = True,
    desc: str = "generate",
    sampling: dict[str, Any] | None = None,
) -> Iterator[Generation]:
    """Yield one Generation per prompt (in batch order, each with its input index).

    Greedy unless SAMPLING gives model.generate sampling settings (e.g. do_sample, temperature, top_p).
    """
    from tqdm.auto import tqdm

    device = _model_device(model)
    dtype = getattr(model, "dtype", None)
    # The prompts already hold the chat template's special tokens.
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    batches = plan_batches(
        [len(e) for e in encoded], max_new_tokens=max_new_tokens,
        max_rows=resolve_batch_size(batch_size, device, dtype),
        token_budget=resolve_token_budget(token_budget, device, dtype), solo=set(solo),
    )  # fmt: skip
    eos_ids = stop_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
    was_training = model.training
    model.eval()
    bar = tqdm(total=len(prompts), desc=desc, disable=not progress, unit="ex")
    meter = _TokenMeter(bar)
    # A long prompt's prefill sends no token for a while: redraw anyway so the clock keeps moving.
    stop = threading.Event()
    if progress:
        threading.Thread(target=_heartbeat, args=(bar, stop), daemon=True).start()
    try:
        for batch in batches:
            prefill = len(batch) * max(len(encoded[i]) for i in batch)
            bar.set_postfix_str(f"{meter.tokens} new tokens, prefill {prefill} tokens", refresh=progress)
            t0 = time.perf_counter()
            new = _generate_rows(model, [encoded[i] for i in batch], max_new_tokens, eos_ids, pad_id, device, meter,
                                 sampling)
            elapsed = time.perf_counter() - t0
            for row, i in enumerate(batch):
                yield Generation(
                    index=i,
                    text=tokenizer.decode(new[row], skip_special_tokens=True),
                    prompt_tokens=len(encoded[i]),
                    output_tokens=len(new[row]),
                    seconds=elapsed / len(batch),
                    batch_size=len(batch),
                )
            bar.update(len(batch))
    finally:
        stop.set()
        bar.close()
        if was_training:
            model.train()


def _generate_rows(
    model: Any, seqs: list[list[int]], max_new_tokens: int, eos_ids: list[int], pad_id: int, device: Any,
    meter: _TokenMeter, sampling: dict[str, Any] | None = None,
) -> list[list[int]]:
    """Continuations of SEQS (cut at the first stop token), finished rows dropped between chunks; greedy
    unless SAMPLING gives model.generate sampling settings."""
    import torch
    from transformers import GenerationConfig

    config = GenerationConfig(**generation_settings(sampling), eos_token_id=eos_ids, pad_token_id=pad_id,
                              return_dict_in_generate=True)
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):  # left padding keeps every prompt's end aligned
        ids[row, width - len(seq) :] = torch.tensor(seq)
        mask[row, width - len(seq) :] = 1
    ids, mask = ids.to(device), mask.to(device)
    outputs: list[list[int]] = [[] for _ in seqs]
    live = list(range(len(seqs)))  # input rows still generating, in tensor row order
    cache = None
    produced = 0
    with torch.inference_mode():
        while live and produced < max_new_tokens:
            step = min(CHUNK_TOKENS, max_new_tokens - produced)
            meter.rows = len(live)
            resume = {} if cache is None else {_cache_kwarg(): cache}
            config.max_new_tokens = step
            out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config, streamer=meter, **resume)
            new = out.sequences[:, ids.shape[1] :]
            produced += step
            keep: list[int] = []
            for pos, tokens in enumerate(new.tolist()):
                done, tokens = _until_stop(tokens, eos_ids)
                outputs[live[pos]].extend(tokens)
                if not done and new.shape[1] == step:
                    keep.append(pos)
            if not keep or produced >= max_new_tokens:
                break
            cache = out.cache if hasattr(out, "cache") else out.past_key_values
            if len(keep) < len(live):
                # Rows that stopped leave the batch: their cache rows go with them.
                cache.batch_select_indices(torch.tensor(keep, device=device))
            sel = torch.tensor(keep, device=device)
            ids = out.sequences.index_select(0, sel)
            mask = torch.cat([mask, torch.ones_like(new)], dim=1).index_select(0, sel)
            live = [live[p] for p in keep]
    return outputs


def _cache_kwarg() -> str:
    # transformers 5.24 renamed generate()'s `past_key_values` to `cache` (the old name warns).
    from transformers.generation import utils

    return "cache" if "cache" in getattr(utils, "ALL_CACHE_NAMES", ()) else "past_key_values"


def _heartbeat(bar: Any, stop: threading.Event) -> None:
    while not stop.wait(_REFRESH_S):
        bar.refresh()


class _TokenMeter:
    """A generate() streamer that counts new tokens and keeps the progress line moving mid-batch."""

    def __init__(self, bar: Any):
        self.bar = bar
        self.rows = 0
        self.tokens = 0
        self._calls = 0
        self._last = time.monotonic()

    def put(self, value: Any) -> None:
        if value.dim() > 1:  # the prompt, sent once per generate() call
            return
        self.tokens += self.rows
        now = time.monotonic()
        if now - self._last >= _REFRESH_S:
            self._last = now
            self.bar.set_postfix_str(f"{self.tokens} new tokens", refresh=True)

    def end(self) -> None:
        self.bar.set_postfix_str(f"{self.tokens} new tokens", refresh=False)


def stop_ids(model: Any, tokenizer: Any) -> list[int]:
    ids: list[int] = []
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for cand in (tokenizer.eos_token_id, gen_eos):
        for i in cand if isinstance(cand, list) else [cand]:
            if i is not None and i not in ids:
                ids.append(int(i))
    if not ids:
        raise ValueError("the tokenizer has no eos token: generation would never stop")
    return ids


def _until_stop(tokens: list[int], stop_ids: list[int]) -> tuple[bool, list[int]]:
    """(stopped, the tokens before the first stop token)."""
    for pos, tok in enumerate(tokens):
        if tok in stop_ids:
            return True, tokens[:pos]
    return False, tokens
