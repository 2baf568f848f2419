"""Value checks the schema's types cannot express, run by preflight before any job (no torch).

Every check reads its key with `OmegaConf.select`, so it does not depend on where a section
sits in the schema, and returns *all* problems, one line each (values truncated), so a user
fixes a command line in one go:

- ranges: seeds within numpy's (0 .. 2**32-1), counts > 0, every float finite;
- paths that must exist (adapter, GGUF, local data file / model folder);
- enum-like strings: attention implementations, trackers (known and installed), data categories;
- methods that are planned but not built;
- `resume_from`: a run of the same config (hash) in that directory, not a live one.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

NUMPY_SEED_MAX = 2**32 - 1

# transformers' attention implementations; a value with "/" names a hub kernel and is let through.
ATTN_IMPLEMENTATIONS = {
    "eager": None, "sdpa": None, "flex_attention": None,
    "flash_attention_2": "flash_attn", "flash_attention_3": "flash_attn_interface",
}
# transformers' `report_to` integrations -> the module each needs.
TRACKERS = {
    "tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "comet_ml": "comet_ml",
    "neptune": "neptune", "clearml": "clearml", "dvclive": "dvclive", "codecarbon": "codecarbon",
    "azure_ml": "azureml", "dagshub": "dagshub", "flyte": "flytekit", "swanlab": "swanlab", "trackio": "trackio",
}
XLAM_CATEGORIES = ("simple", "multiple", "parallel", "parallel_multiple", "irrelevance")

POSITIVE_INTS = (
    "method.train.logging_steps", "method.train.eval_steps", "method.train.save_steps",
    "method.train.batch_size", "method.train.grad_accum", "method.train.val_limit",
    "data.max_examples", "eval.limit", "eval.max_new_tokens", "method.dpo.max_prompts",
)


def short(value: Any, limit: int = 60) -> str:
    """VALUE as a command line shows it, cut to LIMIT characters (a 100k-character value stays one line)."""
    text = str(value)
    return text if len(text) <= limit else f"{text[:limit]}…({len(text)} chars)"


def planned_methods() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(built, planned) method names, from the torch-free method table."""
    from agentcoder.methods import METHODS, built_methods

    return tuple(built_methods()), tuple(name for name, spec in METHODS.items() if spec.module is None)


