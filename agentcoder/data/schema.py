"""Normalise each corpus' tool descriptions into one JSON-schema form.

Both corpora describe parameters in Python-ish vocabularies (BFCL: "dict", "float", "tuple",
"any"; xLAM: "str, optional", "List[int]", "Dict[str, Any]").  Chat templates and the
evaluation matcher expect JSON-schema names, so everything is mapped here, in one place.
Only the keys that carry meaning for calling are kept: type, description, default, enum,
items, and for nested objects properties/required.
"""

from __future__ import annotations

from typing import Any

_KEEP = ("type", "description", "default", "enum", "items", "properties", "required")

# Python-ish type names (lower-cased) -> JSON-schema type; None means "any value" (no type key).
_TYPE_NAMES: dict[str, str | None] = {
    "str": "string", "string": "string", "text": "string",
    "int": "integer", "integer": "integer", "long": "integer",
    "float": "number", "number": "number", "double": "number", "decimal": "number",
    "bool": "boolean", "boolean": "boolean",
    "list": "array", "array": "array", "tuple": "array", "set": "array", "sequence": "array",
    "iterable": "array",
    "dict": "object", "object": "object", "mapping": "object", "hashmap": "object",
    "any": None, "none": None, "nonetype": None,
}


def json_type(name: str) -> str | None:
    """Map one Python-ish type name to a JSON-schema type; unknown names become None (any)."""
    return _TYPE_NAMES.get(name.strip().lower())


def normalise_bfcl_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """One BFCL parameter schema (recursively) with JSON-schema type names and only the kept keys."""
    out: dict[str, Any] = {}
    raw_type = schema.get("type")
    if isinstance(raw_type, str):
        mapped = json_type(raw_type)
        if mapped is not None:
            out["type"] = mapped
    for key in _KEEP:
        if key == "type" or key not in schema:
            continue
        value = schema[key]
        if key == "items" and isinstance(value, dict):
            value = normalise_bfcl_schema(value)
        elif key == "properties" and isinstance(value, dict):
            value = {name: normalise_bfcl_schema(sub) for name, sub in value.items()}
        out[key] = value
    return out


def normalise_bfcl_tool(tool: dict[str, Any]) -> dict[str, Any]:
    params = normalise_bfcl_schema(tool.get("parameters") or {})
    # The top level is always an object, whatever the corpus wrote ("dict").
    params["type"] = "object"
    params.setdefault("properties", {})
    params.setdefault("required", [])
    return {"name": tool["name"], "description": tool.get("description", ""), "parameters": params}


# --------------------------------------------------------------------------- xLAM


def _split_top(text: str, sep: str = ",") -> list[str]:
    """Split on SEP outside brackets: "Dict[str, int], optional" -> ["Dict[str, int]", " optional"]."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def python_type_schema(annotation: str) -> dict[str, Any]:
    """JSON-schema fragment for a typing annotation string: "List[int]" -> array of integer."""
    text = annotation.strip()
    if "[" in text and text.endswith("]"):
        head, inner = text.split("[", 1)
        args = [a.strip() for a in _split_top(inner[:-1]) if a.strip()]
        head = head.strip().split(".")[-1].lower()
        if head == "optional" and args:
            return python_type_schema(args[0])
        if head == "union":
            # A union of one JSON type (Union[int, None]) keeps it; a mixed union accepts anything.
            kinds = {python_type_schema(a).get("type") for a in args if a.lower() not in ("none", "nonetype")}
            return {"type": kinds.pop()} if len(kinds) == 1 and None not in kinds else {}
        if head == "literal":
            return {"enum": [a.strip("'\"") for a in args]}
        mapped = json_type(head)
        out: dict[str, Any] = {} if mapped is None else {"type": mapped}
        # Homogeneous containers (List[int], Set[str], Tuple[int, ...]) describe their items.
        if mapped == "array" and args and (len(args) == 1 or args[1:] == ["..."]):
            out["items"] = python_type_schema(args[0])
        return out
    mapped = json_type(text.split(".")[-1])
    return {} if mapped is None else {"type": mapped}


def parse_xlam_type(spec: str) -> tuple[dict[str, Any], bool]:
    """("List[str], optional") -> ({"type": "array", "items": {"type": "string"}}, optional=True).

    xLAM marks optional parameters only by the ", optional" suffix; that is the sole source of
    `required`.
    """
    head, *rest = _split_top(spec or "")
    optional = any(part.strip().lower().startswith("optional") for part in rest)
    return python_type_schema(head), optional


def normalise_xlam_tool(tool: dict[str, Any]) -> dict[str, Any]:
    """xLAM's {"name", "description", "parameters": {p: {"type": "str, optional", ...}}} -> JSON schema."""
    properties: dict[str, Any] = {}
    required: list[str] = []
    for pname, pinfo in (tool.get("parameters") or {}).items():
        pinfo = pinfo if isinstance(pinfo, dict) else {}
        schema, optional = parse_xlam_type(str(pinfo.get("type", "")))
        if "description" in pinfo:
            schema["description"] = pinfo["description"]
        if "default" in pinfo:
            schema["default"] = pinfo["default"]
        properties[pname] = schema
        if not optional:
            required.append(pname)
    return {
        "name": tool["name"],
        "description": tool.get("description", ""),
        "parameters": {"type": "object", "properties": properties, "required": required},
    }
