"""The canonical example every corpus is normalised into, and the call types shared with evaluation."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


class DataError(RuntimeError):
    """A corpus cannot be loaded or split; the message is one line saying what to do."""


@dataclass(frozen=True)
class ToolCall:
    """A predicted call: a function name and concrete argument values."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass
class GoldCall:
    """A reference call: for each argument, the list of acceptable values.

    xLAM gives one value per argument; BFCL lists several.  An empty string `""` among the
    acceptable values means the argument may be omitted.
    """

    name: str
    arguments: dict[str, list[Any]] = field(default_factory=dict)


@dataclass
class Example:
    """One function-calling example.

    `tools` are OpenAI-style function schemas: {"name", "description", "parameters": {"type":
    "object", "properties": {arg: {"type", "description", "default"?, "enum"?, "items"?}},
    "required": [...]}} with JSON-schema type names.  `answer` is empty when no call is expected.
    """

    id: str
    source: str
    category: str
    messages: list[dict[str, str]]
    tools: list[dict[str, Any]]
    answer: list[GoldCall]

    @property
    def expects_call(self) -> bool:
        return bool(self.answer)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Example:
        return cls(
            id=d["id"],
            source=d["source"],
            category=d["category"],
            messages=list(d["messages"]),
            tools=list(d["tools"]),
            answer=[GoldCall(c["name"], dict(c["arguments"])) for c in d["answer"]],
        )
