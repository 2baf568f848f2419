"""Judge predicted calls against gold calls, following the rules of BFCL's AST checker.

Gold arguments list their acceptable values; `""` among them means the argument may be omitted.
Types follow BFCL's `type_checker`: a value has the schema's type or the gold values' type; an int
is accepted for a float only at the top level, while list elements are checked against the
schema's `items` type (or the gold elements' type). Where the gold type differs from the schema's
type (a string `"data['sales']"` for an array), the gold is a variable reference and must be given
exactly, without the string leniency.

Parallel calls are paired by an optimal assignment by default, because BFCL's greedy first-fit
pairing can reject a prediction that some other pairing accepts; `parallel_matching="greedy"`
reproduces BFCL for figures comparable with its leaderboard.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal

from agentcoder.data.example import GoldCall, ToolCall
from agentcoder.data.schema import json_type
from agentcoder.evaluation.parser import ParseResult

PairingMode = Literal["optimal", "greedy"]
PAIRING_MODES: tuple[str, ...] = ("optimal", "greedy")


@dataclass
class Verdict:
    correct: bool
    reason: str | None
    function_match: bool
    params_correct: int = 0
    params_total: int = 0


@dataclass(frozen=True)
class _PairResult:
    reason: str | None
    params_correct: int
    params_total: int


_STRIP_CHARS = str.maketrans("", "", " ,./-_*^")


def match_calls(
    gold: list[GoldCall], tools: list[dict], parsed: ParseResult, *, parallel_matching: PairingMode = "optimal"
) -> Verdict:
    """Verdict for one example: is the parsed answer an acceptable realisation of the gold calls?"""
    if parallel_matching not in PAIRING_MODES:
        raise ValueError(f"parallel_matching={parallel_matching!r}; expected one of {', '.join(PAIRING_MODES)}")
    if not gold:
        if parsed.status == "no_call":
            return Verdict(True, None, True)
        reason = "parse_failure" if parsed.status == "failure" else "called_when_none_expected"
        return Verdict(False, reason, False)
    if parsed.status == "failure":
        return Verdict(False, "parse_failure", False)
    if parsed.status == "no_call" or not parsed.calls:
        return Verdict(False, "no_call", False)

    pred = parsed.calls
    function_match = Counter(c.name for c in pred) == Counter(g.name for g in gold)
    if len(pred) != len(gold):
        return Verdict(False, "wrong_count", function_match)

    schemas = {t.get("name"): t for t in map(_unwrap_tool, tools) if isinstance(t, dict)}
    table = [[match_one(g, p, schemas.get(g.name)) for p in pred] for g in gold]
    pairs = _best_pairing(table) if parallel_matching == "optimal" else _greedy_pairing(table)
    results = [table[gi][pi] for gi, pi in pairs]
    failed = [r.reason for r in results if r.reason is not None]
    if not function_match:
        return Verdict(False, "wrong_name", False)
    return Verdict(
        correct=not failed,
        reason=failed[0] if failed else None,
        function_match=True,
        params_correct=sum(r.params_correct for r in results),
        params_total=sum(r.params_total for r in results),
    )


def _unwrap_tool(t: Any) -> Any:
    # OpenAI's {"type": "function", "function": {...}} form carries the same schema one level down.
    return t["function"] if isinstance(t, dict) and isinstance(t.get("function"), dict) else t


def _best_pairing(table: list[list[_PairResult]]) -> list[tuple[int, int]]:
    """Gold->prediction pairs that first maximise fully correct pairs, then correct arguments."""
    n = len(table)
    if n == 1:
        return [(0, 0)]
    from scipy.optimize import linear_sum_assignment  # only parallel calls need it

    big = 1 + sum(r.params_total for row in table for r in row)
    cost = [
        [(big if r.reason is not None else 0) + (r.params_total - r.params_correct) for r in row]
        for row in table
    ]
    rows, cols = linear_sum_assignment(cost)
    return sorted(zip(rows.tolist(), cols.tolist(), strict=True))


def _greedy_pairing(table: list[list[_PairResult]]) -> list[tuple[int, int]]:
    """BFCL's first fit: each gold call in order takes the first unused prediction it accepts.

    A gold call that accepts none takes the first unused prediction, so the verdict carries a reason
    and argument counts (BFCL itself stops there with "cannot find a match").
    """
    used: set[int] = set()
    pairs = []
    for gi, row in enumerate(table):
        free = [pi for pi in range(len(row)) if pi not in used]
        pi = next((p for p in free if row[p].reason is None), free[0])
        used.add(pi)
        pairs.append((gi, pi))
    return pairs


def match_one(gold: GoldCall, pred: ToolCall, schema: dict | None) -> _PairResult:
    """One gold call against one predicted call; the reason is the first rule broken, if any."""
    total = len(gold.arguments)
    if pred.name != gold.name:
        return _PairResult("wrong_name", 0, total)

    params = (schema or {}).get("parameters") or {}
    properties: dict[str, Any] = params.get("properties") or {}
    required: list[str] = list(params.get("required") or [])

    arg_reasons: dict[str, str | None] = {}
    for arg, acceptable in gold.arguments.items():
        if arg not in pred.arguments:
            arg_reasons[arg] = None if "" in acceptable else f"missing_arg:{arg}"
        else:
            arg_reasons[arg] = check_value(arg, pred.arguments[arg], acceptable, properties.get(arg))
    n_correct = sum(r is None for r in arg_reasons.values())

    if any(r not in pred.arguments for r in required):
        return _PairResult("missing_required", n_correct, total)
    # Without a usable schema the gold alone says which arguments exist.
    allowed = set(gold.arguments) & set(properties) if properties else set(gold.arguments)
    if any(a not in allowed for a in pred.arguments):
        return _PairResult("unexpected_arg", n_correct, total)
    first_bad = next((r for r in arg_reasons.values() if r is not None), None)
    return _PairResult(first_bad, n_correct, total)


def check_value(arg: str, value: Any, acceptable: list[Any], prop: dict | None) -> str | None:
    """None if `value` is acceptable for `arg`, else `wrong_type:<arg>` or `wrong_value:<arg>`."""
    prop = prop if isinstance(prop, dict) else {}
    declared = schema_types(prop)
    gold_types = {value_type(a) for a in acceptable if a != ""}
    if not type_allowed(value, declared, gold_types):
        return f"wrong_type:{arg}"
    if declared is not None and declared.get("array") is not None and value_type(value) == "array":
        if not _elements_allowed(value, declared["array"], acceptable):
            return f"wrong_type:{arg}"
    if is_variable_reference(acceptable, declared):
        if any(strict_equal(value, a) for a in acceptable):
            return None
    elif any(values_equal(value, a) for a in acceptable):
        return None
    return f"wrong_value:{arg}"


def value_type(value: Any) -> str:
    """The JSON type of a Python value (the parser only produces JSON values)."""
    # bool first: it is a subclass of int in Python but never an integer here.
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    if value is None:
        return "null"
    return "unknown"


def schema_types(prop: dict) -> dict[str, str | None] | None:
    """The types the schema declares, each mapped to its items type (arrays only); None: undeclared.

    Type names go through the one table in `agentcoder.data.schema`, so a raw BFCL "float" or
    "dict" reads the same here as in the normalised tools.
    """
    raw = prop.get("type")
    names = raw if isinstance(raw, list) else [raw]
    out: dict[str, str | None] = {}
    for name in names:
        t = json_type(name) if isinstance(name, str) else None
        if t is None:
            continue
        items = prop.get("items")
        item_type = items.get("type") if isinstance(items, dict) else None
        out[t] = json_type(item_type) if t == "array" and isinstance(item_type, str) else None
    return out or None


def type_allowed(value: Any, declared: dict[str, Any] | set[str] | None, gold_types: set[str] | None = None) -> bool:
    """BFCL's top-level type check: the schema's type, or the gold values' type (a variable)."""
    t = value_type(value)
    gold_types = gold_types or set()
    if declared is None and not gold_types:
        return True
    declared = set(declared or ()) or gold_types  # without a schema the gold decides
    # An int is an acceptable float at the top level (Python's own promotion); the reverse is not.
    return t in declared or (t == "integer" and "number" in declared) or t in gold_types


