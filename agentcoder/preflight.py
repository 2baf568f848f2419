"""Check command-line overrides before Hydra starts a job, and say in one line per problem what is wrong.

Hydra's own messages for a bad group option or an unknown key span several lines and, in a
sweep, only surface after other jobs ran.  Here every value of every override is checked up
front: group options against `conf/<group>/`, each configuration the sweep can produce (one
value changed at a time) against the typed schema in `agentcoder.config` and the value checks
in `agentcoder.checks`, and `resume_from` against the run it names.  Nothing here creates a
run directory, and nothing imports torch.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from agentcoder.checks import problems, search_problems, short, validate
from agentcoder.config import CONF_DIR, SEARCH_SWEEPER, ConfigError, config_hash, merge_schema
from agentcoder.files import RUN_FILE, read_json
from agentcoder.tracking.records import effective_status

# Hydra flags that take a value (the value is not an override).
_VALUE_FLAGS = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                "--config-dir", "-cd", "--experimental-rerun", "--info", "-i", "--shell-completion", "-sc"}
_OPTIONAL_VALUE = {"--info", "-i", "--shell-completion", "-sc"}


# Config nodes that are open dicts (empty by default): `sft_train.epochs=1` adds a key, which Hydra
# only takes as `+sft_train.epochs=1`, unless an experiment overlay set it already, when only a plain
# override works.  `++` (add or override) is right in both cases; the entrypoint adds it.
OPEN_DICTS = ("all_train", "sft_train")


def normalize_overrides(argv: list[str]) -> list[str]:
    """ARGV with `++` added to open-dict keys, and `+experiment=X` read as `experiment=X`: the
    defaults list has an optional experiment slot, so Hydra's usual `+experiment=` spelling would
    otherwise fail with "Multiple values for experiment"."""
    out = []
    for a in argv:
        if a.lstrip("+").startswith(tuple(f"{d}." for d in OPEN_DICTS)):
            a = f"++{a.lstrip('+')}"
        elif a.startswith("+experiment="):
            a = a[1:]
        out.append(a)
    return out


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
        if d.is_dir() and not d.name.startswith((".", "_")) and d.name != "hydra"  # hydra/launcher: Hydra's own
    }


def optional_groups(conf_dir: Path) -> set[str]:
    """Groups the defaults list marks `optional` (the only ones `group=null` may switch off)."""
    defaults = OmegaConf.to_container(OmegaConf.load(conf_dir / "config.yaml")).get("defaults", [])
    return {k.split()[1] for d in defaults if isinstance(d, dict) for k in d if k.startswith("optional ")}


def _compose(conf_dir: Path, overrides: list[str]):
    from hydra import compose, initialize_config_dir

    try:
        with initialize_config_dir(str(conf_dir), version_base="1.3"):
            return compose("config", overrides=overrides)
    except Exception as err:  # noqa: BLE001 - Hydra/OmegaConf/int-parsing errors all become one line
        raise ConfigError(_explain(err, overrides)) from None


def _explain(err: Exception, overrides: list[str]) -> str:
    text = str(err)
    cause = str(err.__cause__ or "")
    match = re.search(r"Could not override '([^']+)'", text) or re.search(r"Key '([^']+)' is not in struct", cause)
    if match:
        key = match.group(1)
        value = next((o.split("=", 1)[1] for o in overrides if o.lstrip("+~").split("=", 1)[0] == key), "?")
        # No `+key=` advice: the schema has no such key, so an added one is rejected all the same.
        return f"unknown config key '{key}' (in {key}={short(value)}); see `--cfg job` for the keys"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return _truncate_values(" ".join(lines))


def _truncate_values(text: str, limit: int = 400) -> str:
    """TEXT with every long word cut (a 100k-character value echoed by Hydra) and at most LIMIT chars."""
    text = " ".join(w if len(w) <= 80 or "…(" in w else short(w, 60) for w in text.split(" "))
    return text if len(text) <= limit else text[:limit] + "…"


def check_config(cfg: DictConfig, *, starting: bool = True) -> list[str]:
    """All problems of the composed config CFG: schema and types (first, alone), then every value."""
    try:
        merged = merge_schema(cfg)
    except ConfigError as err:
        return [str(err)]
    return problems(merged, starting=starting)


def check_overrides(
    conf_dir: Path, overrides: list[str], *, starting: bool = True, multirun: bool = False
) -> list[str]:
    """Raise ConfigError (one line per problem) for bad overrides; return extra Hydra overrides to append.

    Each swept value is composed and checked once (not the whole product); with MULTIRUN, so is
    each value of an experiment overlay's `hydra.sweeper.params` that the command line does not replace.
    STARTING=False (the user only asks for `--cfg`) lets planned methods through.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    try:
        parsed = parser.parse_overrides(overrides)
    except Exception:  # noqa: BLE001 - HydraException, or ValueError for a 5,000-digit int
        lines = []
        for ov in overrides:  # one line per override that does not parse, naming it
            try:
                parser.parse_overrides([ov])
            except Exception as err:  # noqa: BLE001
                lines.append(f"{short(ov)}: {_truncate_values(' '.join(str(err).split()))}")
        raise ConfigError("\n".join(lines)) from None

    errors: list[str] = []
    groups = group_options(conf_dir)
    optional = optional_groups(conf_dir)
    base: list[str] = []
    variants: list[tuple[int, str]] = []
    extra: list[str] = []
    resume_dir = None
    run_dir = None
    hydra_ovs: list[str] = []
    for ov in parsed:
        key = ov.key_or_group
        if ov.is_hydra_override():
            hydra_ovs.append(ov.input_line)
            if key == "hydra.run.dir":
                run_dir = ov.get_value_element_as_str()
            continue
        prefix = "~" if ov.is_delete() else "++" if ov.is_force_add() else "+" if ov.is_add() else ""
        values = sweep_values(ov) if ov.is_sweep_override() else [None]
        if key in groups and not ov.is_delete():
            for v in values:
                v = ov.get_value_element_as_str() if v is None else v
                if v == "null" and key not in optional:
                    errors.append(f"{key}=null: '{key}' needs an option; expected one of: {', '.join(groups[key])}")
                elif v not in groups[key] and v != "null":
                    errors.append(f"{key}={short(v)} is not an option of '{key}'; "
                                  f"expected one of: {', '.join(groups[key])}")
        if key == "resume_from":
            if ov.is_sweep_override():
                errors.append("resume_from names one run directory; it cannot be swept")
            elif ov.get_value_element_as_str() not in ("null", ""):
                resume_dir = ov.get_value_element_as_str()
                extra.append(f"hydra.run.dir={resume_dir}")
        base.append(ov.input_line if values == [None] else f"{prefix}{key}={values[0]}")
        for v in values[1:]:
            variants.append((len(base) - 1, f"{prefix}{key}={v}"))
    if errors:  # composing would only repeat them as Hydra errors
        raise ConfigError("\n".join(dict.fromkeys(errors)))

    configs = [base] + [base[:i] + [alt] + base[i + 1 :] for i, alt in variants]
    if multirun:
        given = {ov.key_or_group for ov in parsed}
        configs += [base + alt for alt in _overlay_variants(conf_dir, base, given)]
    sweeper = _search_sweeper(conf_dir, base + hydra_ovs) if multirun else None
    searching = sweeper is not None
    if searching:
        errors += search_problems(sweeper)
    first = None
    for ovs in configs:
        try:
            cfg = _compose(conf_dir, ovs)
        except ConfigError as err:
            errors.append(str(err))
            continue
        errors += check_config(cfg, starting=starting)
        if searching and not errors:
            errors += trial_problems(validate(cfg, starting=starting))
        first = cfg if first is None else first
    if resume_dir and first is not None and not errors:
        errors += check_resume(validate(first), resume_dir)
    elif run_dir and not multirun and first is not None and not errors:
        errors += check_rerun(validate(first), run_dir)
    if errors:
        raise ConfigError("\n".join(_truncate_values(e) for e in dict.fromkeys(errors)))
    return [] if run_dir else extra


