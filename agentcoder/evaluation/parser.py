"""Model text -> tool calls, without ever executing the text.

The outcome has three states because they mean different things downstream: "calls" (something
parsed), "no_call" (a plain answer, which is right when no call was expected) and "failure" (the
model started a call but it is broken or truncated; never a correct abstention).

Accepted formats: JSON objects/lists of calls (also with "parameters" for "arguments", arguments
given as a JSON string, and OpenAI `{"type": "function", "function": {...}}` wrappers), Qwen-style
`<tool_call>` blocks, Python call syntax `[f(a=1), g(b="x")]` (read with `ast`, arguments only
through `ast.literal_eval`), all of these inside code fences or prose.

Any text gives one of the three outcomes, never an exception, in bounded work: only the first
MAX_CHARS characters are read (like a generation cut there), scans are iterative and never restart
inside a region already read, and argument values are plain JSON (nested at most MAX_DEPTH deep,
integers of at most MAX_INT_BITS bits, finite floats); anything else is a failure with a reason.
"""

from __future__ import annotations

import ast
import json
import math
import re
import warnings
from dataclasses import dataclass
from typing import Any, Literal

from agentcoder.data.example import ToolCall

Status = Literal["calls", "no_call", "failure"]


MAX_CHARS = 32_768  # ~8k tokens: far beyond an answer, small enough to bound the work per output
MAX_DEPTH = 64  # nesting of argument values; deeper is not a plausible call
MAX_INT_BITS = 4096  # ~1,233 decimal digits; Python refuses to print ints past 4,300 digits


@dataclass(frozen=True)
class ParseResult:
    """The outcome of parsing one output; immutable, so the shared no-call result stays as it is."""

    status: Status
    calls: tuple[ToolCall, ...] = ()
    reason: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "calls", tuple(self.calls))


_NO_CALL = ParseResult("no_call")

_TOOL_OPEN = "<tool_call>"
_TOOL_CLOSE = "</tool_call>"
_FENCE_LANG = re.compile(r"[A-Za-z_][\w+-]*")
# Start of something that is unmistakably an attempted JSON call, even if it does not decode.
_JSON_CALL_START = re.compile(r"""\[?\s*\{\s*["']?(?:name|function|type)["']?\s*:""")
# Could a JSON value start here at all? Most brackets in prose cannot, and need no decode attempt.
_JSON_VALUE_START = re.compile(r"""\{\s*["}]|\[\s*(?:[\]"\-\d\[tfnNI]|\{\s*["}])""")
# Decode attempts at brackets that do not start a call, per payload: each failed one costs a scan
# (json's error message counts lines up to it), so a hostile run of brackets must not pay each.
MAX_DATA_DECODES = 256
_PY_LIST_START = re.compile(r"\[\s*[A-Za-z_][\w.]*\(")
# No space before "(": prose such as "I (the assistant)" must not read as a call.
_PY_CALL_START = re.compile(r"[A-Za-z_][\w.]*\(")
_POSTFIX = re.compile(r"\.[A-Za-z_]\w*|(?=[(\[])")
_THINK_OPEN, _THINK_CLOSE = "<think>", "</think>"
# A fence opens a line or ends one: "```" inside a string argument is neither.
_FENCE_MARK = re.compile(r"^[ \t]*```|```(?=[ \t]*(?:\n|$))", re.MULTILINE)


def parse_calls(text: str) -> ParseResult:
    """Parse a model's answer into tool calls, a plain answer ("no_call"), or a failure with a reason."""
    text = (text or "")[:MAX_CHARS] if isinstance(text, str) else ""
    # Reasoning may quote JSON or calls that were considered and dropped; only the answer counts.
    text = _strip_think(text)
    if _THINK_CLOSE in text:
        text = text.rsplit(_THINK_CLOSE, 1)[1]
    if _THINK_OPEN in text:
        return ParseResult("failure", reason="truncated")
    if _TOOL_OPEN in text:
        return _parse_tool_call_blocks(text)
    return _parse_body(text)


