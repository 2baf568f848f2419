"""One scrubber for every file a run writes: run.json, metrics, error.txt, Hydra's `.hydra/` and
`multirun.yaml`.

Two kinds of secret are replaced by `<redacted>` (a plain scalar in YAML and a string in JSON,
so scrubbed files still parse):
- the value of every secret-looking environment variable (`HF_TOKEN`, `OPENAI_API_KEY`, ...),
  whether the config named it through `${oc.env:...}` or the value was pasted in;
- token-shaped strings, whatever their origin: known prefixes (`hf_`, `sk-`, `ghp_`, `AKIA`...)
  and long random-looking strings (mixed case and digits, high entropy).  Hex digests (sha256,
  git commits, config hashes) are single-case and are left alone.
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from pathlib import Path

from agentcoder.files import atomic_write_text

REDACTED = "<redacted>"
SECRET_ENV_MARKERS = ("TOKEN", "SECRET", "PASSWORD", "PASSWD", "API_KEY", "APIKEY", "ACCESS_KEY", "PRIVATE_KEY",
                      "CREDENTIAL")

_KNOWN_PREFIX = re.compile(
    r"(?<![A-Za-z0-9])(?:"
    r"hf_[A-Za-z0-9]{30,}"
    r"|sk-[A-Za-z0-9_\-]{20,}"
    r"|gh[pousr]_[A-Za-z0-9]{30,}"
    r"|github_pat_[A-Za-z0-9_]{20,}"
    r"|glpat-[A-Za-z0-9_\-]{20,}"
    r"|xox[abprs]-[A-Za-z0-9\-]{10,}"
    r"|AKIA[0-9A-Z]{16}"
    r")"
)
_LONG_WORD = re.compile(r"(?<![A-Za-z0-9_\-+=])[A-Za-z0-9_\-+=]{32,}(?![A-Za-z0-9_\-+=])")


def _entropy(text: str) -> float:
    counts = Counter(text)
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


def looks_like_token(text: str) -> bool:
    """True for a string shaped like a credential (see the module docstring)."""
    if _KNOWN_PREFIX.fullmatch(text):
        return True
    if not _LONG_WORD.fullmatch(text):
        return False
    mixed = any(c.isupper() for c in text) and any(c.islower() for c in text) and any(c.isdigit() for c in text)
    return mixed and _entropy(text) >= 4.0


def secret_env_values() -> list[str]:
    values = {v for k, v in os.environ.items() if any(m in k.upper() for m in SECRET_ENV_MARKERS) and len(v) >= 6}
    return sorted(values, key=len, reverse=True)  # longest first: a secret containing another


def scrub(text: str) -> str:
    """TEXT with every secret env value and every token-shaped string replaced by <redacted>."""
    for secret in secret_env_values():
        text = text.replace(secret, REDACTED)
    text = _KNOWN_PREFIX.sub(REDACTED, text)
    return _LONG_WORD.sub(lambda m: REDACTED if looks_like_token(m.group(0)) else m.group(0), text)


def scrub_file(path: Path) -> None:
    """Rewrite PATH scrubbed (atomically, keeping it readable) if it holds a secret."""

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return
    clean = scrub(text)
    if clean != text:
        atomic_write_text(path, clean)