def _elements_allowed(value: list, item_type: str, acceptable: list[Any]) -> bool:
    """Each element has the schema's items type or, for some gold list, that list's element type.

    No int-for-float here: `[3, 2, -4]` for an array of float passes only if the gold elements are
    ints too.  A gold value that is not a list gives nothing to check against (BFCL does the same).
    """
    options = [a for a in acceptable if isinstance(a, list)]
    if not options:
        return True
    for option in options:
        first = next((g for g in option if g != ""), None)
        allowed = {item_type} if first is None else {item_type, value_type(first)}
        if all(value_type(v) in allowed for v in value):
            return True
    return False


def is_variable_reference(acceptable: list[Any], declared: dict[str, Any] | None) -> bool:
    """BFCL reads a gold value whose type is not the schema's type as a variable name."""
    first = next((a for a in acceptable if a != ""), None)
    if declared is None or first is None:
        return False
    t = value_type(first)
    return t not in declared and not (t == "integer" and "number" in declared)


def strict_equal(value: Any, gold: Any) -> bool:
    """Equality without the string leniency (numbers still compare by value, bools stay apart)."""
    vt, gt = value_type(value), value_type(gold)
    numeric = ("integer", "number")
    if vt != gt and not (vt in numeric and gt in numeric):
        return False
    if vt == "array":
        return len(value) == len(gold) and all(strict_equal(v, g) for v, g in zip(value, gold, strict=True))
    if vt == "object":
        return value.keys() == gold.keys() and all(strict_equal(value[k], gold[k]) for k in gold)
    return value == gold


def normalize_string(s: str) -> str:
    """BFCL's leniency: case, spaces and `, . / - _ * ^` do not count; ' and " are the same."""
    return s.lower().translate(_STRIP_CHARS).replace("'", '"')


def values_equal(value: Any, gold: Any) -> bool:
    """Is a predicted value equal to one acceptable gold value (recursively, with BFCL's leniencies)?"""
    vt, gt = value_type(value), value_type(gold)
    if vt == "boolean" or gt == "boolean":
        return vt == gt and value == gold
    if vt in ("integer", "number") and gt in ("integer", "number"):
        return value == gold
    if vt == "string" and gt == "string":
        return normalize_string(value) == normalize_string(gold)
    if vt == "array" and gt == "array":
        return len(value) == len(gold) and all(values_equal(v, g) for v, g in zip(value, gold, strict=True))
    if vt == "object" and gt == "object":
        return _dicts_equal(value, gold)
    return vt == gt == "null"


def _dicts_equal(value: dict, gold: dict) -> bool:
    # BFCL writes a nested dict's values as lists of options (with "" = may be omitted); other
    # sources write plain values.  Accept either reading, as the two cannot be told apart.
    if any(k not in gold for k in value):
        return False
    for k, g in gold.items():
        options = g if isinstance(g, list) else None
        if k not in value:
            if options is None or "" not in options:
                return False
            continue
        v = value[k]
        if values_equal(v, g):
            continue
        if options is None or not any(values_equal(v, o) for o in options):
            return False
    return True
