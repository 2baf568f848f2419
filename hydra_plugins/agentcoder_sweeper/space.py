"""The search space of hydra/sweeper=optuna, in Hydra's sweep syntax (as Hydra's own Optuna sweeper
reads it, so command lines transfer):

    method.lora.r=choice(8, 16, 32)               categorical (also `8,16,32`)
    method.train.epochs=range(1, 4)               the range's values, categorical
    'method.train.lr=tag(log, interval(1e-5, 1e-3))'   float, sampled on a log scale
    'method.lora.alpha=tag(int, interval(8, 64))'      int (an interval is float unless tagged int)
    method.lora.dropout=0.05                      fixed: every trial gets it

Light on purpose: Hydra imports every plugin module at start-up; optuna is imported on use.
"""


from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep


class SpaceError(ValueError):
    """A search parameter Optuna cannot sample; one line naming it."""


def parse_space(params: dict[str, str] | None, arguments: list[str]) -> tuple[dict[str, Override], list[str]]:
    """The swept overrides by key, and the fixed ones as `key=value`: hydra.sweeper.params first, then
    the command line's ARGUMENTS (a key given there replaces the params' entry)."""
    parser = OverridesParser.create()
    lines = [f"{k}={v}" for k, v in (params or {}).items()] + list(arguments)
    by_key: dict[str, Override] = {}
    for override in parser.parse_overrides(lines):
        by_key[override.get_key_element()] = override
    swept = {k: o for k, o in by_key.items() if o.is_sweep_override()}
    fixed = [o.input_line for k, o in by_key.items() if not o.is_sweep_override()]
    return swept, fixed


def distribution(override: Override) -> Any:
    """The optuna distribution of one swept override."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    key, sweep = override.get_key_element(), override.value()
    if isinstance(sweep, ChoiceSweep | RangeSweep):
        if getattr(sweep, "shuffle", False) or "log" in sweep.tags:
            raise SpaceError(f"{key}: shuffle() and tag(log, ...) apply to interval(...) only")
        return CategoricalDistribution(list(override.sweep_iterator()))
    if isinstance(sweep, IntervalSweep):
        log = "log" in sweep.tags
        if "int" in sweep.tags:
            return IntDistribution(int(sweep.start), int(sweep.end), log=log)
        return FloatDistribution(sweep.start, sweep.end, log=log)
    raise SpaceError(f"{key}: {override.input_line} is not a sweep optuna can sample")


def override_value(value: Any) -> str:
    """VALUE as a Hydra override writes it (a sampled float keeps all its digits)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return repr(value)
    text = str(value)
    if text and all(c.isalnum() or c in "_-./:" for c in text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"