def _strip_think(text: str) -> str:
    """Drop every closed <think>...</think> block, in one pass (an unclosed one stays)."""
    kept: list[str] = []
    pos = 0
    while True:
        start = text.find(_THINK_OPEN, pos)
        end = -1 if start < 0 else text.find(_THINK_CLOSE, start + len(_THINK_OPEN))
        if end < 0:
            kept.append(text[pos:])
            return "".join(kept)
        kept.append(text[pos:start])
        pos = end + len(_THINK_CLOSE)


def _parse_tool_call_blocks(text: str) -> ParseResult:
    results: list[ParseResult] = []
    pos = text.find(_TOOL_OPEN)
    while pos >= 0:
        start = pos + len(_TOOL_OPEN)
        end = text.find(_TOOL_CLOSE, start)
        if end >= 0:
            inner = _parse_body(text[start:end])
            if inner.status == "no_call":
                inner = ParseResult("failure", reason="empty_tool_call")
            results.append(inner)
            pos = text.find(_TOOL_OPEN, end + len(_TOOL_CLOSE))
        else:
            # Generation often stops on the closing tag itself; accept a complete call, but a
            # broken one in an unclosed block is reported as such.
            inner = _parse_body(text[start:])
            if inner.status != "calls":
                inner = ParseResult("failure", reason="unclosed_tool_call")
            results.append(inner)
            break
    return _combine(results)


def _parse_body(text: str) -> ParseResult:
    """Code fences first (their content is the answer), then the prose around them."""
    parts = _FENCE_MARK.split(text)
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
    # Ends of regions already read without finding a call (data that did not decode, a call-like
    # span that did not parse): only a call-shaped start is tried again inside them, so a run of
    # unclosed brackets costs one scan, not one per bracket.
    data_until = 0
    bare_until = 0
    data_decodes = 0
    while i < n:
        c = s[i]
        found: tuple[list[ToolCall] | str, int] | None = None
        if c == "[" and _PY_LIST_START.match(s, i):
            found = _python_list_at(s, i)
        elif c in "{[":
            call_like = i == 0 or _JSON_CALL_START.match(s, i) is not None
            may_decode = i >= data_until and data_decodes < MAX_DATA_DECODES and _JSON_VALUE_START.match(s, i)
            if call_like or may_decode:
                data_decodes += not call_like
                got, end = _json_at(s, i, payload_start=(i == 0))
                if got is None:
                    data_until = max(data_until, end)
                else:
                    found = got, end
        elif at_line_start and i >= bare_until and _PY_CALL_START.match(s, i):
            found = _bare_calls_at(s, i)
            if isinstance(found, int):
                bare_until, found = found, None
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


_DECODER = json.JSONDecoder()


def _json_at(s: str, i: int, *, payload_start: bool) -> tuple[list[ToolCall] | str | None, int]:
    """(calls or a failure reason, end); (None, end of the region read) when no call starts at i."""
    try:
        obj, end = _DECODER.raw_decode(s, i)
    except json.JSONDecodeError as e:
        failed_at: int | None = e.pos
    except (ValueError, RecursionError):  # an int past Python's digit limit; nesting past C's
        failed_at = None
    else:
        if not _is_call_shaped(obj):
            return [], end  # ordinary data in prose: skip it whole so its inner objects are not re-read
        return _calls_from_obj(obj), end
    found = _broken_json_at(s, i, payload_start=payload_start)
    if found is not None:
        return found
    if failed_at is None:
        failed_at = _scan_close(s, i) or len(s)
    return None, max(failed_at, i + 1)


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
        obj = ast.literal_eval(_parse_expr(s[i:end]))
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
    """Calls from decoded JSON (or a Python literal of the same shape); values become plain JSON."""
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
            except (ValueError, RecursionError):
                return "invalid_json"
    if not isinstance(args, dict):
        return "bad_arguments"
    plain = _plain(args)
    if plain is _TOO_LARGE:
        return "value_too_large"
    if plain is _NOT_LITERAL:
        return "unsupported_value"
    return ToolCall(name.strip(), plain)


# ---------------------------------------------------------------- Python call syntax


def _parse_expr(text: str) -> ast.Expression:
    # Model text may hold invalid escapes ("\d"); Python warns about them, which is noise here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ast.parse(text, mode="eval")


