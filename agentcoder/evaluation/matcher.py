"""Judge predicted calls against gold calls, following the rules of BFCL's AST checker.

Gold arguments list their acceptable values; `""` among them means the argument may be omitted.
Parallel calls are paired by an optimal assignment, because a greedy first-fit pairing can reject
a prediction that some other pairing accepts.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from agentcoder.data.example import GoldCall, ToolCall
from agentcoder.evaluation.parser import ParseResult


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


# Schemas in the wild (BFCL's own among them) also use Python-ish type names.
_TYPE_ALIASES = {
    "string": "string", "str": "string",
    "integer": "integer", "int": "integer",
    "number": "number", "float": "number", "double": "number",
    "boolean": "boolean", "bool": "boolean",
    "array": "array", "list": "array", "tuple": "array",
    "object": "object", "dict": "object",
    "null": "null",
}  # fmt: skip
_STRIP_CHARS = str.maketrans("", "", " ,./-_*^")


def match_calls(gold: list[GoldCall], tools: list[dict], parsed: ParseResult) -> Verdict:
    """Verdict for one example: is the parsed answer an acceptable realisation of the gold calls?"""
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
    pairs = _best_pairing(table)
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
    if not type_allowed(value, allowed_types(acceptable, prop)):
        return f"wrong_type:{arg}"
    if any(values_equal(value, a) for a in acceptable):
        return None
    return f"wrong_value:{arg}"


def json_type(value: Any) -> str:
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


def allowed_types(acceptable: list[Any], prop: dict | None) -> set[str] | None:
    """Types a value may have; None means unconstrained.

    The gold values' own types are always allowed, because where gold and schema disagree the gold
    decides.  The "" omission marker says nothing about the type.
    """
    types: set[str] = set()
    schema_type = (prop or {}).get("type")
    for t in schema_type if isinstance(schema_type, list) else [schema_type]:
        if t == "any":
            return None
        if isinstance(t, str) and t in _TYPE_ALIASES:
            types.add(_TYPE_ALIASES[t])
    types |= {json_type(a) for a in acceptable if a != ""}
    return types or None


def type_allowed(value: Any, types: set[str] | None) -> bool:
    if types is None:
        return True
    t = json_type(value)
    # An int is an acceptable float; the reverse is not.
    return t in types or (t == "integer" and "number" in types)


def normalize_string(s: str) -> str:
    """BFCL's leniency: case, spaces and `, . / - _ * ^` do not count; ' and " are the same."""
    return s.lower().translate(_STRIP_CHARS).replace("'", '"')


def values_equal(value: Any, gold: Any) -> bool:
    """Is a predicted value equal to one acceptable gold value (recursively, with BFCL's leniencies)?"""
    vt, gt = json_type(value), json_type(gold)
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
