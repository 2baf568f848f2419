"""The one prompt renderer shared by training and evaluation, and the assistant targets.

Training and evaluation must see byte-identical prompts, otherwise a fine-tuned model is
scored on a format it never saw; so both go through `render_prompt`.

Tools reach the model in one of two ways:
  * the tokenizer's chat template supports tools (its source mentions `tools`, e.g.
    Qwen2.5): the tools go through `apply_chat_template(..., tools=...)` and the model answers
    in its native format (tool_format "qwen": <tool_call> blocks);
  * otherwise (e.g. SmolLM2) a system message lists the tools as JSON and says how to answer
    (tool_format "json": a JSON list of {"name", "arguments"}; "qwen": <tool_call> blocks), or
    in plain text when no tool fits.  An existing system message keeps its text after ours.

A tokenizer without a chat template (a base model: StarCoder2) gets the project's plain format
instead, the same fallback messages written as `### <Role>` sections (PLAIN_ROLES) ending in an open
`### Assistant` section.  `prompt_style` names which of the three a tokenizer gets (run.json's
model.prompt_style).
"""

from __future__ import annotations

import json
from typing import Any

from agentcoder.data.example import Example, GoldCall

NO_CALL_TARGET = "None of the available functions can help with this request."

_FORMAT_HELP = {
    "json": (
        "To call functions, answer with only a JSON list of calls, each an object "
        '{"name": <function name>, "arguments": {<argument name>: <value>, ...}}, and nothing else, '
        'e.g. [{"name": "f", "arguments": {"x": 1}}].'
    ),
    "qwen": (
        "To call functions, answer with only one block per call, each "
        '<tool_call>\n{"name": <function name>, "arguments": {<argument name>: <value>, ...}}\n</tool_call>'
        ", and nothing else."
    ),
}


PLAIN_ROLES = {"system": "System", "user": "User", "assistant": "Assistant", "tool": "Tool"}


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def prompt_style(tokenizer: Any) -> str:
    """How render_prompt writes this tokenizer's prompts: "chat_template+tools" (the template renders
    the tools), "chat_template" (tools in our system message) or "plain" (no template)."""
    if not has_chat_template(tokenizer):
        return "plain"
    return "chat_template+tools" if supports_tools(tokenizer) else "chat_template"


def plain_prompt(messages: list[dict[str, str]], tokenizer: Any) -> str:
    """MESSAGES as `### <Role>` sections, then the open assistant section.

    Starts with the BOS token where the tokenizer has one of its own (not its EOS, as GPT-2 style
    vocabularies share one): a template would write it, and the run's tokenizer adds none itself
    (models/tokens.py).
    """
    bos = getattr(tokenizer, "bos_token", None)
    start = bos if bos and bos != getattr(tokenizer, "eos_token", None) else ""
    sections = [f"### {PLAIN_ROLES.get(m['role'], m['role'].title())}\n{m['content']}\n\n" for m in messages]
    return start + "".join(sections) + f"### {PLAIN_ROLES['assistant']}\n"


def supports_tools(tokenizer: Any) -> bool:
    """Whether the chat template renders a `tools` argument (a template that ignores it would drop them)."""
    template = getattr(tokenizer, "chat_template", None) or ""
    if isinstance(template, dict):
        template = "\n".join(str(t) for t in template.values())
    return "tools" in template


def tool_instructions(tools: list[dict[str, Any]], tool_format: str) -> str:
    """The fallback system text: how to answer, then one JSON tool schema per line."""
    if tool_format not in _FORMAT_HELP:
        raise ValueError(f"tool_format={tool_format!r}; expected one of {', '.join(_FORMAT_HELP)}")
    listing = "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)
    return (
        "You can call the following functions:\n"
        f"{listing}\n\n"
        f"{_FORMAT_HELP[tool_format]} "
        "If none of the functions fits the request, answer in plain text without calling any."
    )


def fallback_messages(example: Example, tool_format: str) -> list[dict[str, str]]:
    """The example's messages with the tool instructions in the (first) system message."""
    text = tool_instructions(example.tools, tool_format)
    messages = [dict(m) for m in example.messages]
    if messages and messages[0]["role"] == "system":
        messages[0]["content"] = f"{text}\n\n{messages[0]['content']}"
    else:
        messages.insert(0, {"role": "system", "content": text})
    return messages


def render_prompt(example: Example, tokenizer: Any, tool_format: str) -> str:
    """The prompt text up to and including the assistant header, for training and evaluation alike."""
    if not has_chat_template(tokenizer):
        return plain_prompt(fallback_messages(example, tool_format), tokenizer)
    if supports_tools(tokenizer):
        tools = [{"type": "function", "function": t} for t in example.tools]
        return tokenizer.apply_chat_template(
            example.messages, tools=tools, add_generation_prompt=True, tokenize=False
        )
    return tokenizer.apply_chat_template(
        fallback_messages(example, tool_format), add_generation_prompt=True, tokenize=False
    )


def target_arguments(call: GoldCall) -> dict[str, Any]:
    """One concrete value per argument: the first acceptable one; an argument whose first acceptable
    value is "" (may be omitted) is left out, so xLAM targets keep the dataset's own answer rather
    than spelling out defaults it never wrote."""
    return {name: values[0] for name, values in call.arguments.items() if values and values[0] != ""}


def render_target(example: Example, tool_format: str) -> str:
    """The assistant turn the model should produce, in TOOL_FORMAT; plain text when no call is due."""
    if not example.answer:
        return NO_CALL_TARGET
    calls = [{"name": c.name, "arguments": target_arguments(c)} for c in example.answer]
    if tool_format == "qwen":
        return "\n".join(f"<tool_call>\n{json.dumps(c, ensure_ascii=False)}\n</tool_call>" for c in calls)
    if tool_format == "json":
        return json.dumps(calls, ensure_ascii=False)
    raise ValueError(f"tool_format={tool_format!r}; expected one of json, qwen")