def _python_list_at(s: str, i: int) -> tuple[list[ToolCall] | str, int]:
    end = _scan_close(s, i)
    if end is None:
        return "truncated", len(s)
    try:
        tree = _parse_expr(s[i:end])
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


def _bare_calls_at(s: str, i: int) -> tuple[list[ToolCall] | str, int] | int:
    """Calls written one per line (or `;`-separated).

    A line holding only calls is an attempt, so a broken one is a failure; a line with more text
    after the call is prose mentioning a function ("print() is built in") unless the call is clean;
    then the end of the span read is returned, so no line inside it is tried again.
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
            return (call, end) if only_calls else k
        calls.append(call)
    return calls, k


def _parse_call_text(text: str) -> ToolCall | str:
    try:
        tree = _parse_expr(text)
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
        if value is _TOO_LARGE:
            return "value_too_large"
        if value is _NOT_LITERAL:
            return "non_literal_argument"
        args[kw.arg] = value
    return ToolCall(name, args)


def _dotted_name(node: ast.expr) -> str | None:
    # Iterative: a name of a thousand dotted segments must not exhaust the stack.
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


_NOT_LITERAL = object()  # no JSON counterpart (sets, bytes, complex, code)
_TOO_LARGE = object()  # nested past MAX_DEPTH, an int past MAX_INT_BITS
_JSON_NAMES = {"true": True, "false": False, "null": None}


def _json_names_as_constants(node: ast.expr) -> ast.expr:
    """NODE with `true`/`false`/`null` read as True/False/None at any depth: JSON spellings are a
    common slip in Python-syntax answers and mean one thing only.  ast.walk is iterative, so a deep
    value cannot exhaust the stack here."""
    if isinstance(node, ast.Name) and node.id in _JSON_NAMES:
        return ast.Constant(_JSON_NAMES[node.id])
    for parent in ast.walk(node):
        for field, child in ast.iter_fields(parent):
            if isinstance(child, ast.Name) and child.id in _JSON_NAMES:
                setattr(parent, field, ast.Constant(_JSON_NAMES[child.id]))
            elif isinstance(child, list):
                child[:] = [ast.Constant(_JSON_NAMES[c.id]) if isinstance(c, ast.Name) and c.id in _JSON_NAMES
                            else c for c in child]
    return node


def _literal(node: ast.expr) -> Any:
    node = _json_names_as_constants(node)
    try:
        value = ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return _NOT_LITERAL
    return _plain(value)


def _paired_surrogates(text: str) -> str:
    """TEXT with each escaped UTF-16 surrogate pair ('\\ud800\\udc00' in a Python-syntax answer) joined
    into its character, as JSON reads it; a lone surrogate stays as it is."""
    if not any("\ud800" <= ch <= "\udfff" for ch in text):
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")


def _plain(value: Any, depth: int = 0) -> Any:
    """VALUE as plain JSON (tuples become lists, scalar keys strings), or _NOT_LITERAL / _TOO_LARGE.

    The recursion stops at MAX_DEPTH, so it is bounded whatever the input.
    """
    if isinstance(value, str):
        return _paired_surrogates(value)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if value.bit_length() <= MAX_INT_BITS else _TOO_LARGE
    if isinstance(value, float):
        return value if math.isfinite(value) else _NOT_LITERAL
    if depth >= MAX_DEPTH and isinstance(value, list | tuple | dict):
        return _TOO_LARGE
    if isinstance(value, list | tuple):
        items = []
        for v in value:
            pv = _plain(v, depth + 1)
            if pv is _NOT_LITERAL or pv is _TOO_LARGE:
                return pv
            items.append(pv)
        return items
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if isinstance(k, int | float) and not isinstance(k, bool):
                k = _plain(k)
                if k is _NOT_LITERAL or k is _TOO_LARGE:
                    return k
                k = json.dumps(k)
            elif isinstance(k, bool):
                k = json.dumps(k)
            elif isinstance(k, str):
                k = _paired_surrogates(k)
            else:
                return _NOT_LITERAL
            pv = _plain(v, depth + 1)
            if pv is _NOT_LITERAL or pv is _TOO_LARGE:
                return pv
            out[k] = pv
        return out
    return _NOT_LITERAL
