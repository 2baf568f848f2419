"""Every value check of a run config, one function per config section, each key checked once.

The schema (agentcoder.config) catches unknown keys and wrong types; these functions catch what
types cannot express: ranges, choices, paths that must exist, packages a setting needs.  Each
returns *all* its problems, one line each naming key, value and what is allowed, so a user fixes a
command line in one go.  `problems` runs every section the config has; preflight and the launcher
call it through `validate`.  Nothing here imports torch.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from agentcoder import ranks
from agentcoder.config import (
    METHODS,
    ConfigError,
    all_train_params,
    built_methods,
    merge_schema,
    sft_train_params,
    training_defaults,
)
from agentcoder.evaluation.metrics import METRICS

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
# Metrics of the result's `overall` an optimizing sweeper may maximise (eval.objective).
OBJECTIVES = tuple(name for name, metric in METRICS.items() if metric.higher_is_better)
XLAM_CATEGORIES = ("simple", "multiple", "parallel", "parallel_multiple", "irrelevance")


def short(value: Any, limit: int = 60) -> str:
    """VALUE as a command line shows it, cut to LIMIT characters (a 100k-character value stays one line)."""
    text = str(value)
    return text if len(text) <= limit else f"{text[:limit]}…({len(text)} chars)"


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _looks_local(path: str) -> bool:
    return path.startswith((".", "/", "~")) or Path(path).expanduser().exists()


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class Section:
    """The problems of one config section at key prefix AT: `need(key, ok, allowed)` notes one."""

    def __init__(self, node: DictConfig, at: str) -> None:
        self.node, self.at, self.lines = node, at, []

    def __getitem__(self, key: str) -> Any:
        return OmegaConf.select(self.node, key, default=None)

    def need(self, key: str, ok: bool, allowed: str) -> None:
        if not ok:
            self.lines.append(f"{self.at}{key}={short(self[key])} is not allowed; expected {allowed}")

    def one_of(self, key: str, choices: tuple | dict) -> None:
        if self[key] is not None:
            self.need(key, self[key] in choices, "one of " + ", ".join(map(str, choices)))

    def positive_int(self, key: str, *, null: bool = False, auto: str = "") -> None:
        value = self[key]
        if (value is None and null) or (auto and value == "auto"):
            return
        self.need(key, _int(value) and value > 0,
                  "a positive int" + (" or null" if null else "") + (f" or auto ({auto})" if auto else ""))


# --------------------------------------------------------------------------- sections


def check_run(s: Section) -> None:
    """The top-level keys."""
    seed = s["seed"]
    s.need("seed", not _int(seed) or 0 <= seed <= NUMPY_SEED_MAX, f"an int in 0..{NUMPY_SEED_MAX} (numpy's seed range)")
    s.need("data_fraction", 0.0 < s["data_fraction"] <= 1.0, "a number in (0, 1], e.g. data_fraction=0.1")


def check_model(s: Section) -> None:
    s.one_of("source", ("embedded", "hub"))
    s.one_of("tool_format", ("json", "qwen"))
    s.one_of("init", ("pretrained", "random"))
    s.one_of("dtype", ("auto", "float32", "bfloat16", "float16"))
    if s["source"] == "embedded" and s["embedded"] is None and s["gguf_path"] is None:
        s.lines.append("model.embedded is missing for an embedded model; set it or model.gguf_path")
    attn = s["attn_implementation"]
    if attn is not None and "/" not in str(attn):
        if attn not in ATTN_IMPLEMENTATIONS:
            s.lines.append(f"model.attn_implementation={short(attn)} is not allowed; expected null or one of "
                           f"{', '.join(ATTN_IMPLEMENTATIONS)}")
        elif ATTN_IMPLEMENTATIONS[attn] and not _installed(ATTN_IMPLEMENTATIONS[attn]):
            s.lines.append(f"model.attn_implementation={attn} needs the {ATTN_IMPLEMENTATIONS[attn]} package, "
                           f"which is not installed; use sdpa or install it")
    adapter = s["adapter"]
    if adapter and _looks_local(str(adapter)):
        folder = Path(str(adapter)).expanduser()
        if not folder.is_dir():
            s.lines.append(f"model.adapter={short(adapter)} does not exist; point it at a saved adapter folder")
        elif not (folder / "adapter_config.json").is_file():
            s.lines.append(f"model.adapter={short(adapter)} is not a saved peft adapter (no adapter_config.json)")
    gguf = s["gguf_path"]
    if gguf and not Path(str(gguf)).expanduser().is_file():
        s.lines.append(f"model.gguf_path={short(gguf)} is not a file; point it at a local .gguf")
    hub_id = s["hub_id"]
    if s["source"] == "hub" and s["init"] != "random" and hub_id and \
            str(hub_id).startswith((".", "/", "~")) and not Path(str(hub_id)).expanduser().is_dir():
        s.lines.append(f"model.hub_id={short(hub_id)} looks like a local folder but does not exist")


def check_quant(s: Section) -> None:
    s.one_of("bnb_4bit_quant_type", ("nf4", "fp4"))
    s.one_of("bnb_4bit_compute_dtype", ("bfloat16", "float16", "float32"))
    s.need("load_in_4bit", not (s["load_in_4bit"] and s["load_in_8bit"]), "only one of 8-bit and 4-bit")


def check_data(s: Section) -> None:
    s.one_of("source", ("embedded", "hub"))
    for part in ("train", "val", "test"):
        s.need(f"split.{part}", 0.0 < s[f"split.{part}"] < 1.0, "a share in (0, 1)")
    total = s["split.train"] + s["split.val"] + s["split.test"]
    s.need("split.train", abs(total - 1.0) < 1e-6, f"train+val+test to sum to 1 (they sum to {total:g})")
    s.positive_int("max_examples", null=True)
    path = s["path"]
    if path:
        if s["source"] == "embedded":
            s.lines.append(f"data.path={short(path)} is not read by data={s['name']} (its data come from "
                           f"the wheel); data.path is for hub datasets such as data=xlam60k")
        elif not Path(str(path)).expanduser().is_file():
            s.lines.append(f"data.path={short(path)} is not a file")
    if s["name"] == "bfcl":
        from agentcoder.data.bfcl import CATEGORIES as known  # torch-free; imports nothing of config
    else:
        known = XLAM_CATEGORIES if s["name"] == "xlam60k" else ()
    unknown = [c for c in s["categories"] or [] if known and c not in known]
    if unknown:
        s.lines.append(f"data.categories has {short(unknown)}; {s['name']} categories are: {', '.join(known)}")


def check_eval(s: Section) -> None:
    s.one_of("split", ("train", "val", "test", "none"))
    s.one_of("parallel_matching", ("optimal", "greedy"))
    s.one_of("irrelevance_unparsed", ("correct", "wrong"))
    s.one_of("objective", OBJECTIVES)
    s.positive_int("batch_size", auto="by token_budget")
    s.positive_int("max_new_tokens")
    s.positive_int("token_budget", auto="by the device")
    s.need("latency_probe", s["latency_probe"] >= 0, "an int >= 0 (0 turns the probe off)")
    s.positive_int("limit", null=True)


def check_train(s: Section) -> None:
    """method.train, and the SFT stage's `sft_train` (the same settings, checked the same way)."""
    s.one_of("scheduler", ("cosine", "linear", "constant", "constant_with_warmup"))
    s.one_of("packing", ("auto", "rows", "flat", "none"))
    s.need("lr", 0.0 < s["lr"] < 1.0, "a learning rate in (0, 1)")
    s.need("epochs", s["epochs"] > 0, "a positive number")
    s.positive_int("batch_size", auto="tokens_per_batch // max_length")
    s.positive_int("tokens_per_batch", auto="2048 on CPU, 8192 on GPU")
    s.need("max_drop", 0.0 <= s["max_drop"] <= 0.5, "a share of the train examples in [0, 0.5]")
    s.positive_int("grad_accum")
    s.need("warmup_ratio", 0.0 <= s["warmup_ratio"] <= 0.5, "a share of the run's steps in [0, 0.5]")
    s.positive_int("evaluations")
    s.positive_int("logging_steps")
    s.positive_int("eval_steps", null=True)
    s.positive_int("save_steps", null=True)
    s.positive_int("val_limit", null=True)
    max_steps = s["max_steps"]
    s.need("max_steps", not _int(max_steps) or max_steps == -1 or max_steps > 0,
           "-1 (train for `epochs`) or a positive int")
    ml = s["max_length"]
    s.need("max_length", ml is None or ml == "auto" or (_int(ml) and ml > 0), "a positive int, auto or null")
    s.need("gradient_checkpointing", s["gradient_checkpointing"] in ("auto", True, False), "one of auto, true, false")
    if s["packing"] in ("auto", "rows", "flat", "none"):
        s.need("packing", s["packing"] == "none" or ml is not None,
               "none when max_length is null (packing fills rows of max_length tokens)")
    for tracker in s["report_to"] or []:
        if tracker in ("none", "all"):
            continue
        if tracker not in TRACKERS:
            s.lines.append(f"{s.at}report_to has {short(tracker)!r}; expected some of: {', '.join(TRACKERS)}, none")
        elif not _installed(TRACKERS[tracker]):
            s.lines.append(f"{s.at}report_to has {tracker!r} but {TRACKERS[tracker]} is not installed "
                           f"(pip install {TRACKERS[tracker]}, or drop it)")


