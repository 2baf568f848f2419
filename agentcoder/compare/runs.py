"""Find run directories and read each into one flat row: what was run, how it ended, what it scored.

A run dir is any folder holding a `run.json` (single runs `outputs/<date>/<time>/`, sweep jobs
`multirun/<date>/<time>/<job>/`).  The resolved config in `run.json["config"]` is preferred; older
records fall back to the group choices and top-level fields.  Nothing here raises on a broken run:
an unreadable or unfinished one becomes a row with a status that says so (`killed` for a `running`
record whose process is gone, as the launcher tells it: tracking/records.is_stale).

A run is named by its dir relative to the folder the comparator was given (relative to the folders'
common parent when it was given several), so the tables do not depend on where the clone lies.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentcoder.evaluation.metrics import METRICS
from agentcoder.files import METRICS_FILE, PREDICTIONS_FILE, RUN_FILE, TRAIN_LOG_FILE
from agentcoder.tracking.records import is_stale, stale_error
from agentcoder.tracking.result import METRICS_SCHEMA_VERSION

# Methods whose result does not depend on data_fraction (nothing is trained).
UNTRAINED = frozenset({"baseline"})
# The fields of a prediction row the comparator keeps besides those the metrics read; `raw` can be large.
_PRED_KEYS = ("id", "category", "correct", "reason", "latency_s")


@dataclass
class Run:
    """One run directory as the comparator sees it."""

    dir: Path
    row: dict[str, Any]
    predictions: list[dict[str, Any]] | None = field(default=None, repr=False)
    config: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        """What the tables call the run (their `run_dir`): its dir relative to the folder searched."""
        return str(self.row["run_dir"])


def find_run_dirs(paths: list[Path]) -> list[Path]:
    """Every directory under PATHS (or PATH itself) that holds a run.json, sorted."""
    found: set[Path] = set()
    for path in paths:
        path = Path(path)
        if (path / RUN_FILE).is_file():
            found.add(path.resolve())
        if path.is_dir():
            found.update(p.parent.resolve() for p in path.rglob(RUN_FILE))
    return sorted(found)


def run_names(run_dirs: list[Path], paths: list[Path]) -> dict[Path, str]:
    """Each run dir (as find_run_dirs gives it) named relative to the folder among PATHS it was found in.

    Several folders share one base, their common parent, so no two runs get the same name; a run dir
    given itself is named from its parent (its own folder name).
    """
    bases = []
    for path in paths:
        path = Path(path).resolve()
        bases.append(path.parent if (path / RUN_FILE).is_file() else path)
    if not bases:
        return {d: str(d) for d in run_dirs}
    base = Path(os.path.commonpath(bases)) if len(bases) > 1 else bases[0]
    return {d: Path(os.path.relpath(d, base)).as_posix() for d in run_dirs}


# metrics.json schema versions this comparator reads (tracking/result.py writes the newest); a run
# without one predates versioning and reads as version 1.
KNOWN_SCHEMA_VERSIONS = tuple(range(1, METRICS_SCHEMA_VERSION + 1))
def parse_json(text: str) -> Any:
    """TEXT as JSON, or None when it is not JSON or is nested too deep to parse (json's decoder
    raises RecursionError then, cleanly)."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _read_json(path: Path) -> Any:
    try:
        return parse_json(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return None


def read_predictions(path: Path, keep: tuple[str, ...] = ()) -> tuple[list[dict[str, Any]] | None, int]:
    """(the prediction rows of a run, the count of lines that are not a row: torn or unreadable);
    (None, 0) when there is no file.  Rows hold the fields the metrics read, and KEEP."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None, 0
    keys = list(dict.fromkeys([*_PRED_KEYS, *(f for m in METRICS.values() for f in m.fields), *keep]))
    rows, bad = [], 0
    for line in lines:
        if not line.strip():
            continue
        row = parse_json(line)
        if isinstance(row, dict) and "id" in row:
            rows.append({k: row.get(k) for k in keys})
        else:
            bad += 1
    return rows, bad


def _non_finite(values: dict[str, Any]) -> list[str]:
    return [k for k, v in values.items() if isinstance(v, float) and not math.isfinite(v)]


def example_set_signature(predictions: list[dict[str, Any]]) -> str:
    """Short hash of the evaluated example ids: two runs with the same signature saw the same examples."""
    ids = sorted(str(r["id"]) for r in predictions)
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:8]


def _select(tree: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def short_value(value: Any, limit: int = 40) -> str:
    text = str(value)
    return text if len(text) <= limit else text[:limit] + "…"


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}: the keys `--where` accepts besides the table's columns."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _overrides_dict(overrides: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in overrides or []:
        if isinstance(item, str) and "=" in item:
            key, value = item.split("=", 1)
            out[key.lstrip("+~")] = value
    return out


def load_run(run_dir: Path, name: str | None = None, keep: tuple[str, ...] = ()) -> Run:
    """Read RUN_DIR's run.json, metrics.json and predictions.jsonl into a Run (never raises).

    NAME is what the tables call it (default: RUN_DIR as given); KEEP: prediction fields to keep
    besides those the metrics read (e.g. `raw`, which can be large)."""
    run_dir = Path(run_dir)
    name = str(run_dir) if name is None else name
    rec = _read_json(run_dir / RUN_FILE)
    if not isinstance(rec, dict):
        return Run(run_dir, {"run_dir": name, "status": "unreadable", "error": "run.json is not valid JSON"})
    metrics = _read_json(run_dir / METRICS_FILE)
    metrics = metrics if isinstance(metrics, dict) else None
    cfg = rec.get("config") if isinstance(rec.get("config"), dict) else {}
    choices = rec.get("choices") or {}
    model_info = rec.get("model") if isinstance(rec.get("model"), dict) else {}
    seeds = rec.get("seeds") or {}
    overrides = _overrides_dict(rec.get("overrides"))

    method = _first(_select(cfg, "method.name"), rec.get("method"), choices.get("method"),
                    (metrics or {}).get("method"))
    row: dict[str, Any] = {
        "run_dir": name,
        "status": str(rec.get("status") or "unknown"),
        "error": rec.get("error"),
        "model": _first(_select(cfg, "model.name"), model_info.get("name"), choices.get("model")),
        "init": _first(_select(cfg, "model.init"), model_info.get("init"), overrides.get("model.init"), "pretrained"),
        "method": method,
        "quant": _first(_select(cfg, "quant.name"), model_info.get("quant"), choices.get("quant"), "none"),
        "data": _first(_select(cfg, "data.name"), choices.get("data")),
        "data_fraction": _first(cfg.get("data_fraction"), rec.get("data_fraction")),
        "seed": _first(cfg.get("seed"), seeds.get("seed")),
        "split_seed": _first(_select(cfg, "data.split_seed"), seeds.get("split_seed")),
        "split": _first((metrics or {}).get("split"), _select(cfg, "eval.split")),
        "config_hash": rec.get("config_hash"),
        "started_at": rec.get("started_at"),
        "ended_at": rec.get("ended_at"),
        # Every attempt's (None, unknown, when one was killed before its first heartbeat).
        "duration_s": rec["total_duration_s"] if "total_duration_s" in rec else rec.get("duration_s"),
    }
    try:
        row["data_fraction"] = None if row["data_fraction"] is None else float(row["data_fraction"])
    except (TypeError, ValueError):
        row["data_fraction"] = None
    overall = (metrics or {}).get("overall") if isinstance((metrics or {}).get("overall"), dict) else None
    training = (metrics or {}).get("training") or rec.get("train") or {}
    if row["status"] == "skipped" and overall is not None:
        # A re-run sweep skipped this job: the dir still holds the earlier completed run.
        row["status"] = "completed"
    if row["status"] == "completed" and overall is None:
        row["status"] = "incomplete"
        unreadable = (run_dir / METRICS_FILE).exists()
        row["error"] = row["error"] or (f"{METRICS_FILE} is unreadable (not JSON, or no `overall`)" if unreadable
                                        else f"completed without {METRICS_FILE}")
    elif row["status"] == "running" and is_stale(rec):  # as the launcher reads it: host and pid, or heartbeat
        row["status"], row["error"] = "killed", stale_error(run_dir, rec)  # with a rank's error, if one left it
    elif row["status"] == "running":
        row["error"] = row["error"] or "no end recorded: still running"

    overall = overall or {}
    version = (metrics or {}).get("schema_version", 1)
    bad = _non_finite({**overall, "seed": row["seed"],
                       "data_fraction": row["data_fraction"]})
    if row["status"] == "completed" and version not in KNOWN_SCHEMA_VERSIONS:
        row["status"], row["error"] = "left out", f"schema_version {short_value(version)} (this comparator reads " \
                                                  f"{', '.join(map(str, KNOWN_SCHEMA_VERSIONS))})"
    elif row["status"] == "completed" and bad:
        row["status"], row["error"] = "left out", f"non-finite {', '.join(bad)}"
    for key in (*METRICS, "n", "latency_p50_s", "latency_p95_s", "ms_per_example", "wall_time_s"):
        row[key] = overall.get(key)
    for key in METRICS:
        # Newer metrics carry each share's count and Wilson interval (used when predictions are missing).
        row[f"{key}_n"] = overall.get(f"{key}_n")
        row[f"{key}_ci"] = overall.get(f"{key}_ci")
    row["train_time_s"] = training.get("train_time_s")
    row["train_steps"] = training.get("steps")
    eval_peak, train_peak = overall.get("peak_memory_bytes"), training.get("peak_memory_bytes")
    peaks = [p for p in (eval_peak, train_peak) if p is not None]
    # The run's footprint is its largest phase (training, for the methods that train).
    row["peak_memory_bytes"] = max(peaks) if peaks else None

    predictions, torn = (read_predictions(run_dir / PREDICTIONS_FILE, keep) if row["status"] == "completed"
                         else (None, 0))
    row["torn_lines"] = torn
    if predictions:
        row["example_set"] = example_set_signature(predictions)
        row["n"] = row["n"] if row["n"] is not None else len(predictions)
        for key, metric in METRICS.items():
            # A metric newer than the run's metrics.json, whose rows were rescored since
            # (scripts/rescore_predictions.py): its share, from the rows.
            totals = metric.totals(predictions) if row[key] is None else None
            if totals is not None and totals[1]:
                row[key], row[f"{key}_n"] = totals[0] / totals[1], totals[1]
    elif row["n"] is not None:
        # No per-example rows: the split and size are the best available stand-in for the set.
        row["example_set"] = f"{row['split'] or '?'}-n{row['n']}"
    else:
        row["example_set"] = None
    row["has_train_log"] = (run_dir / TRAIN_LOG_FILE).is_file()
    full_config = {**flatten(cfg), **overrides} if cfg else overrides
    return Run(run_dir, row, predictions or None, full_config)


def drop_superseded(runs: list[Run]) -> list[Run]:
    """Completed runs with the same config hash are one experiment run twice: the latest one counts;
    the earlier ones get status `superseded` (they would otherwise pass for extra seeds)."""
    latest: dict[str, Run] = {}
    for run in runs:
        h = run.row.get("config_hash")
        if run.row["status"] != "completed" or not h:
            continue
        if h not in latest or str(run.row.get("ended_at") or "") > str(latest[h].row.get("ended_at") or ""):
            latest[h] = run
    for run in runs:
        h = run.row.get("config_hash")
        if run.row["status"] == "completed" and h and latest[h] is not run:
            run.row["status"] = "superseded"
            run.row["error"] = f"same config as the later run {latest[h].name}"
    return runs


# Config keys that never make two runs different experiments (where files go, how resume works).
_NOT_EXPERIMENT = ("seed", "resume", "resume_from", "cache_dir", "method.train.report_to", "eval.batch_size")


def mark_variants(runs: list[Run], key: Any) -> list[Run]:
    """Split runs that share KEY(row) by the config keys in which they differ (`variant`, e.g.
    `method.train.lr=0.001`), so other hyperparameters are never averaged as if they were seeds;
    then, within one variant, a second completed run of the same seed is a `duplicate` (e.g. a baseline
    run at data_fraction 0.1 and 1.0: nothing is trained, so it is the same measurement twice)."""
    groups: dict[Any, list[Run]] = {}
    for run in runs:
        run.row.setdefault("variant", "")
        if run.row["status"] == "completed":
            groups.setdefault(key(run.row), []).append(run)
    for members in groups.values():
        keys = sorted(set().union(*(r.config.keys() for r in members)))
        differ = [
            k for k in keys
            if k not in _NOT_EXPERIMENT and not k.startswith("hydra.") and (k != "data_fraction" or
                                                                             members[0].row["method"] not in UNTRAINED)
            and len({json.dumps(r.config.get(k), sort_keys=True, default=str) for r in members}) > 1
        ]
        for run in members:
            run.row["variant"] = " ".join(f"{k}={run.config.get(k)}" for k in differ)
        latest: dict[tuple, Run] = {}
        for run in sorted(members, key=lambda r: str(r.row.get("ended_at") or "")):
            latest[(run.row["variant"], run.row.get("seed"))] = run
        for run in members:
            keep = latest[(run.row["variant"], run.row.get("seed"))]
            if keep is not run:
                run.row["status"] = "duplicate"
                run.row["error"] = f"same configuration and seed as {keep.name}"
    return runs


def load_runs(paths: list[Path]) -> list[Run]:
    """Every run under PATHS, named relative to them (see run_names), superseded ones marked."""
    dirs = find_run_dirs(paths)
    names = run_names(dirs, paths)
    return drop_superseded([load_run(d, names[d]) for d in dirs])


class FilterError(ValueError):
    pass


def parse_where(clauses: list[str]) -> dict[str, list[str]]:
    """["method=lora,dpo", "quant=4bit"] -> {"method": ["lora", "dpo"], "quant": ["4bit"]}."""
    out: dict[str, list[str]] = {}
    for clause in clauses:
        key, sep, values = clause.partition("=")
        if not sep or not key or not values:
            raise FilterError(f"--where {clause!r}: expected KEY=VALUE[,VALUE...], e.g. method=lora,dpo")
        out.setdefault(key.strip(), []).extend(v.strip() for v in values.split(","))
    return out


def _matches(value: Any, wanted: list[str]) -> bool:
    for w in wanted:
        if str(value) == w or (value is None and w in ("null", "None")):
            return True
        try:
            if value is not None and float(value) == float(w):
                return True
        except (TypeError, ValueError):
            pass
    return False


def filter_runs(runs: list[Run], where: dict[str, list[str]]) -> list[Run]:
    """Keep the runs whose column (or resolved config key, e.g. method.train.lr) matches every clause."""
    if not where:
        return runs
    known = set().union(*(r.row.keys() | r.config.keys() for r in runs)) if runs else set()
    for key in where:
        if key not in known:
            columns = ", ".join(k for k in ("model", "init", "method", "quant", "data", "data_fraction", "seed",
                                            "status", "split") if k in known)
            raise FilterError(f"--where {key}=...: unknown key {key!r}; columns: {columns} (or a config key "
                              "such as method.train.lr)")

    def value(run: Run, key: str) -> Any:
        return run.row[key] if key in run.row else run.config.get(key)

    return [r for r in runs if all(_matches(value(r, k), v) for k, v in where.items())]
