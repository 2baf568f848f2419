"""Corpus readers on local files in the exact upstream formats, and load_splits end to end."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from agentcoder.assets import AssetError, sha256_file
from agentcoder.config import DataConfig
from agentcoder.data import DataError, GoldCall, load_splits
from agentcoder.data.schema import parse_xlam_type
from agentcoder.data.xlam import DATASET_PAGE
from tests.helpers import refuse_network

ROOT = Path(__file__).resolve().parents[1]


def run_cfg(data: dict, cache_dir: Path | None = None, fraction: float = 1.0):
    merged = OmegaConf.merge(OmegaConf.structured(DataConfig), data)
    return OmegaConf.create({"data": merged, "data_fraction": fraction, "cache_dir": str(cache_dir or "")})


# --------------------------------------------------------------------------- xLAM

WEATHER = {"name": "get_weather", "description": "Weather of a city.", "parameters": {
    "city": {"type": "str", "description": "City name.", "default": "Paris"},
    "unit": {"type": "str, optional", "description": "celsius or fahrenheit.", "default": "celsius"},
    "days": {"type": "List[int], optional", "description": "Day offsets."},
}}
STOCK = {"name": "stock_price", "description": "Quote.", "parameters": {
    "symbols": {"type": "List[str]", "description": "Tickers."},
    "options": {"type": "Dict[str, Any], optional", "description": "Extra.", "default": None},
    "window": {"type": "Tuple", "description": "Start, end."},
    "adjusted": {"type": "bool, optional", "description": "Adjusted.", "default": True},
    "scale": {"type": "float", "description": "Scale."},
}}
XLAM_ROWS = [
    (1, "Weather in Rome?", [{"name": "get_weather", "arguments": {"city": "Rome"}}], [WEATHER]),
    (2, "Quote AAPL.", [{"name": "stock_price", "arguments": {"symbols": ["AAPL"], "window": [1, 2],
                                                              "scale": 1.5}}], [WEATHER, STOCK]),
    (3, "Weather in Rome and Oslo in F?", [
        {"name": "get_weather", "arguments": {"city": "Rome", "unit": "fahrenheit"}},
        {"name": "get_weather", "arguments": {"city": "Oslo", "unit": "fahrenheit"}}], [WEATHER]),
    (4, "Weather in Rome and quote IBM.", [
        {"name": "get_weather", "arguments": {"city": "Rome"}},
        {"name": "stock_price", "arguments": {"symbols": ["IBM"], "window": [0, 1], "scale": 1.0}}],
     [WEATHER, STOCK]),
]


def write_xlam(path: Path, n_copies: int = 1) -> Path:
    """Rows in the hub's exact form: id int, query str, answers and tools as JSON strings."""
    with open(path, "w") as fh:
        for copy in range(n_copies):
            for rid, query, answers, tools in XLAM_ROWS:
                fh.write(json.dumps({"id": rid + 100 * copy, "query": query, "answers": json.dumps(answers),
                                     "tools": json.dumps(tools)}) + "\n")
    return path


XLAM_CFG = {"name": "xlam60k", "source": "hub", "hub_id": "Salesforce/xlam-function-calling-60k"}


def test_xlam_types_map_to_json_schema():
    assert parse_xlam_type("str") == ({"type": "string"}, False)
    assert parse_xlam_type("int, optional") == ({"type": "integer"}, True)
    assert parse_xlam_type("List[int]") == ({"type": "array", "items": {"type": "integer"}}, False)
    assert parse_xlam_type("Dict[str, Any], optional") == ({"type": "object"}, True)
    assert parse_xlam_type("List[Dict[str, int]], optional") == (
        {"type": "array", "items": {"type": "object"}}, True)
    assert parse_xlam_type("Tuple") == ({"type": "array"}, False)
    assert parse_xlam_type("Optional[float]") == ({"type": "number"}, False)
    assert parse_xlam_type("Any") == ({}, False)
    assert parse_xlam_type("Union[int, str]") == ({}, False)


