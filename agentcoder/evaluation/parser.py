"""Model text -> tool calls, without ever executing the text.

The outcome has three states because they mean different things downstream: "calls" (something
parsed), "no_call" (a plain answer, which is right when no call was expected) and "failure" (the
model started a call but it is broken or truncated; never a correct abstention).

Accepted formats: JSON objects/lists of calls (also with "parameters" for "arguments", arguments
given as a JSON string, and OpenAI `{"type": "function", "function": {...}}` wrappers), Qwen-style
`<tool_call>` blocks, Python call syntax `[f(a=1), g(b="x")]` (read with `ast`, arguments only
through `ast.literal_eval`), all of these inside code fences or prose.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from agentcoder.data.example import ToolCall

Status = Literal["calls", "no_call", "failure"]


@dataclass
class ParseResult:
    status: Status
    calls: list[ToolCall] = field(default_factory=list)
    reason: str | None = None


_NO_CALL = ParseResult("no_call")

_TOOL_OPEN = "<tool_call>"
_TOOL_CLOSE = "</tool_call>"
_FENCE = "```"
_FENCE_LANG = re.compile(r"[A-Za-z_][\w+-]*")
# Start of something that is unmistakably an attempted JSON call, even if it does not decode.
_JSON_CALL_START = re.compile(r"""\[?\s*\{\s*["']?(?:name|function|type)["']?\s*:""")
_PY_LIST_START = re.compile(r"\[\s*[A-Za-z_][\w.]*\(")
# No space before "(": prose such as "I (the assistant)" must not read as a call.
_PY_CALL_START = re.compile(r"[A-Za-z_][\w.]*\(")
_POSTFIX = re.compile(r"\.[A-Za-z_]\w*|(?=[(\[])")
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL)


def parse_calls(text: str) -> ParseResult:
    """Parse a model's answer into tool calls, a plain answer ("no_call"), or a failure with a reason."""
    text = text or ""
    # Reasoning may quote JSON or calls that were considered and dropped; only the answer counts.
    text = _THINK.sub("", text)
    if "</think>" in text:
        text = text.rsplit("</think>", 1)[1]
    if "<think>" in text:
        return ParseResult("failure", reason="truncated")
    if _TOOL_OPEN in text:
        return _parse_tool_call_blocks(text)
    return _parse_body(text)


def _parse_tool_call_blocks(text: str) -> ParseResult:
    results: list[ParseResult] = []
    rest = text
    while _TOOL_OPEN in rest:
        rest = rest.split(_TOOL_OPEN, 1)[1]
        if _TOOL_CLOSE in rest:
            content, rest = rest.split(_TOOL_CLOSE, 1)
            inner = _parse_body(content)
            if inner.status == "no_call":
                inner = ParseResult("failure", reason="empty_tool_call")
            results.append(inner)
        else:
            # Generation often stops on the closing tag itself; accept a complete call, but a
            # broken one in an unclosed block is reported as such.
            inner = _parse_body(rest)
            if inner.status != "calls":
                inner = ParseResult("failure", reason="unclosed_tool_call")
            results.append(inner)
            break
    return _combine(results)


def _parse_body(text: str) -> ParseResult:
    """Code fences first (their content is the answer), then the prose around them."""
    parts = text.split(_FENCE)
    if len(parts) == 1:
        return _parse_payload(text)
    fenced = [_strip_fence_lang(p) for p in parts[1::2]]
    outside = "\n".join(parts[0::2])
    result = _combine([_parse_payload(f) for f in fenced])
    if result.status == "no_call":
        return _parse_payload(outside)
    return result


def _strip_fence_lang(content: str) -> str:
    first, sep, rest = content.partition("\n")
    if sep and (not first.strip() or _FENCE_LANG.fullmatch(first.strip())):
        return rest
    return content


def _combine(results: list[ParseResult]) -> ParseResult:
    for r in results:
        if r.status == "failure":
            return r
    calls = [c for r in results for c in r.calls]
    return ParseResult("calls", calls) if calls else _NO_CALL


def _parse_payload(text: str) -> ParseResult:
    """Scan text for JSON calls and Python call expressions; ignore anything else (prose)."""
    s = text.strip()
    calls: list[ToolCall] = []
    i = 0
    n = len(s)
    at_line_start = True
    while i < n:
        c = s[i]
        found: tuple[list[ToolCall] | str, int] | None = None
        if c == "[" and _PY_LIST_START.match(s, i):
            found = _python_list_at(s, i)
        elif c in "{[":
            found = _json_at(s, i, payload_start=(i == 0))
        elif at_line_start and _PY_CALL_START.match(s, i):
            found = _bare_calls_at(s, i)
        if found is None:
            at_line_start = c == "\n" or (at_line_start and c in " \t")
            i += 1
            continue
        got, end = found
        if isinstance(got, str):
            return ParseResult("failure", reason=got)
        calls.extend(got)
        i = max(end, i + 1)
        at_line_start = i == 0 or s[i - 1] == "\n"
    return ParseResult("calls", calls) if calls else _NO_CALL


def _scan_close(s: str, i: int) -> int | None:
    """Index just after the bracket matching s[i], skipping quoted strings; None if never closed."""
    depth = 0
    quote: str | None = None
    j = i
    n = len(s)
    while j < n:
        ch = s[j]
        if quote:
            if ch == "\\":
                j += 2
                continue
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth == 0:
                return j + 1
        j += 1
    return None


# ---------------------------------------------------------------- JSON


def _json_at(s: str, i: int, *, payload_start: bool) -> tuple[list[ToolCall] | str, int] | None:
    try:
        obj, end = json.JSONDecoder().raw_decode(s, i)
    except (json.JSONDecodeError, RecursionError):
        return _broken_json_at(s, i, payload_start=payload_start)
    if not _is_call_shaped(obj):
        return [], end  # ordinary data in prose: skip it whole so its inner objects are not re-read
    return _calls_from_obj(obj), end


def _broken_json_at(s: str, i: int, *, payload_start: bool) -> tuple[list[ToolCall] | str, int] | None:
    looks_like_call = _JSON_CALL_START.match(s, i) is not None
    if payload_start and (s[i] == "{" or s[i : i + 2].replace(" ", "").startswith("[{")):
        looks_like_call = True
    if not looks_like_call:
        return None
    end = _scan_close(s, i)
    if end is None:
        return "truncated", len(s)
    # Python-literal spelling (single quotes, True/None, trailing commas) is unambiguous enough.
    try:
        obj = ast.literal_eval(s[i:end])
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return "invalid_json", end
    if not _is_call_shaped(obj):
        return "invalid_json", end
    return _calls_from_obj(obj), end


def _is_call_shaped(obj: Any) -> bool:
    if isinstance(obj, list):
        return bool(obj) and all(isinstance(o, dict) for o in obj) and any(_is_call_dict(o) for o in obj)
    return _is_call_dict(obj)


def _is_call_dict(obj: Any) -> bool:
    if not isinstance(obj, dict):
        return False
    if isinstance(obj.get("function"), dict):
        return True
    if "name" not in obj:
        return False
    if "arguments" in obj:
        return True
    params = obj.get("parameters")
    if params is not None:
        # An echoed tool schema also has "name" + "parameters"; it is not a call.
        return not (isinstance(params, dict) and params.get("type") == "object" and "properties" in params)
    # {"name": "get_time"} is a call without arguments; {"name": "Ann", "age": 3} is just data.
    return set(obj) <= {"name", "id", "type"}


def _calls_from_obj(obj: Any) -> list[ToolCall] | str:
    items = obj if isinstance(obj, list) else [obj]
    calls: list[ToolCall] = []
    for item in items:
        call = _call_from_dict(item)
        if isinstance(call, str):
            return call
        calls.append(call)
    return calls


def _call_from_dict(obj: Any) -> ToolCall | str:
    if not isinstance(obj, dict):
        return "bad_call_shape"
    if isinstance(obj.get("function"), dict):
        if obj.get("type", "function") != "function":
            return "bad_call_shape"
        obj = obj["function"]
    name = obj.get("name")
    if not isinstance(name, str) or not name.strip():
        return "missing_name"
    if "arguments" in obj and "parameters" in obj and obj["arguments"] != obj["parameters"]:
        return "ambiguous_arguments"
    args = obj.get("arguments", obj.get("parameters"))
    if args is None:
        args = {}
    if isinstance(args, str):
        if not args.strip():
            args = {}
        else:
            try:
                args = json.loads(args)
            except (json.JSONDecodeError, RecursionError):
                return "invalid_json"
    if not isinstance(args, dict):
        return "bad_arguments"
    return ToolCall(name.strip(), args)


# ---------------------------------------------------------------- Python call syntax


def _python_list_at(s: str, i: int) -> tuple[list[ToolCall] | str, int]:
    end = _scan_close(s, i)
    if end is None:
        return "truncated", len(s)
    try:
        tree = ast.parse(s[i:end], mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return "bad_call_syntax", end
    body = tree.body
    if not isinstance(body, ast.List | ast.Tuple):
        return "bad_call_syntax", end
    calls: list[ToolCall] = []
    for elt in body.elts:
        call = _call_from_node(elt)
        if isinstance(call, str):
            return call, end
        calls.append(call)
    return calls, end


def _bare_calls_at(s: str, i: int) -> tuple[list[ToolCall] | str, int] | None:
    """Calls written one per line (or `;`-separated).

    A line holding only calls is an attempt, so a broken one is a failure; a line with more text
    after the call is prose mentioning a function ("print() is built in") unless the call is clean.
    """
    spans: list[tuple[int, int]] = []
    j = i
    n = len(s)
    while True:
        end = _call_span_end(s, j)
        if end is None:
            return "truncated", n
        spans.append((j, end))
        k = end
        while k < n and s[k] in " \t\r;,":
            k += 1
        if k < n and _PY_CALL_START.match(s, k):
            j = k
            continue
        break
    only_calls = k >= n or s[k] == "\n"
    calls: list[ToolCall] = []
    for start, end in spans:
        call = _parse_call_text(s[start:end])
        if isinstance(call, str):
            return (call, end) if only_calls else None
        calls.append(call)
    return calls, k


def _parse_call_text(text: str) -> ToolCall | str:
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return "bad_call_syntax"
    return _call_from_node(tree.body)


def _call_span_end(s: str, i: int) -> int | None:
    """End of `name(...)` plus any chained `.attr` / `(...)` / `[...]`, so chains are seen whole."""
    j = s.index("(", i)
    end = _scan_close(s, j)
    while end is not None:
        m = _POSTFIX.match(s, end)
        if m is None:
            break
        if m.group(0):
            end = m.end()
            if end < len(s) and s[end] in "([":
                end = _scan_close(s, end)
            continue
        end = _scan_close(s, end)
    return end


def _call_from_node(node: ast.expr) -> ToolCall | str:
    if not isinstance(node, ast.Call):
        return "bad_call_syntax"
    name = _dotted_name(node.func)
    if name is None:
        return "bad_call_syntax"
    if node.args:
        return "positional_argument"
    args: dict[str, Any] = {}
    for kw in node.keywords:
        if kw.arg is None:  # **kwargs
            return "bad_call_syntax"
        value = _literal(kw.value)
        if value is _NOT_LITERAL:
            return "non_literal_argument"
        args[kw.arg] = value
    return ToolCall(name, args)


def _dotted_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted_name(node.value)
        return None if base is None else f"{base}.{node.attr}"
    return None


_NOT_LITERAL = object()
_JSON_NAMES = {"true": True, "false": False, "null": None}


def _literal(node: ast.expr) -> Any:
    # JSON spellings are a common slip in Python-syntax answers and mean one thing only.
    if isinstance(node, ast.Name) and node.id in _JSON_NAMES:
        return _JSON_NAMES[node.id]
    try:
        value = ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return _NOT_LITERAL
    return _to_json_value(value)


def _to_json_value(value: Any) -> Any:
    if isinstance(value, list | tuple):
        items = [_to_json_value(v) for v in value]
        return _NOT_LITERAL if any(v is _NOT_LITERAL for v in items) else items
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            jv = _to_json_value(v)
            if jv is _NOT_LITERAL or not isinstance(k, str | int | float | bool):
                return _NOT_LITERAL
            out[k if isinstance(k, str) else json.dumps(k)] = jv
        return out
    if value is None or isinstance(value, str | bool | int | float):
        return value
    return _NOT_LITERAL  # sets, bytes, complex: no JSON counterpart
