"""Salesforce xLAM function-calling-60k, from the hub (gated) or a local file in the hub's format.

Hub rows: id (int), query (str), answers (JSON string: [{"name", "arguments"}]), tools (JSON
string: [{"name", "description", "parameters": {p: {"type": "str, optional", "description",
"default"}}}]).

Category rule (xLAM has none; we derive BFCL-like ones from the gold answer so that results
can be broken down the same way):
  * no call                          -> "irrelevance"
  * one call, one tool offered       -> "simple"
  * one call, several tools offered  -> "multiple"
  * several calls, all one function  -> "parallel"
  * several calls, different ones    -> "parallel_multiple"
"""

from __future__ import annotations

import json
from typing import Any

from agentcoder.data.example import DataError, Example, GoldCall
from agentcoder.data.schema import normalise_xlam_tool

SOURCE = "xlam60k"
DATASET_PAGE = "https://huggingface.co/datasets/Salesforce/xlam-function-calling-60k"


def xlam_category(calls: list[dict[str, Any]], n_tools: int) -> str:
    if not calls:
        return "irrelevance"
    if len(calls) == 1:
        return "simple" if n_tools <= 1 else "multiple"
    return "parallel" if len({c["name"] for c in calls}) == 1 else "parallel_multiple"


def _decoded(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def gold_calls(calls: list[dict[str, Any]], tools: list[dict[str, Any]]) -> list[GoldCall]:
    """xLAM gold values are exact: one acceptable value each.  Optional parameters the gold call
    leaves out get `""` (may be omitted) plus their default, so that a model spelling out the
    default is not marked wrong."""
    by_name = {t["name"]: t for t in tools}
    out = []
    for call in calls:
        args: dict[str, list[Any]] = {k: [v] for k, v in (call.get("arguments") or {}).items()}
        params = by_name.get(call["name"], {}).get("parameters", {})
        required = set(params.get("required", []))
        for pname, schema in params.get("properties", {}).items():
            if pname in args or pname in required:
                continue
            default = schema.get("default")
            args[pname] = ["", default] if default not in (None, "") else [""]
        out.append(GoldCall(call["name"], args))
    return out


def row_to_example(row: dict[str, Any]) -> Example:
    tools = [normalise_xlam_tool(t) for t in _decoded(row["tools"])]
    calls = _decoded(row["answers"]) or []
    return Example(
        id=f"xlam_{row['id']}",
        source=SOURCE,
        category=xlam_category(calls, len(tools)),
        messages=[{"role": "user", "content": row["query"]}],
        tools=tools,
        answer=gold_calls(calls, tools),
    )


def _hub_failure(hub_id: str, err: BaseException) -> DataError:
    first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
    return DataError(
        f"cannot load {hub_id} from the Hugging Face hub ({type(err).__name__}: {first}); it is gated: "
        f"accept the terms at {DATASET_PAGE}, then set HF_TOKEN or run `huggingface-cli login` "
        "(or point data.path at a local copy), or use the embedded corpus with data=bfcl"
    )


def load_xlam(hub_id: str, path: str | None = None) -> list[Example]:
    """All rows as Examples, from PATH (JSON/JSONL in the hub format) if given, else the hub."""
    import datasets
    from datasets.exceptions import DatasetsError
    from huggingface_hub.errors import HfHubHTTPError

    if path:
        ds = datasets.load_dataset("json", data_files=str(path), split="train")
    else:
        try:
            # The token, if any, comes from HF_TOKEN / the login cache via huggingface_hub itself.
            ds = datasets.load_dataset(hub_id, split="train")
        except (OSError, DatasetsError, HfHubHTTPError) as err:  # ConnectionError is an OSError
            raise _hub_failure(hub_id, err) from None
    return [row_to_example(row) for row in ds]