def test_xlam_local_file_normalises(tmp_path):
    cfg = run_cfg({**XLAM_CFG, "path": str(write_xlam(tmp_path / "xlam.jsonl")), "split": {
        "train": 0.5, "val": 0.25, "test": 0.25}})
    splits = load_splits(cfg)
    exs = {e.id: e for e in splits.train + splits.val + splits.test}
    assert set(exs) == {"xlam_1", "xlam_2", "xlam_3", "xlam_4"}
    assert {i: e.category for i, e in exs.items()} == {
        "xlam_1": "simple", "xlam_2": "multiple", "xlam_3": "parallel", "xlam_4": "parallel_multiple"}
    one = exs["xlam_1"]
    assert one.messages == [{"role": "user", "content": "Weather in Rome?"}]
    assert one.tools == [{"name": "get_weather", "description": "Weather of a city.", "parameters": {
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": "City name.", "default": "Paris"},
            "unit": {"type": "string", "description": "celsius or fahrenheit.", "default": "celsius"},
            "days": {"type": "array", "items": {"type": "integer"}, "description": "Day offsets."},
        },
        "required": ["city"]}}]
    # Gold values are exact; omitted optionals may be left out or given their default.
    assert one.answer == [GoldCall("get_weather", {"city": ["Rome"], "unit": ["", "celsius"], "days": [""]})]
    assert exs["xlam_2"].answer == [GoldCall("stock_price", {
        "symbols": [["AAPL"]], "window": [[1, 2]], "scale": [1.5], "options": [""], "adjusted": ["", True]})]
    assert exs["xlam_3"].answer[1] == GoldCall("get_weather", {"city": ["Oslo"], "unit": ["fahrenheit"],
                                                              "days": [""]})
    assert splits.info["corpus"].startswith("file:")


def test_xlam_hub_unreachable_is_one_line_naming_the_token(monkeypatch):
    import datasets
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    # Both libraries read the variables at import time, which has already happened.
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    # Offline must mean no attempt at all (no lookups, no retries with backoff): record any.
    attempts = refuse_network(monkeypatch)
    with pytest.raises(DataError) as err:
        load_splits(run_cfg(XLAM_CFG))
    message = str(err.value)
    assert "\n" not in message
    for needle in ("HF_TOKEN", "huggingface-cli login", DATASET_PAGE, "data=bfcl"):
        assert needle in message
    assert attempts == []


# --------------------------------------------------------------------------- BFCL

WHEEL_NAME = "bfcl_eval-2026.3.23-py3-none-any.whl"
AREA = {"name": "area", "description": "Area.", "parameters": {"type": "dict", "properties": {
    "base": {"type": "integer", "description": "Base."},
    "scale": {"type": "float", "description": "Scale.", "default": 1.0, "optional": True},
    "point": {"type": "tuple", "items": {"type": "float"}, "description": "A point."},
    "meta": {"type": "dict", "description": "Meta.", "properties": {
        "tag": {"type": "string", "enum": ["a", "b"]}, "extra": {"type": "any"}}, "required": ["tag"]},
}, "required": ["base"]}}


def bfcl_rows(cat: str, n: int) -> tuple[list[dict], list[dict] | None]:
    questions, answers = [], []
    for i in range(n):
        rid = f"{cat}_{i}"
        turn = [{"role": "user", "content": f"Question {i} of {cat}?"}]
        if i == 0:
            turn.insert(0, {"role": "system", "content": "Be exact."})
        questions.append({"id": rid, "question": [turn], "function": [AREA]})
        answers.append({"id": rid, "ground_truth": [{"area": {"base": [i], "scale": [2.0, ""]}}]})
    return questions, (None if "irrelevance" in cat else answers)


FIXTURE_SIZES = {"simple_python": 12, "live_parallel": 16, "irrelevance": 5}


def build_wheel(cache: Path, sizes: dict[str, int] = FIXTURE_SIZES) -> Path:
    """A wheel with the real member layout: JSON Lines under bfcl_eval/data/ and possible_answer/."""
    wheel = cache / "wheels" / WHEEL_NAME
    wheel.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel, "w") as zf:
        for cat, n in sizes.items():
            questions, answers = bfcl_rows(cat, n)
            zf.writestr(f"bfcl_eval/data/BFCL_v4_{cat}.json", "\n".join(json.dumps(q) for q in questions))
            if answers is not None:
                zf.writestr(f"bfcl_eval/data/possible_answer/BFCL_v4_{cat}.json",
                            "\n".join(json.dumps(a) for a in answers) + "\n")
    return wheel


def bfcl_cfg(categories: list[str], sha256: str | None) -> dict:
    return {"name": "bfcl", "source": "embedded", "categories": categories, "embedded": {
        "package": "bfcl-eval", "version": "2026.3.23", "sha256": sha256, "member": "bfcl_eval/data"}}