def check_lora(s: Section) -> None:
    s.need("r", s["r"] > 0, "a positive int (LoRA rank)")
    s.need("alpha", s["alpha"] > 0, "a positive number")
    s.need("dropout", 0.0 <= s["dropout"] < 1.0, "a share in [0, 1)")


def check_dpo(s: Section) -> None:
    s.one_of("loss_type", ("sigmoid", "ipo", "hinge", "robust"))
    s.need("beta", s["beta"] > 0, "a positive number")
    s.need("num_samples", s["num_samples"] > 0, "a positive int (candidates per train prompt)")
    s.need("temperature", s["temperature"] > 0, "a positive number")
    s.need("top_p", 0 < s["top_p"] <= 1, "a number in (0, 1]")
    for key in ("max_prompt_length", "max_completion_length", "max_prompts"):
        s.positive_int(key, null=True)


def check_grpo(s: Section) -> None:
    s.one_of("vllm_mode", ("colocate", "server"))
    s.need("num_generations", s["num_generations"] >= 2, "an int >= 2 (GRPO compares a group)")
    s.need("beta", s["beta"] >= 0, "a number >= 0")
    s.need("temperature", s["temperature"] > 0, "a positive number")
    s.need("max_completion_length", s["max_completion_length"] > 0, "a positive int")
    s.need("epsilon", 0 < s["epsilon"] < 1, "a number in (0, 1)")
    s.need("vllm_gpu_memory_utilization", 0 < s["vllm_gpu_memory_utilization"] < 1, "a share in (0, 1)")
    if s["use_vllm"] and not _installed("vllm"):
        s.lines.append(f"{s.at}use_vllm=true needs vLLM, which is not installed (pip install vllm, on a GPU "
                       f"machine), or drop it")


