"""The shared prompt renderer: exact output for a tools-aware template and for the fallback."""

from __future__ import annotations

import json

import pytest

from agentcoder.data.example import Example, GoldCall
from agentcoder.data.prompts import (
    NO_CALL_TARGET,
    render_prompt,
    render_target,
    supports_tools,
)
from agentcoder.data.rows import PromptFormat

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Written for this test after the shape of Qwen2.5's tool section: the tools go into the system
# turn as one JSON object per line inside <tools></tools>.
QWEN_LIKE = (
    "{%- if tools %}"
    "{{- '<|im_start|>system\\n' }}"
    "{%- if messages[0].role == 'system' %}{{- messages[0].content }}"
    "{%- else %}{{- 'You are a helpful assistant.' }}{%- endif %}"
    "{{- '\\n\\n# Tools\\n<tools>' }}"
    "{%- for tool in tools %}{{- '\\n' }}{{- tool | tojson }}{%- endfor %}"
    "{{- '\\n</tools><|im_end|>\\n' }}"
    "{%- elif messages[0].role == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}{%- if message.role != 'system' %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def tiny_tokenizer(chat_template: str):
    """A real fast tokenizer (WordLevel, ChatML specials) small enough to build in a test."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2, "[UNK]": 3, "hello": 4}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|im_end|>",
        unk_token="[UNK]", chat_template=chat_template,
    )


TOOL = {
    "name": "get_weather",
    "description": "Weather of a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
                   "required": ["city"]},
}


def example(answer: list[GoldCall], system: str | None = None) -> Example:
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    if system is not None:
        messages.insert(0, {"role": "system", "content": system})
    return Example("t_0", "test", "simple", messages, [TOOL], answer)


PARIS = [GoldCall("get_weather", {"city": ["Paris", "Paris, France"], "unit": ["celsius", ""]})]


def test_template_detection():
    assert supports_tools(tiny_tokenizer(QWEN_LIKE))
    assert not supports_tools(tiny_tokenizer(CHATML))


def test_qwen_like_template_gets_tools_natively():
    prompt = render_prompt(example(PARIS), tiny_tokenizer(QWEN_LIKE), "qwen")
    wrapped = json.dumps({"type": "function", "function": TOOL}, ensure_ascii=False)
    assert prompt == (
        "<|im_start|>system\nYou are a helpful assistant.\n\n# Tools\n<tools>\n"
        f"{wrapped}\n</tools><|im_end|>\n"
        "<|im_start|>user\nWeather in Paris?<|im_end|>\n<|im_start|>assistant\n"
    )


def test_fallback_adds_a_system_message_listing_the_tools():
    prompt = render_prompt(example(PARIS), tiny_tokenizer(CHATML), "json")
    system = (
        "You can call the following functions:\n"
        f"{json.dumps(TOOL)}\n\n"
        "To call functions, answer with only a JSON list of calls, each an object "
        '{"name": <function name>, "arguments": {<argument name>: <value>, ...}}, and nothing else, '
        'e.g. [{"name": "f", "arguments": {"x": 1}}]. '
        "If none of the functions fits the request, answer in plain text without calling any."
    )
    assert prompt == (
        f"<|im_start|>system\n{system}<|im_end|>\n"
        "<|im_start|>user\nWeather in Paris?<|im_end|>\n<|im_start|>assistant\n"
    )


def test_fallback_prepends_to_an_existing_system_message():
    prompt = render_prompt(example(PARIS, system="Be brief."), tiny_tokenizer(CHATML), "json")
    assert prompt.count("<|im_start|>system\n") == 1
    assert prompt.startswith("<|im_start|>system\nYou can call the following functions:\n")
    assert "answer in plain text without calling any.\n\nBe brief.<|im_end|>\n<|im_start|>user\n" in prompt


def test_targets_pick_the_first_acceptable_value_and_omit_leading_empty():
    rome = GoldCall("get_weather", {"city": ["Rome"], "unit": [""], "days": ["", 3]})
    ex = example(PARIS + [rome])
    assert render_target(ex, "qwen") == (
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}'
        '\n</tool_call>\n'
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call>'
    )
    assert json.loads(render_target(ex, "json")) == [
        {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}},
        {"name": "get_weather", "arguments": {"city": "Rome"}},
    ]


def test_no_call_target_is_plain_text():
    assert render_target(example([]), "json") == NO_CALL_TARGET
    assert render_target(example([]), "qwen") == NO_CALL_TARGET


@pytest.mark.parametrize("template, fmt", [(QWEN_LIKE, "qwen"), (CHATML, "json"), (CHATML, "qwen")])
def test_training_prompt_is_the_evaluation_prompt(template, fmt):
    tok = tiny_tokenizer(template)
    ex = example(PARIS, system="Be brief.")
    row = PromptFormat(tok, fmt).sft_row(ex)
    assert row["prompt"] == render_prompt(ex, tok, fmt)
    assert row["completion"] == render_target(ex, fmt) + "<|im_end|>"


def test_unknown_tool_format_is_refused():
    with pytest.raises(ValueError, match="tool_format"):
        render_target(example(PARIS), "xml")
