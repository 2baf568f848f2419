"""Session fixtures shared by all test modules (tiny real tokenizer and model; see helpers.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

# Under pytest-xdist (`make test`: a worker per core) each worker and the runs it starts compute on
# one thread: two workers of two threads each on two cores spin against each other (torch ran up
# to 9x slower). Set before torch is first imported, here or in a child process.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[_var] = "1"

import pytest  # noqa: E402

# `from tests.helpers import compose_cfg` must work under a bare `pytest` too, not only `python -m pytest`.
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from tests.helpers import build_tiny_tokenizer, compose_cfg, save_tiny_model  # noqa: E402

__all__ = ["compose_cfg", "tiny_model_dir", "tiny_tokenizer"]


@pytest.fixture(scope="session")
def tiny_tokenizer() -> Any:
    """A trained byte-level BPE with ChatML specials; pad = eos = <|im_end|>; padding left."""
    return build_tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_tokenizer: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny LlamaForCausalLM + tokenizer; load with model.source=hub model.hub_id=<dir>."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny_model"), tiny_tokenizer)