def check_ppo(s: Section) -> None:
    s.need("kl_coef", s["kl_coef"] >= 0, "a number >= 0")
    s.need("clip_range", 0 < s["clip_range"] < 1, "a number in (0, 1)")
    s.need("value_clip_range", s["value_clip_range"] > 0, "a positive number")
    s.need("gamma", 0 < s["gamma"] <= 1, "a number in (0, 1]")
    s.need("lam", 0 <= s["lam"] <= 1, "a number in [0, 1]")
    s.need("ppo_epochs", s["ppo_epochs"] > 0, "a positive int")
    s.need("rollout_batch_size", s["rollout_batch_size"] > 0, "a positive int")
    s.need("max_new_tokens", s["max_new_tokens"] > 0, "a positive int")
    s.need("temperature", s["temperature"] > 0, "a positive number")
    s.need("vf_coef", s["vf_coef"] >= 0, "a number >= 0")
    s.need("max_grad_norm", s["max_grad_norm"] > 0, "a positive number")
    s.need("missing_eos_penalty", s["missing_eos_penalty"] is None or s["missing_eos_penalty"] >= 0,
           "a number >= 0 (subtracted from the score of a completion cut before its stop token) or null")


def check_reward(s: Section) -> None:
    s.need("exact", s["exact"] > s["function_name"] + s["arguments"],
           "more than function_name + arguments (partial credit must stay below an exact match)")


# A method's sub-sections and their checks: a method schema with a `dpo` field gets check_dpo, and so on.
METHOD_SECTIONS: dict[str, Callable[[Section], None]] = {
    "train": check_train, "lora": check_lora, "dpo": check_dpo, "grpo": check_grpo, "ppo": check_ppo,
    "reward": check_reward,
}


def _check_vllm_quant(s: Section) -> None:
    """vLLM generates from a base it loads itself: a bitsandbytes base is refused here, before any model
    loads (TRL refuses 8-bit in colocate mode only once the SFT stage has trained and GRPO starts)."""
    quant = OmegaConf.select(s.node, "..quant", default=None)
    if quant is None or not (quant.load_in_8bit or quant.load_in_4bit):
        return
    if quant.load_in_8bit:
        why = ("vLLM cannot load 8-bit bitsandbytes weights (TRL's colocate mode raises that only after "
               "the SFT stage has trained)")
    else:
        why = "vLLM with a 4-bit bitsandbytes base is not shown to work here"
    s.lines.append(f"{s.at}grpo.use_vllm=true is not allowed with quant={quant.name}: {why}; use quant=none "
                   f"with vLLM, or drop use_vllm")


