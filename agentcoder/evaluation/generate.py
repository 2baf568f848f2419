"""Fast batched greedy generation: length-sorted batches, left padding, stop at EOS."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

CPU_BATCH = 8
GPU_BATCH = 64


@dataclass
class Generation:
    index: int  # position in the input list
    text: str
    prompt_tokens: int
    output_tokens: int
    latency_s: float  # the batch's wall time divided by its size


def resolve_batch_size(batch_size: int | str, device: Any) -> int:
    if batch_size != "auto":
        return int(batch_size)
    return GPU_BATCH if str(device).startswith("cuda") else CPU_BATCH


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length, longest first (so OOM shows up at once)."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def _model_device(model: Any) -> Any:
    return next(model.parameters()).device


def generate_batched(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    batch_size: int | str = "auto",
    progress: bool = True,
    desc: str = "generate",
    sampling: dict[str, Any] | None = None,
) -> Iterator[Generation]:
    """Yield one Generation per prompt (in batch order, each with its input index).

    Greedy unless SAMPLING gives model.generate sampling settings (e.g. do_sample, temperature, top_p).
    """
    import torch
    from tqdm.auto import tqdm

    device = _model_device(model)
    size = resolve_batch_size(batch_size, device)
    # The prompts already hold the chat template's special tokens.
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    eos_ids = _stop_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
    was_training = model.training
    model.eval()
    bar = tqdm(total=len(prompts), desc=desc, disable=not progress, unit="ex")
    try:
        for batch in length_sorted_batches([len(e) for e in encoded], size):
            width = max(len(encoded[i]) for i in batch)
            ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):  # left padding keeps every prompt's end aligned
                seq = encoded[i]
                ids[row, width - len(seq) :] = torch.tensor(seq)
                mask[row, width - len(seq) :] = 1
            t0 = time.perf_counter()
            with torch.inference_mode():
                out = model.generate(
                    input_ids=ids.to(device),
                    attention_mask=mask.to(device),
                    max_new_tokens=max_new_tokens,
                    **{"do_sample": False, "num_beams": 1, **(sampling or {})},
                    eos_token_id=eos_ids,
                    pad_token_id=pad_id,
                )
            elapsed = time.perf_counter() - t0
            new = out[:, width:].tolist()
            for row, i in enumerate(batch):
                tokens = _until_stop(new[row], eos_ids)
                yield Generation(
                    index=i,
                    text=tokenizer.decode(tokens, skip_special_tokens=True),
                    prompt_tokens=len(encoded[i]),
                    output_tokens=len(tokens),
                    latency_s=elapsed / len(batch),
                )
            bar.update(len(batch))
    finally:
        bar.close()
        if was_training:
            model.train()


def _stop_ids(model: Any, tokenizer: Any) -> list[int]:
    ids: list[int] = []
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for cand in (tokenizer.eos_token_id, gen_eos):
        for i in cand if isinstance(cand, list) else [cand]:
            if i is not None and i not in ids:
                ids.append(int(i))
    if not ids:
        raise ValueError("the tokenizer has no eos token: generation would never stop")
    return ids


def _until_stop(tokens: list[int], stop_ids: list[int]) -> list[int]:
    for pos, tok in enumerate(tokens):
        if tok in stop_ids:
            return tokens[:pos]
    return tokens
