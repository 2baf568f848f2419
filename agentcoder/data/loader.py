"""`load_splits(cfg)`: the corpus named by `cfg.data`, normalised, capped, split and subsampled."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from agentcoder.data.example import DataError, Example
from agentcoder.data.splits import assign_splits, cap_per_category, content_hash, split_info, subsample


@dataclass
class Splits:
    """The three splits (train already subsampled to `data_fraction`) and their record for run.json."""

    train: list[Example]
    val: list[Example]
    test: list[Example]
    info: dict[str, Any] = field(default_factory=dict)


def _load_bfcl(data: DictConfig, cache_dir: str | None) -> tuple[list[Example], str]:
    from agentcoder.assets import fetch_wheel
    from agentcoder.data.bfcl import CATEGORIES, load_bfcl

    emb = data.embedded
    if emb is None:
        raise DataError("data.embedded is missing for the embedded BFCL corpus "
                        "(package, version, sha256, member)")
    categories = list(data.categories) or list(CATEGORIES)
    unknown = [c for c in categories if c not in CATEGORIES]
    if unknown:
        raise DataError(f"data.categories has {unknown}; BFCL categories are: {', '.join(CATEGORIES)}")
    # AssetError (offline, empty cache, bad checksum) already says what to fetch: let it through.
    wheel = fetch_wheel(emb.package, emb.version, emb.sha256, cache_dir)
    examples = load_bfcl(wheel, emb.member or "bfcl_eval/data", categories, emb.sha256)
    return examples, f"{emb.package}=={emb.version}"


def _load_xlam(data: DictConfig, cache_dir: str | None) -> tuple[list[Example], str]:
    from agentcoder.data.xlam import load_xlam

    hub_id = data.hub_id or "Salesforce/xlam-function-calling-60k"
    examples = load_xlam(hub_id, data.path)
    if data.categories:
        examples = [e for e in examples if e.category in set(data.categories)]
    return examples, (f"file:{data.path}" if data.path else hub_id)


_READERS = {"bfcl": _load_bfcl, "xlam60k": _load_xlam}


def load_examples(data: DictConfig, cache_dir: str | None = None) -> tuple[list[Example], str]:
    """All examples of the corpus `data.name` and its version string (e.g. "bfcl-eval==2026.3.23")."""
    reader = _READERS.get(data.name)
    if reader is None:
        raise DataError(f"data={data.name!r} has no reader; expected one of {', '.join(_READERS)}")
    return reader(data, cache_dir)


def load_splits(cfg: DictConfig) -> Splits:
    """Train/val/test of the run config CFG (uses cfg.data, cfg.data_fraction, cfg.cache_dir)."""
    data = cfg.data
    cache_dir = OmegaConf.select(cfg, "cache_dir", default=None) or None
    fraction = float(OmegaConf.select(cfg, "data_fraction", default=1.0))
    examples, corpus = load_examples(data, cache_dir)
    ids = [e.id for e in examples]
    if len(set(ids)) != len(ids):
        raise DataError(f"{corpus} has duplicate example ids; splits are keyed by id")
    if not examples:
        raise DataError(f"{corpus} gave no examples for data.categories={list(data.categories)}")
    capped = cap_per_category(examples, data.max_examples, data.split_seed)
    ratios = {k: float(data.split[k]) for k in ("train", "val", "test")}
    parts = assign_splits(capped, data.split_seed, ratios)
    full_train = parts["train"]
    parts["train"] = subsample(full_train, fraction, data.split_seed)
    info = split_info(
        parts,
        corpus=corpus,
        dataset=data.name,
        corpus_sha256=content_hash(examples),
        split_seed=data.split_seed,
        ratios=ratios,
        max_examples=data.max_examples,
        data_fraction=fraction,
        train_full_size=len(full_train),
    )
    return Splits(parts["train"], parts["val"], parts["test"], info)