def check_method(s: Section, *, starting: bool) -> None:
    """method.*: its own keys, each sub-section, and the rules that tie two of them together."""
    name = s["name"]
    s.one_of("init", ("sft", "base"))
    for key, check in METHOD_SECTIONS.items():
        if s[key] is not None:
            sub = Section(s.node[key], f"{s.at}{key}.")
            check(sub)
            s.lines += sub.lines
    bs, accum = s["train.batch_size"], s["train.grad_accum"]
    if s["grpo"] is not None and _int(accum):
        k = s["grpo.num_generations"]
        s.need("train.batch_size", _int(bs) and (bs * accum) % k == 0,
               f"batch_size x grad_accum to be a multiple of method.grpo.num_generations={k}")
    if s["grpo.use_vllm"]:
        _check_vllm_quant(s)
    if s["ppo"] is not None:
        s.need("train.batch_size", _int(bs), "a positive int (rows per PPO forward)")
    if starting and METHODS[name].module is None:
        s.lines.append(f"method={name} is not available yet (planned); built methods: {', '.join(built_methods())}")
    n = ranks.world_size()
    if starting and n > 1 and not METHODS[name].several_processes:
        s.lines.append(f"method={name} runs on one process, and this launch started {n} (WORLD_SIZE={n}); "
                       f"run it with plain python, or sweep runs side by side with -m")


def _floats(node: Any, key: str = "") -> Iterator[tuple[str, float]]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _floats(v, f"{key}.{k}" if key else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _floats(v, f"{key}[{i}]")
    elif isinstance(node, float):
        yield key, node


def problems(cfg: DictConfig, *, starting: bool = True) -> list[str]:
    """Every problem of CFG (merged onto the schema), one line each; [] when it can run.

    STARTING=False (for `--cfg job`) leaves out what only matters to a run: planned methods.
    """
    lines: list[str] = []
    run = Section(cfg, "")
    check_run(run)
    lines += run.lines
    for group, check in (("model", check_model), ("quant", check_quant), ("data", check_data), ("eval", check_eval)):
        s = Section(cfg[group], f"{group}.")
        check(s)
        lines += s.lines
    method = Section(cfg.method, "method.")
    check_method(method, starting=starting)
    lines += method.lines
    # all_train and sft_train values are checked as method.train's, and named by the key the user set
    # (method.train holds them already when the method trains: those lines go).
    for key, params in (("all_train", all_train_params), ("sft_train", sft_train_params)):
        if cfg[key]:
            s = Section(params(cfg, training_defaults()), f"{key}.")
            check_train(s)
            given = tuple(f"method.train.{name}=" for name in cfg[key])
            lines = [ln for ln in lines if not ln.startswith(given)]
            mine = tuple(f"{key}.{name}{sep}" for name in cfg[key] for sep in ("=", " "))  # "... has 'x'"
            lines += [ln for ln in s.lines if ln.startswith(mine)]
    said = {ln.split("=", 1)[0] for ln in lines}
    plain = OmegaConf.to_container(cfg, resolve=True)
    lines += [f"{key}={value} is not allowed; expected a finite number" for key, value in _floats(plain)
              if not math.isfinite(value) and key not in said]
    return list(dict.fromkeys(lines))


SEARCH_DIRECTIONS = ("maximize", "minimize")
SEARCH_SAMPLERS = ("tpe", "random")


def search_problems(settings: Any) -> list[str]:
    """hydra.sweeper's settings under hydra/sweeper=optuna, one line per bad value."""
    s = Section(OmegaConf.create(dict(settings)), "hydra.sweeper.")
    s.positive_int("n_trials")
    s.positive_int("n_jobs")
    s.one_of("direction", SEARCH_DIRECTIONS)
    s.one_of("sampler", SEARCH_SAMPLERS)
    s.need("startup_trials", _int(s["startup_trials"]) and s["startup_trials"] >= 0, "an int >= 0")
    return s.lines


def validate(cfg: DictConfig, *, starting: bool = True) -> DictConfig:
    """CFG merged onto the schema and resolved, or ConfigError with one line per problem."""
    merged = merge_schema(cfg)
    lines = problems(merged, starting=starting)
    if lines:
        raise ConfigError("\n".join(lines))
    return merged
