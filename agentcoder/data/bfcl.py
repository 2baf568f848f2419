"""BFCL v4 single-turn categories, read straight out of the pinned `bfcl-eval` wheel.

Layout inside the wheel (checked against bfcl-eval 2026.3.23): questions in
`<member>/BFCL_v4_<cat>.json`, ground truth in `<member>/possible_answer/BFCL_v4_<cat>.json`.
Both are JSON Lines despite the suffix.  Question rows: {"id", "question": [[messages of the
single turn]], "function": [tool schemas]}; answer rows: {"id", "ground_truth": [{func: {arg:
[acceptable values]}}]}.  The irrelevance categories have no answer file: no call is expected.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

from agentcoder.data.example import Example, GoldCall
from agentcoder.data.schema import normalise_bfcl_tool

CALL_CATEGORIES = (
    "simple_python", "multiple", "parallel", "parallel_multiple",
    "live_simple", "live_multiple", "live_parallel", "live_parallel_multiple",
)
NO_CALL_CATEGORIES = ("irrelevance", "live_irrelevance")
CATEGORIES = CALL_CATEGORIES + NO_CALL_CATEGORIES
SOURCE = "bfcl"
# Bump when the normalised form changes, so cached JSON from an older parser is not reused.
_PARSER_VERSION = 1


class BfclFormatError(ValueError):
    """The wheel's data does not look like BFCL v4."""


def _jsonl(blob: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in blob.decode("utf-8").splitlines() if line.strip()]


def parse_category(category: str, questions: bytes, answers: bytes | None) -> list[Example]:
    """Normalise one category's question rows (and its answer rows, if the category has calls)."""
    gold: dict[str, list[GoldCall]] = {}
    if answers is not None:
        for row in _jsonl(answers):
            gold[row["id"]] = [GoldCall(name, dict(args)) for call in row["ground_truth"]
                               for name, args in call.items()]
    examples = []
    for row in _jsonl(questions):
        turns = row["question"]
        if len(turns) != 1:
            raise BfclFormatError(f"{row['id']}: expected one turn, found {len(turns)}")
        if answers is not None and row["id"] not in gold:
            raise BfclFormatError(f"{row['id']}: no ground truth in the answer file")
        examples.append(Example(
            id=row["id"], source=SOURCE, category=category,
            messages=[{"role": m["role"], "content": m["content"]} for m in turns[0]],
            tools=[normalise_bfcl_tool(t) for t in row["function"]],
            answer=gold.get(row["id"], []),
        ))
    return examples


def read_wheel(wheel: Path, member: str, categories: list[str] | tuple[str, ...]) -> list[Example]:
    """Parse CATEGORIES from the wheel's data directory MEMBER (e.g. "bfcl_eval/data")."""
    member = member.rstrip("/")
    examples: list[Example] = []
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        for cat in categories:
            qpath = f"{member}/BFCL_v4_{cat}.json"
            apath = f"{member}/possible_answer/BFCL_v4_{cat}.json"
            if qpath not in names:
                raise BfclFormatError(f"{wheel.name} has no {qpath}")
            if cat not in NO_CALL_CATEGORIES and apath not in names:
                raise BfclFormatError(f"{wheel.name} has no ground truth {apath}")
            answers = zf.read(apath) if cat not in NO_CALL_CATEGORIES else None
            examples.extend(parse_category(cat, zf.read(qpath), answers))
    return examples


def load_bfcl(
    wheel: Path, member: str, categories: list[str] | tuple[str, ...], wheel_sha256: str | None
) -> list[Example]:
    """Examples of CATEGORIES, via a JSON cache next to the wheel when its sha256 is pinned.

    The cache is keyed by the wheel's sha256 (only trusted when pinned and verified) and the
    parser version, so a changed wheel or parser never serves stale examples.
    """
    if wheel_sha256 is None:
        return read_wheel(wheel, member, categories)
    cache_dir = wheel.parent.parent / "data" / f"bfcl-{wheel_sha256[:16]}-v{_PARSER_VERSION}"
    examples: list[Example] = []
    for cat in categories:
        path = cache_dir / f"{cat}.json"
        if path.exists():
            examples.extend(Example.from_dict(d) for d in json.loads(path.read_text("utf-8")))
            continue
        parsed = read_wheel(wheel, member, [cat])
        cache_dir.mkdir(parents=True, exist_ok=True)
        # Write then rename: concurrent sweep jobs never read a half-written cache file.
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps([e.to_dict() for e in parsed], ensure_ascii=False), "utf-8")
        os.replace(tmp, path)
        examples.extend(parsed)
    return examples
