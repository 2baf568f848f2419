"""Seeded, stratified, stable train/val/test splits and the nested train subsamples.

Scheme: every example gets a key sha256("split:<seed>:<id>") -- a function of its id and the
split seed only.  Within each category the examples are ordered by that key and cut at
quantiles: the first round(n*train) go to train, up to round(n*(train+val)) to val, the rest
to test.

What this guarantees:
  * Determinism: the split is a function of (the set of ids per category, seed, ratios); no
    process state (PYTHONHASHSEED, row order) enters.
  * Exact sizes: per category, |train| = round(n*train), |val| and |test| are within 1 of
    n*val and n*test -- also for tiny categories, unlike a pure per-example hash threshold
    whose sizes scatter binomially.
  * Stability: categories are split independently, so adding rows to one category never moves
    a row of another.  Within a category, adding m rows moves at most m existing rows across
    each of the two cuts, so at most 2m existing rows change split (keys never change; only
    the cut positions and the new rows' ranks shift).  Removing and re-adding rows restores
    the original split exactly, and with the same rows nothing ever moves.
A scheme with exact sizes cannot also be entirely move-free when rows are added (the cuts
must move to keep the sizes), so the bounded-movement form above is what we promise.

Subsamples (`data_fraction`) and caps (`max_examples`) take, per category, the examples with
the smallest key under a separate fraction-independent key; a smaller fraction is therefore
always a subset of a larger one (nested).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from agentcoder.data.example import Example

SPLITS = ("train", "val", "test")


def example_key(example_id: str, seed: int, purpose: str) -> str:
    """Stable per-example sort key; PURPOSE keeps the split, cap and fraction orders independent."""
    return hashlib.sha256(f"{purpose}:{seed}:{example_id}".encode()).hexdigest()


def round_half_up(x: float) -> int:
    # round() rounds half to even and 0.1*n carries float error; neither should decide a size.
    return math.floor(round(x, 9) + 0.5)


def split_sizes(n: int, ratios: dict[str, float]) -> dict[str, int]:
    """Per-split sizes for a category of N examples (cumulative rounding, so they sum to N)."""
    c1 = round_half_up(n * ratios["train"])
    c2 = max(c1, min(n, round_half_up(n * (ratios["train"] + ratios["val"]))))
    return {"train": c1, "val": c2 - c1, "test": n - c2}


def by_category(examples: Iterable[Example]) -> dict[str, list[Example]]:
    groups: dict[str, list[Example]] = defaultdict(list)
    for ex in examples:
        groups[ex.category].append(ex)
    return dict(groups)


def assign_splits(examples: list[Example], seed: int, ratios: dict[str, float]) -> dict[str, list[Example]]:
    """{"train", "val", "test"} -> examples, stratified by category; each list keeps input order."""
    where: dict[str, str] = {}
    for group in by_category(examples).values():
        ranked = sorted(group, key=lambda e: example_key(e.id, seed, "split"))
        sizes = split_sizes(len(ranked), ratios)
        cut1, cut2 = sizes["train"], sizes["train"] + sizes["val"]
        for i, ex in enumerate(ranked):
            where[ex.id] = "train" if i < cut1 else "val" if i < cut2 else "test"
    out: dict[str, list[Example]] = {name: [] for name in SPLITS}
    for ex in examples:
        out[where[ex.id]].append(ex)
    return out


def take_smallest(examples: list[Example], count: int, seed: int, purpose: str) -> list[Example]:
    """The COUNT examples with the smallest key, in input order (nested as COUNT grows)."""
    keep = {e.id for e in sorted(examples, key=lambda e: example_key(e.id, seed, purpose))[:count]}
    return [e for e in examples if e.id in keep]


def fraction_count(n: int, fraction: float) -> int:
    """How many of N train examples a fraction keeps: rounded, at least 1 when N > 0."""
    return 0 if n == 0 else min(n, max(1, round_half_up(fraction * n)))


def subsample(examples: list[Example], fraction: float, seed: int) -> list[Example]:
    """Per category, the fraction_count smallest under a fraction-independent key: nested in FRACTION."""
    if fraction >= 1.0:
        return list(examples)
    keep: set[str] = set()
    for group in by_category(examples).values():
        count = fraction_count(len(group), fraction)
        keep.update(e.id for e in take_smallest(group, count, seed, "fraction"))
    return [e for e in examples if e.id in keep]


def cap_per_category(examples: list[Example], max_examples: int | None, seed: int) -> list[Example]:
    """At most MAX_EXAMPLES per category (null: all), chosen by key so that caps are nested too."""
    if max_examples is None:
        return list(examples)
    out: list[Example] = []
    for group in by_category(examples).values():
        out.extend(take_smallest(group, max_examples, seed, "cap"))
    keep = {e.id for e in out}
    return [e for e in examples if e.id in keep]


def _plain(e: Example) -> dict[str, Any]:
    # Same content as Example.to_dict() without dataclasses.asdict's deep copy (20x faster here).
    return {"id": e.id, "source": e.source, "category": e.category, "messages": e.messages, "tools": e.tools,
            "answer": [{"name": c.name, "arguments": c.arguments} for c in e.answer]}


def content_hash(examples: Iterable[Example]) -> str:
    """sha256 of the canonical JSON of the examples in id order: equal hash, equal data."""
    rows = [_plain(e) for e in sorted(examples, key=lambda e: e.id)]
    blob = json.dumps(rows, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def category_sizes(splits: dict[str, list[Example]]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for name, examples in splits.items():
        for cat, group in by_category(examples).items():
            out.setdefault(cat, dict.fromkeys(SPLITS, 0))[name] = len(group)
    return dict(sorted(out.items()))


def split_info(splits: dict[str, list[Example]], **extra: Any) -> dict[str, Any]:
    """The record of a split for run.json: sizes, per-category sizes, content hashes, plus EXTRA."""
    return {
        **extra,
        "sizes": {name: len(splits[name]) for name in SPLITS},
        "category_sizes": category_sizes(splits),
        "content_sha256": {name: content_hash(splits[name]) for name in SPLITS},
    }