def test_bfcl_from_cached_wheel(tmp_path):
    sha = sha256_file(build_wheel(tmp_path))
    splits = load_splits(run_cfg(bfcl_cfg(list(FIXTURE_SIZES), sha), tmp_path))
    info = splits.info
    assert info["corpus"] == "bfcl-eval==2026.3.23"
    assert info["category_sizes"]["live_parallel"] == {"train": 13, "val": 1, "test": 2}
    assert sum(info["sizes"].values()) == sum(FIXTURE_SIZES.values())
    exs = {e.id: e for e in splits.train + splits.val + splits.test}
    first = exs["simple_python_0"]
    assert first.messages[0] == {"role": "system", "content": "Be exact."}
    assert first.answer == [GoldCall("area", {"base": [0], "scale": [2.0, ""]})]
    assert exs["irrelevance_3"].answer == [] and exs["irrelevance_3"].category == "irrelevance"
    assert first.tools[0]["parameters"] == {"type": "object", "properties": {
        "base": {"type": "integer", "description": "Base."},
        "scale": {"type": "number", "description": "Scale.", "default": 1.0},
        "point": {"type": "array", "description": "A point.", "items": {"type": "number"}},
        "meta": {"type": "object", "description": "Meta.", "properties": {
            "tag": {"type": "string", "enum": ["a", "b"]}, "extra": {}}, "required": ["tag"]},
    }, "required": ["base"]}
    # Second load is served from the JSON cache keyed by the wheel's sha256, with equal content.
    assert any((tmp_path / "data").rglob("simple_python.json"))
    again = load_splits(run_cfg(bfcl_cfg(list(FIXTURE_SIZES), sha), tmp_path))
    assert again.info == info
    # Without a pinned sha256 the wheel is parsed directly; the content is the same.
    assert load_splits(run_cfg(bfcl_cfg(list(FIXTURE_SIZES), None), tmp_path)).info["content_sha256"] == \
        info["content_sha256"]


def test_bfcl_fraction_subsamples_train_only_and_nested(tmp_path):
    build_wheel(tmp_path)
    cfg = bfcl_cfg(list(FIXTURE_SIZES), None)
    by_fraction = {f: load_splits(run_cfg(cfg, tmp_path, fraction=f)) for f in (0.1, 0.5, 1.0)}
    ids = {f: {e.id for e in s.train} for f, s in by_fraction.items()}
    assert ids[0.1] < ids[0.5] < ids[1.0]
    assert by_fraction[0.1].info["category_sizes"]["irrelevance"]["train"] == 1  # at least one
    for part in ("val", "test"):
        assert len({by_fraction[f].info["content_sha256"][part] for f in by_fraction}) == 1
    assert by_fraction[0.1].info["data_fraction"] == 0.1
    assert by_fraction[0.1].info["train_full_size"] == len(ids[1.0])


def test_bfcl_max_examples_caps_each_category(tmp_path):
    build_wheel(tmp_path)
    splits = load_splits(run_cfg({**bfcl_cfg(list(FIXTURE_SIZES), None), "max_examples": 10}, tmp_path))
    assert {c: sum(v.values()) for c, v in splits.info["category_sizes"].items()} == {
        "simple_python": 10, "live_parallel": 10, "irrelevance": 5}


def test_bfcl_wrong_checksum_and_unknown_category(tmp_path):
    build_wheel(tmp_path)
    with pytest.raises(AssetError, match="sha256"):
        load_splits(run_cfg(bfcl_cfg(["simple_python"], "0" * 64), tmp_path))
    with pytest.raises(DataError, match="simple_java"):
        load_splits(run_cfg(bfcl_cfg(["simple_java"], None), tmp_path))


def test_bfcl_offline_empty_cache_says_what_to_fetch(tmp_path, monkeypatch):
    # No index at all: pip fails at once, as it would offline.
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "nowhere"))
    with pytest.raises(AssetError) as err:
        load_splits(run_cfg(bfcl_cfg(["simple_python"], None), tmp_path))
    assert "\n" not in str(err.value) and "pip download --no-deps bfcl-eval==2026.3.23" in str(err.value)


def test_importing_the_package_stays_light():
    code = ("import sys, agentcoder.data; heavy = [m for m in ('torch', 'transformers', 'datasets') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


REAL_COUNTS = {"simple_python": 400, "multiple": 200, "parallel": 200, "parallel_multiple": 200,
               "live_simple": 258, "live_multiple": 1053, "live_parallel": 16, "live_parallel_multiple": 24,
               "irrelevance": 240, "live_irrelevance": 884}


@pytest.mark.slow
def test_real_bfcl_wheel_category_counts():
    """Fetches the pinned bfcl-eval wheel (into $AGENTCODER_CACHE or ~/.cache/agentcoder)."""
    data = OmegaConf.load(ROOT / "conf" / "data" / "bfcl.yaml")
    splits = load_splits(run_cfg(data, None))
    sizes = {c: sum(v.values()) for c, v in splits.info["category_sizes"].items()}
    assert sizes == REAL_COUNTS
    assert splits.info["corpus"] == "bfcl-eval==2026.3.23"
    for cat, n in REAL_COUNTS.items():
        for part, share in (("train", 0.8), ("val", 0.1), ("test", 0.1)):
            assert abs(splits.info["category_sizes"][cat][part] - share * n) <= 1
    no_call = [e for e in splits.test if e.category.endswith("irrelevance")]
    assert no_call and all(not e.answer for e in no_call)
    assert all(e.answer for e in splits.test if not e.category.endswith("irrelevance"))