def _floats(node: Any, key: str = ""):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _floats(v, f"{key}.{k}" if key else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _floats(v, f"{key}[{i}]")
    elif isinstance(node, float):
        yield key, node


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _looks_local(path: str) -> bool:
    return path.startswith((".", "/", "~")) or Path(path).expanduser().exists()


def check_values(cfg: DictConfig, *, starting: bool = True) -> list[str]:
    """Every problem of the validated run config CFG, one line each ([] when it can run).

    STARTING=False (for `--cfg job`) leaves out what only matters to a run: planned methods.
    """
    errors: list[str] = []

    def get(key: str) -> Any:
        return OmegaConf.select(cfg, key, default=None)

    def bad(key: str, expected: str) -> None:
        errors.append(f"{key}={short(get(key))} is not allowed; expected {expected}")

    for key in ("seed",):
        value = get(key)
        if isinstance(value, int) and not 0 <= value <= NUMPY_SEED_MAX:
            bad(key, f"an int in 0..{NUMPY_SEED_MAX} (numpy's seed range)")
    for key in POSITIVE_INTS:
        value = get(key)
        if isinstance(value, int) and value <= 0:
            bad(key, "a positive int" + (" or null" if key in ("data.max_examples", "eval.limit",
                                                               "method.train.val_limit",
                                                               "method.dpo.max_prompts") else ""))
    max_steps = get("method.train.max_steps")
    if isinstance(max_steps, int) and (max_steps == 0 or max_steps < -1):
        bad("method.train.max_steps", "-1 (train method.train.epochs) or a positive int")
    plain = OmegaConf.to_container(cfg, resolve=True)
    for key, value in _floats(plain):
        if not math.isfinite(value) and not any(e.startswith(f"{key}=") for e in errors):
            bad(key, "a finite number")

    errors += _check_model(get)
    errors += _check_data(get)
    for tracker in get("method.train.report_to") or []:
        if tracker in ("none", "all"):
            continue
        if tracker not in TRACKERS:
            errors.append(f"method.train.report_to has {short(tracker)!r}; expected some of: "
                          f"{', '.join(TRACKERS)}, none")
        elif not _installed(TRACKERS[tracker]):
            errors.append(f"method.train.report_to has {tracker!r} but {TRACKERS[tracker]} is not installed "
                          f"(pip install {TRACKERS[tracker]}, or drop it)")
    if starting:
        built, planned = planned_methods()
        name = get("method.name")
        if name in planned:
            errors.append(f"method={name} is not available yet (planned); built methods: {', '.join(built)}")
    return errors


def _check_model(get) -> list[str]:
    errors = []
    attn = get("model.attn_implementation")
    if attn is not None and "/" not in str(attn):
        if attn not in ATTN_IMPLEMENTATIONS:
            errors.append(f"model.attn_implementation={short(attn)} is not allowed; expected null or one of "
                          f"{', '.join(ATTN_IMPLEMENTATIONS)}")
        elif ATTN_IMPLEMENTATIONS[attn] and not _installed(ATTN_IMPLEMENTATIONS[attn]):
            errors.append(f"model.attn_implementation={attn} needs the {ATTN_IMPLEMENTATIONS[attn]} package, "
                          f"which is not installed; use sdpa or install it")
    adapter = get("model.adapter")
    if adapter and _looks_local(str(adapter)):
        folder = Path(str(adapter)).expanduser()
        if not folder.is_dir():
            errors.append(f"model.adapter={short(adapter)} does not exist; point it at a saved adapter folder")
        elif not (folder / "adapter_config.json").is_file():
            errors.append(f"model.adapter={short(adapter)} is not a saved peft adapter (no adapter_config.json)")
    gguf = get("model.gguf_path")
    if gguf and not Path(str(gguf)).expanduser().is_file():
        errors.append(f"model.gguf_path={short(gguf)} is not a file; point it at a local .gguf")
    hub_id = get("model.hub_id")
    if get("model.source") == "hub" and get("model.init") != "random" and hub_id and \
            str(hub_id).startswith((".", "/", "~")) and not Path(str(hub_id)).expanduser().is_dir():
        errors.append(f"model.hub_id={short(hub_id)} looks like a local folder but does not exist")
    return errors


def _check_data(get) -> list[str]:
    errors = []
    path = get("data.path")
    if path:
        if get("data.source") == "embedded":
            errors.append(f"data.path={short(path)} is not read by data={get('data.name')} (its data come from "
                          f"the wheel); data.path is for hub datasets such as data=xlam60k")
        elif not Path(str(path)).expanduser().is_file():
            errors.append(f"data.path={short(path)} is not a file")
    categories = get("data.categories") or []
    if get("data.name") == "bfcl":
        from agentcoder.data.bfcl import CATEGORIES as known  # torch-free
    elif get("data.name") == "xlam60k":
        known = XLAM_CATEGORIES
    else:
        known = ()
    unknown = [c for c in categories if known and c not in known]
    if unknown:
        errors.append(f"data.categories has {short(unknown)}; {get('data.name')} categories are: {', '.join(known)}")
    return errors


# --------------------------------------------------------------------------- resume_from


def _flat(node: Any, key: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flat(v, f"{key}.{k}" if key else str(k)))
        return out
    return {key: node}


def _saved_config(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / ".hydra" / "config.yaml"
    if not path.is_file():
        return None
    saved = OmegaConf.load(path)
    try:
        return OmegaConf.to_container(saved, resolve=True)
    except Exception:  # noqa: BLE001 - an env var of that run may be unset now: compare unresolved
        return OmegaConf.to_container(saved, resolve=False)


def check_resume(cfg: DictConfig, resume_from: str) -> list[str]:
    """Problems with continuing the run in RESUME_FROM under config CFG (validated)."""
    from agentcoder.config import config_hash
    from agentcoder.files import read_json
    from agentcoder.tracking.records import RUN_FILE, effective_status

    run_dir = Path(resume_from).expanduser()
    where = f"resume_from={short(resume_from)}"
    if not run_dir.is_dir():
        return [f"{where} is not a run directory"]
    record = read_json(run_dir / RUN_FILE)
    if not record:
        return [f"{where} holds no {RUN_FILE}: not a run directory (nothing to resume)"]
    status = effective_status(record)
    if status == "running":
        return [f"{where} is still running (pid {record.get('pid')} on {record.get('host')}); "
                f"stop it first or wait for it"]
    want = config_hash(cfg)
    if record.get("config_hash") == want:
        return []
    diffs = []
    saved = record.get("config") or _saved_config(run_dir)
    if saved is not None:
        now, then = _flat(OmegaConf.to_container(cfg, resolve=True)), _flat(saved)
        for key in sorted(set(now) | set(then)):
            if key.split(".")[0] in ("resume", "resume_from", "hydra"):
                continue
            if now.get(key) != then.get(key):
                diffs.append(f"{key}: {short(then.get(key), 30)} -> {short(now.get(key), 30)}")
    detail = "; ".join(diffs[:4]) + (f"; +{len(diffs) - 4} more" if len(diffs) > 4 else "")
    return [f"{where} holds a {record.get('method')} run of another config "
            f"(hash {record.get('config_hash')} != {want}{': ' + detail if detail else ''}); "
            f"repeat its overrides to resume it"]
