"""Shared test helpers: compose the real conf/ tree, and tiny real tokenizer/model builders.

conftest.py wraps the builders in session fixtures; other test modules import compose_cfg.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Enough text for a BPE to learn JSON punctuation and tool-call shaped strings.
_CORPUS = [
    'You are a helpful assistant with access to tools. Call a function when it helps.',
    '[{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}]',
    '{"name": "search_web", "arguments": {"query": "python list sort", "max_results": 5}}',
    '<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2.5, "flag": true, "x": null}}\n</tool_call>',
    'def add(a: int, b: int) -> int:\n    return a + b',
    'What is the weather like in Berlin today? Please answer in JSON.',
    'The function get_stock_price(symbol: str) returns the latest price of a stock.',
    'Functions: [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]',
    '0123456789 []{}():;,."\' _-+=*/<>|!?@#$%&~`^\\',
]


def compose_cfg(*overrides: str, cache_dir: str | Path | None = None) -> DictConfig:
    """Compose conf/config.yaml with OVERRIDES and validate it, like the launcher does.

    model.dtype is float32 unless OVERRIDES set it: tests compare logits and loss curves within fp32
    tolerances, and `auto` would give bf16 on some machines and fp32 on others.
    """
    from agentcoder.preflight import compose_config

    extra = [f"cache_dir={cache_dir}"] if cache_dir is not None else []
    if not any(o.lstrip("+").startswith("model.dtype=") for o in overrides):
        extra.append("model.dtype=float32")
    return compose_config([*overrides, *extra])


def build_tiny_tokenizer() -> Any:
    """A real byte-level BPE fast tokenizer with ChatML specials, pad = eos = <|im_end|>, left padding."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_CORPUS * 4, trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
    )
    tok.chat_template = CHATML_TEMPLATE
    tok.padding_side = "left"
    return tok


def save_tiny_model(path: Path, tokenizer: Any, seed: int = 0) -> Path:
    """Save a tiny random LlamaForCausalLM plus TOKENIZER as an HF folder at PATH."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=len(tokenizer), max_position_embeddings=512,
        tie_word_embeddings=False, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


def save_random_adapter(cfg: DictConfig, target: Path, std: float, seed: int = 1) -> Path:
    """Save a LoRA (cfg.method.lora on cfg's model) whose B matrices are non-zero, so that the
    adapted model differs from its base (a fresh LoRA would not)."""
    import torch
    from peft import get_peft_model

    from agentcoder.models import load_model
    from agentcoder.training.setup import lora_config

    model = get_peft_model(load_model(cfg).model, lora_config(cfg))
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, std)
    model.save_pretrained(str(target))
    return target


def refuse_network(monkeypatch: Any) -> list[object]:
    """Make every DNS lookup and socket connect fail, and return the list that records each attempt."""
    import socket

    attempts: list[object] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(args)
        raise OSError("network used in an offline test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts
