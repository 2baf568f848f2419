"""Splits: exact per-category sizes, determinism across processes, the stability bound, nesting."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from agentcoder.data.example import Example
from agentcoder.data.splits import (
    assign_splits,
    cap_per_category,
    content_hash,
    fraction_count,
    split_sizes,
    subsample,
)

RATIOS = {"train": 0.8, "val": 0.1, "test": 0.1}
# The real BFCL category sizes, tiny ones included, plus a few degenerate ones.
SIZES = {"simple_python": 400, "live_multiple": 1053, "live_parallel": 16, "live_parallel_multiple": 24,
         "irrelevance": 240, "live_irrelevance": 884, "one": 1, "two": 2, "seven": 7, "eleven": 11}


def rows(sizes: dict[str, int], start: int = 0) -> list[Example]:
    return [Example(f"{cat}_{i}", "test", cat, [], [], [])
            for cat, n in sizes.items() for i in range(start, start + n)]


def where(parts: dict[str, list[Example]]) -> dict[str, str]:
    return {e.id: name for name, exs in parts.items() for e in exs}


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_sizes_within_one_of_the_ratio_per_category(seed):
    parts = assign_splits(rows(SIZES), seed, RATIOS)
    for cat, n in SIZES.items():
        got = {name: sum(e.category == cat for e in exs) for name, exs in parts.items()}
        assert sum(got.values()) == n
        for name, share in RATIOS.items():
            assert abs(got[name] - share * n) <= 1, (cat, name, got)
    assert split_sizes(16, RATIOS) == {"train": 13, "val": 1, "test": 2}


def test_identical_in_another_process():
    here = where(assign_splits(rows(SIZES), 3, RATIOS))
    code = (
        "import json, sys; sys.path.insert(0, 'tests');"
        "from test_data_splits import rows, where, SIZES, RATIOS;"
        "from agentcoder.data.splits import assign_splits;"
        "print(json.dumps(where(assign_splits(rows(SIZES)[::-1], 3, RATIOS))))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert json.loads(out.stdout) == here


@pytest.mark.parametrize("added", [1, 2, 5, 30])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_adding_rows_moves_no_other_category_and_at_most_2m_of_its_own(added, seed):
    before = where(assign_splits(rows(SIZES), seed, RATIOS))
    grown = rows(SIZES) + rows({"live_parallel": added}, start=1000)
    after = where(assign_splits(grown, seed, RATIOS))
    moved = [i for i in before if before[i] != after[i]]
    assert all(i.startswith("live_parallel_") and not i.startswith("live_parallel_multiple") for i in moved)
    assert len(moved) <= 2 * added
    # The split is a function of the set of ids: dropping the added rows restores it exactly.
    assert where(assign_splits(grown[: len(before)], seed, RATIOS)) == before


def test_stability_bound_holds_for_every_single_insertion():
    base = rows({"c": 16})
    before = where(assign_splits(base, 0, RATIOS))
    for k in range(200):
        after = where(assign_splits(base + [Example(f"new_{k}", "test", "c", [], [], [])], 0, RATIOS))
        assert sum(before[i] != after[i] for i in before) <= 2


def test_seed_changes_the_split():
    assert where(assign_splits(rows(SIZES), 0, RATIOS)) != where(assign_splits(rows(SIZES), 1, RATIOS))


def test_fractions_are_nested_per_category():
    train = assign_splits(rows(SIZES), 0, RATIOS)["train"]
    sets = {f: {e.id for e in subsample(train, f, 0)} for f in (0.01, 0.1, 0.5, 1.0)}
    assert sets[0.01] <= sets[0.1] <= sets[0.5] <= sets[1.0] == {e.id for e in train}
    for cat in SIZES:
        n = sum(e.category == cat for e in train)
        assert sum(i.rsplit("_", 1)[0] == cat for i in sets[0.1]) == fraction_count(n, 0.1)
    assert fraction_count(1, 0.01) == 1 and fraction_count(0, 0.5) == 0 and fraction_count(30, 0.1) == 3


def test_cap_is_per_category_and_nested():
    small = {e.id for e in cap_per_category(rows(SIZES), 5, 0)}
    large = {e.id for e in cap_per_category(rows(SIZES), 9, 0)}
    assert small <= large
    assert len(small) == sum(min(5, n) for n in SIZES.values())
    assert cap_per_category(rows(SIZES), None, 0) == rows(SIZES)


def test_content_hash_ignores_order_and_sees_content():
    exs = rows({"a": 5})
    assert content_hash(exs) == content_hash(exs[::-1])
    changed = rows({"a": 5})
    changed[2].messages.append({"role": "user", "content": "x"})
    assert content_hash(changed) != content_hash(exs)
