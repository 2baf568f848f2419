"""A search's view (hydra/sweeper=optuna): its trials, the best settings, parameter importances,
`search.csv`, `search_history.png`, one slice plot per parameter, and the report's "Search" section.

Trials are settings being tried, read on val: they never enter the method tables, which hold
confirmed results (the best settings run on test, with seeds).  The study is read from a copy of
its journal, so a committed (read-only) search is read without writing a lock file beside it.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from agentcoder.compare.runs import Run
from agentcoder.files import RUN_FILE, STUDY_FILE, read_json
from agentcoder.tracking.records import effective_status

SEARCH_CSV = "search.csv"
HISTORY_PNG = "search_history.png"
SLICE_PNG = "search_slice_{}.png"
DPI = 110


@dataclass
class Search:
    """One study of one sweep dir."""

    dir: Path
    study: str
    direction: str
    trials: pd.DataFrame  # a row per trial: trial, state, objective, <params>, run_dir, run_status, ...
    params: list[str]
    best: dict[str, Any] | None = None  # trial, objective, params (as overrides)
    importances: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.dir} ({self.study})"


def is_trial(run: Run) -> bool:
    """A run launched by a search: its sweep dir holds the study."""
    return (run.dir.parent / STUDY_FILE).is_file()


def find_searches(paths: list[Path]) -> list[Path]:
    found: set[Path] = set()
    for path in paths:
        if (path / STUDY_FILE).is_file():
            found.add(path)
        found.update(p.parent for p in path.glob(f"**/{STUDY_FILE}"))
    return sorted(found)


def _value(v: Any) -> Any:
    return None if v is None or (isinstance(v, float) and not math.isfinite(v)) else v


def load_searches(paths: list[Path]) -> list[Search]:
    """Every study under PATHS; a journal that cannot be read is a Search with a note saying so."""
    searches = []
    for sweep_dir in find_searches(paths):
        try:
            searches += _load(sweep_dir)
        except Exception as err:  # noqa: BLE001 - a torn or foreign journal: say so, don't guess
            searches.append(Search(sweep_dir, "?", "?", pd.DataFrame(), [],
                                   notes=[f"{sweep_dir / STUDY_FILE}: cannot be read ({type(err).__name__}: {err})"]))
    return searches


def _load(sweep_dir: Path) -> list[Search]:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / STUDY_FILE
        shutil.copyfile(sweep_dir / STUDY_FILE, copy)
        storage = JournalStorage(JournalFileBackend(str(copy)))
        for name in optuna.get_all_study_names(storage):
            study = optuna.load_study(study_name=name, storage=storage)
            trials = study.get_trials(deepcopy=False)
            params = list(dict.fromkeys(p for t in trials for p in t.params))
            rows = []
            for t in trials:
                run_dir = sweep_dir / str(t.user_attrs.get("run_dir", t.number))
                record = read_json(run_dir / RUN_FILE) or {}
                objective = record.get("objective") or {}
                state = t.state.name.lower()
                if t.user_attrs.get("interrupted"):
                    state = "interrupted"
                elif state == "running":
                    state = "running (or killed)"
                rows.append({
                    "trial": t.number, "state": state, "objective": _value(t.value),
                    **{p: t.params.get(p) for p in params},
                    "metric": objective.get("metric"), "split": objective.get("split"), "n": objective.get("n"),
                    "run_dir": run_dir.name, "run_status": effective_status(record) if record else "no run.json",
                    "duration_s": record.get("total_duration_s", record.get("duration_s")),
                    "error": t.user_attrs.get("error") or (record.get("error") if state == "fail" else None),
                })
            search = Search(sweep_dir, name, study.direction.name.lower(), pd.DataFrame(rows), params)
            complete = [t for t in trials if t.state == TrialState.COMPLETE]
            if complete:
                best = study.best_trial
                search.best = {"trial": best.number, "objective": best.value, "params": dict(best.params)}
            search.importances, note = _importances(study, complete, params)
            search.notes += [note] if note else []
            out.append(search)
    return out


def _importances(study: Any, complete: list[Any], params: list[str]) -> tuple[dict[str, float], str | None]:
    import optuna

    varied = [p for p in params if len({repr(t.params.get(p)) for t in complete}) > 1]
    if len(complete) < 2 or not varied:
        return {}, "parameter importances: need 2 or more completed trials that differ in a parameter"
    if len({t.value for t in complete}) == 1:
        return {p: 0.0 for p in varied}, "parameter importances: every trial scored the same, so none matters yet"
    try:
        found = optuna.importance.get_param_importances(study, params=varied)
    except Exception as err:  # noqa: BLE001 - optuna's evaluator refuses some spaces; say so
        return {}, f"parameter importances: not computable ({type(err).__name__}: {err})"
    return {k: round(float(v), 4) for k, v in found.items()}, None


# ------------------------------------------------------------------ what the comparator shows and writes


def summary_lines(search: Search) -> list[str]:
    """The search in a few lines: trials by state, the best, the importances."""
    df = search.trials
    counts = df["state"].value_counts().to_dict() if not df.empty else {}
    lines = [f"{search.label}: {len(df)} trials (" + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + ")"]
    if search.best:
        row = df[df["trial"] == search.best["trial"]].iloc[0]
        on = f"{row['metric']} on {row['split']}" + (f", n={int(row['n'])}" if pd.notna(row["n"]) else "")
        settings = " ".join(f"{k}={v}" for k, v in search.best["params"].items())
        lines.append(f"best: trial {search.best['trial']}, {search.best['objective']:.4f} ({on}; "
                     f"{search.direction}) with {settings}")
    else:
        lines.append("best: none (no completed trial)")
    if search.importances:
        lines.append("parameter importances: " + ", ".join(f"{k} {v:.2f}" for k, v in search.importances.items()))
    return lines + search.notes


def display_frame(search: Search) -> pd.DataFrame:
    df = search.trials.copy()
    if df.empty:
        return df
    for p in search.params:
        df[p] = df[p].map(lambda v: f"{v:.3g}" if isinstance(v, float) else v)
    df["objective"] = df["objective"].map(lambda v: "-" if v is None or pd.isna(v) else f"{v:.4f}")
    df["duration_s"] = df["duration_s"].map(lambda v: "-" if v is None or pd.isna(v) else f"{v:.0f}")
    df["n"] = df["n"].map(lambda v: "-" if v is None or pd.isna(v) else str(int(v)))
    return df.drop(columns=["split", "metric"]).fillna("-")


def plot_history(search: Search, path: Path) -> Path | None:
    """The objective of each completed trial and the best so far."""
    from agentcoder.tracking.trainlog import pyplot, save_png

    df = search.trials
    done = df[df["objective"].notna()] if not df.empty else df
    if done.empty:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    ax.plot(done["trial"], done["objective"], "o", label="trial", color="tab:blue")
    best = done["objective"].cummax() if search.direction == "maximize" else done["objective"].cummin()
    ax.step(done["trial"], best, where="post", label="best so far", color="tab:orange")
    metric = done["metric"].dropna().iloc[0] if done["metric"].notna().any() else "objective"
    ax.set_xlabel("trial")
    ax.set_ylabel(f"{metric} on val")
    ax.set_title(f"search {search.study}: {len(done)} completed trials", fontsize=10)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.08), ncol=2, frameon=False, fontsize=8)
    fig.tight_layout()
    return save_png(fig, path, dpi=DPI)


def plot_slices(search: Search, out: Path) -> list[Path]:
    """One figure per parameter: each completed trial's objective against its value."""
    from agentcoder.tracking.trainlog import pyplot, save_png

    df = search.trials
    done = df[df["objective"].notna()] if not df.empty else df
    paths = []
    for param in search.params if not done.empty else []:
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(4.8, 3.4))
        values = done[param]
        numeric = values.map(lambda v: isinstance(v, int | float) and not isinstance(v, bool)).all()
        x = values.astype(float) if numeric else values.astype(str)
        ax.scatter(x, done["objective"], c=done["trial"], cmap="viridis")
        if numeric and (values > 0).all() and values.max() / max(values.min(), 1e-300) >= 100:
            ax.set_xscale("log")
        ax.set_xlabel(param)
        ax.set_ylabel("objective (val)")
        ax.set_title(f"{param} (colour: trial number)", fontsize=9)
        fig.tight_layout()
        paths.append(save_png(fig, out / SLICE_PNG.format(param.replace("/", "_")), dpi=DPI))
    return paths


