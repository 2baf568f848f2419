"""Check command-line overrides before Hydra starts a job, and say in one line what is wrong.

Hydra's own messages for a bad group option or an unknown key span several lines and, in a
sweep, only surface after other jobs ran.  Here every value of every override is checked up
front: group options against `conf/<group>/`, and each configuration the sweep can produce
(one value changed at a time) against the typed schema in `agentcoder.config`.
"""

from __future__ import annotations

import re
from pathlib import Path

from omegaconf import DictConfig

from agentcoder.config import ConfigError, validate

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"

# Hydra flags that take a value (the value is not an override).
_VALUE_FLAGS = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                "--config-dir", "-cd", "--experimental-rerun", "--info", "-i", "--shell-completion", "-sc"}
_OPTIONAL_VALUE = {"--info", "-i", "--shell-completion", "-sc"}


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """Separate key=value overrides from Hydra's flags (and the flags' values)."""
    overrides, flags = [], []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("-") and not re.match(r"^-?\d", arg[1:] or "x"):
            flags.append(arg)
            takes_value = arg in _VALUE_FLAGS and i + 1 < len(argv)
            if takes_value and (arg not in _OPTIONAL_VALUE or "=" not in argv[i + 1]):
                flags.append(argv[i + 1])
                i += 1
        else:
            overrides.append(arg)
        i += 1
    return overrides, flags


def group_options(conf_dir: Path) -> dict[str, list[str]]:
    return {
        d.name: sorted(p.stem for p in d.glob("*.yaml"))
        for d in sorted(conf_dir.iterdir())
        if d.is_dir() and not d.name.startswith((".", "_"))
    }


def _compose(conf_dir: Path, overrides: list[str]):
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(str(conf_dir), version_base="1.3"):
            return compose("config", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(_explain(err, overrides)) from None


def _explain(err: Exception, overrides: list[str]) -> str:
    text = str(err)
    cause = str(err.__cause__ or "")
    match = re.search(r"Could not override '([^']+)'", text) or re.search(r"Key '([^']+)' is not in struct", cause)
    if match:
        key = match.group(1)
        value = next((o.split("=", 1)[1] for o in overrides if o.lstrip("+~").split("=", 1)[0] == key), "?")
        return (f"unknown config key '{key}' (in {key}={value}); "
                f"see `--cfg job` for the keys, or add one with +{key}=...")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return " ".join(lines)[:400]


def check_overrides(conf_dir: Path, overrides: list[str]) -> list[str]:
    """Raise ConfigError for the first bad override; return extra Hydra overrides to append."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as err:
        raise ConfigError(" ".join(str(err).split())[:400]) from None

    groups = group_options(conf_dir)
    base: list[str] = []
    variants: list[tuple[int, str]] = []
    extra: list[str] = []
    has_run_dir = False
    for ov in parsed:
        key = ov.key_or_group
        if ov.is_hydra_override():
            has_run_dir |= key == "hydra.run.dir"
            continue
        prefix = "~" if ov.is_delete() else "++" if ov.is_force_add() else "+" if ov.is_add() else ""
        values = list(ov.sweep_string_iterator()) if ov.is_sweep_override() else [None]
        if key in groups and not ov.is_delete():
            for v in values:
                v = ov.get_value_element_as_str() if v is None else v
                if v not in groups[key] and v != "null":
                    allowed = ", ".join(groups[key])
                    raise ConfigError(f"{key}={v} is not an option of '{key}'; expected one of: {allowed}")
        if key == "resume_from" and not ov.is_sweep_override():
            resume_dir = ov.get_value_element_as_str()
            if resume_dir not in ("null", "") and not Path(resume_dir).is_dir():
                raise ConfigError(f"resume_from={resume_dir} is not a run directory")
            if resume_dir not in ("null", ""):
                extra.append(f"hydra.run.dir={resume_dir}")
        base.append(ov.input_line if values == [None] else f"{prefix}{key}={values[0]}")
        for v in values[1:]:
            variants.append((len(base) - 1, f"{prefix}{key}={v}"))

    configs = [base] + [base[:i] + [alt] + base[i + 1 :] for i, alt in variants]
    for ovs in configs:
        compose_config(ovs, conf_dir)
    return [] if has_run_dir else extra


def compose_config(overrides: list[str], conf_dir: Path = CONF_DIR) -> DictConfig:
    """The validated run config for OVERRIDES, as `python -m agentcoder.run` builds it (scripts, tests)."""
    return validate(_compose(conf_dir, list(overrides)))