def _search_sweeper(conf_dir: Path, overrides: list[str]) -> dict[str, Any] | None:
    """hydra.sweeper's settings when OVERRIDES compose a search (hydra/sweeper=optuna), else None."""
    from hydra import compose, initialize_config_dir

    try:
        with initialize_config_dir(str(conf_dir), version_base="1.3"):
            hydra_cfg = compose("config", overrides=overrides, return_hydra_config=True).hydra
    except Exception:  # noqa: BLE001 - the composition reports its own error
        return None
    if OmegaConf.select(hydra_cfg, "sweeper._target_") != SEARCH_SWEEPER:
        return None
    return OmegaConf.to_container(hydra_cfg.sweeper, resolve=False)


def trial_problems(cfg: DictConfig) -> list[str]:
    """What keeps the run config CFG from being a search trial: its objective is read on val, never on
    test (tune on val, report on test)."""
    if cfg.method.name == "baseline" and cfg.eval.test_in_search:
        return [f"eval.test_in_search=true with method=baseline in a search: its one evaluation would be "
                f"eval.split={cfg.eval.split}, and a search never reads its objective from test; leave "
                f"eval.test_in_search=false (its trials then evaluate val)"]
    return []


def _overlay_variants(conf_dir: Path, base: list[str], given: set[str]) -> list[list[str]]:
    """The overrides that check every value of the composed `hydra.sweeper.params` (an experiment
    overlay's sweep or search space) whose key the command line leaves alone (a command-line sweep of a
    key replaces it): the params' fixed values, plus one `key=value` of a swept key at a time."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        with initialize_config_dir(str(conf_dir), version_base="1.3"):
            hydra_cfg = compose("config", overrides=base, return_hydra_config=True).hydra
        params = OmegaConf.to_container(hydra_cfg.sweeper.params, resolve=False) or {}
    except Exception:  # noqa: BLE001 - the base composition reports its own error
        return []
    parser = OverridesParser.create()
    fixed: list[str] = []
    swept: list[str] = []
    for key, spec in params.items():
        if key in given:
            continue
        try:
            (ov,) = parser.parse_overrides([f"{key}={spec}"])
        except Exception as err:  # noqa: BLE001
            raise ConfigError(f"hydra.sweeper.params.{key}={short(str(spec))}: {' '.join(str(err).split())}") from None
        if ov.is_sweep_override():
            swept += normalize_overrides([f"{key}={v}" for v in sweep_values(ov)])
        else:
            fixed += normalize_overrides([f"{key}={ov.get_value_element_as_str()}"])
    return [fixed + [alt] for alt in swept] or ([fixed] if fixed else [])


def sweep_values(override: Any) -> list[str]:
    """The values that stand for all a swept OVERRIDE can take: every value of a list, choice or range;
    an interval's two ends (an int interval when tagged `int`, as hydra/sweeper=optuna samples it)."""
    from hydra.core.override_parser.types import IntervalSweep

    sweep = override.value()
    if isinstance(sweep, IntervalSweep):
        cast = int if "int" in sweep.tags else float
        return [repr(cast(sweep.start)), repr(cast(sweep.end))]
    return list(override.sweep_string_iterator())