def write_search(searches: list[Search], out: Path, *, plots: bool = True) -> list[str]:
    """search.csv (every study's trials) and, with PLOTS, its figures into OUT; returns the file names."""
    from agentcoder.files import atomic_write_text

    frames = [s.trials.assign(sweep_dir=str(s.dir), study=s.study) for s in searches if not s.trials.empty]
    names = []
    if frames:
        atomic_write_text(out / SEARCH_CSV, pd.concat(frames, ignore_index=True).to_csv(index=False))
        names.append(SEARCH_CSV)
    if plots and len(searches) == 1:  # several studies: their plots would share names; the CSV holds them all
        names += [p.name for p in [plot_history(searches[0], out / HISTORY_PNG)] if p]
        names += [p.name for p in plot_slices(searches[0], out)]
    return names


def report_section(searches: list[Search], plots: set[str]) -> str:
    """The report's "Search" section."""
    from agentcoder.compare.tables import to_markdown

    parts = ["## Search\n",
             "Trials are read on the validation split and are not in the tables above: those hold runs "
             "evaluated on test. The best settings are confirmed by running them on test with seeds.\n"]
    for search in searches:
        parts.append("\n".join(f"- {line}" for line in summary_lines(search)) + "\n")
        if HISTORY_PNG in plots:
            parts.append(f"![search history]({HISTORY_PNG})\n")
        parts += [f"![{p}]({SLICE_PNG.format(p.replace('/', '_'))})\n" for p in search.params
                  if SLICE_PNG.format(p.replace("/", "_")) in plots]
        if not search.trials.empty:
            parts.append(to_markdown(display_frame(search)))
    return "\n".join(parts)