def compose_config(overrides: list[str], conf_dir: Path = CONF_DIR) -> DictConfig:
    """The validated run config for OVERRIDES, as `python -m agentcoder.run` builds it (scripts, tests)."""
    return validate(_compose(conf_dir, list(overrides)))


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
    detail = _difference(cfg, run_dir, record)
    if detail is None:
        return []
    return [f"{where} holds a {record.get('method')} run of another config ({detail}); "
            f"repeat its overrides to resume it"]


def check_rerun(cfg: DictConfig, run_dir: str) -> list[str]:
    """`hydra.run.dir=RUN_DIR` into a killed run (failed, interrupted or stale) goes on from its
    checkpoints as `resume_from` does, so it gets the same config check; resume=false starts over."""
    record = read_json(Path(run_dir).expanduser() / RUN_FILE)
    if not cfg.resume or not record or not record.get("config_hash") or \
            effective_status(record) not in ("failed", "interrupted", "stale"):
        return []  # (a run that failed before its record had a config left nothing to resume)
    detail = _difference(cfg, Path(run_dir).expanduser(), record)
    if detail is None:
        return []
    return [f"hydra.run.dir={short(run_dir)} holds a killed {record.get('method')} run of another config "
            f"({detail}); repeat its overrides to resume it, or resume=false to start it over"]


def _difference(cfg: DictConfig, run_dir: Path, record: dict[str, Any]) -> str | None:
    """None when RECORD's run has CFG's config hash; else the hashes and the first keys that differ."""
    want = config_hash(cfg)
    if record.get("config_hash") == want:
        return None
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
    return f"hash {record.get('config_hash')} != {want}{': ' + detail if detail else ''}"
