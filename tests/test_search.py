"""hydra/sweeper=optuna (hydra_plugins/agentcoder_sweeper): a search on the validation split.

The launcher's self-test method (`method=debug`, no torch) reports `method.value` as its val exact
match, so a search over it has a known optimum; `experiment=search_smoke` runs the tiny model.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from agentcoder.compare.__main__ import main as compare
from agentcoder.files import STUDY_FILE
from tests.test_launcher import ROOT, launch


def _study(sweep: Path):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return optuna.load_study(study_name="search", storage=JournalStorage(JournalFileBackend(str(sweep / STUDY_FILE))))


def _states(sweep: Path) -> list[str]:
    return [t.state.name for t in _study(sweep).get_trials(deepcopy=False)]


SEARCH = ["-m", "method=debug", "hydra/sweeper=optuna", "method.value=choice(0.0, 0.2, 0.4, 0.6, 0.8, 1.0)",
          "hydra.sweeper.startup_trials=3"]


def test_search_finds_the_known_optimum_and_the_comparator_reads_it(tmp_path):
    sweep = tmp_path / "search"
    proc = launch(*SEARCH, "seed=range(1, 4)", "hydra.sweeper.n_trials=10", f"hydra.sweep.dir={sweep}",
                  cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    best = _study(sweep).best_trial
    assert best.value == 1.0 and best.params["method.value"] == 1.0
    assert "torch" not in proc.imported  # a search of debug jobs never loads the training stack
    assert "[search] run the best settings on test, with seeds:" in proc.stdout
    command = proc.stdout.split("with seeds:\n", 1)[1].splitlines()[0]
    assert "method.value=1.0" in command and "seed=1,2,3" in command and "eval.split" not in command
    # Every trial skipped the test split and recorded a val objective.
    for record in (json.loads(p.read_text()) for p in sweep.glob("*/run.json")):
        assert record["config"]["eval"]["split"] == "none"
        assert record["objective"]["split"] == "val"
        assert record["objective"]["value"] == record["config"]["method"]["value"]

    out = tmp_path / "cmp"
    compare([str(sweep), "--out", str(out), "--report"])
    trials = pd.read_csv(out / "search.csv")
    assert len(trials) == 10 and set(trials["state"]) == {"complete"}
    assert set(trials["split"]) == {"val"}
    assert (out / "search_history.png").is_file()
    assert (out / "search_slice_method.value.png").is_file() and (out / "search_slice_seed.png").is_file()
    report = (out / "report.md").read_text()
    assert "## Search" in report and "best: trial" in report and "parameter importances" in report
    # Trials are not confirmed results: the method tables stay empty.
    assert (out / "comparison.csv").read_text().strip() == ""


def test_a_killed_search_goes_on_and_runs_only_the_missing_trials(tmp_path):
    sweep = tmp_path / "search"
    args = [sys.executable, "-m", "agentcoder.run", *SEARCH, "method.sleep_s=0.5", f"hydra.sweep.dir={sweep}"]
    proc = subprocess.Popen([*args, "hydra.sweeper.n_trials=4"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        for _ in range(600):  # kill it once three runs are complete (by their records, not a clock)
            done = [p for p in sweep.glob("*/run.json")
                    if json.loads(p.read_text() or "{}").get("status") == "completed"]
            if len(done) >= 3 or proc.poll() is not None:
                break
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    told = [t for t in _study(sweep).get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    first = {t.user_attrs["run_dir"]: ((sweep / t.user_attrs["run_dir"] / "run.json").read_bytes(),
                                       (sweep / t.user_attrs["run_dir"] / "run.json").stat().st_mtime_ns)
             for t in told}
    assert len(told) >= 2
    in_flight = _states(sweep).count("RUNNING")  # asked, not yet told: its run may or may not have ended

    again = launch(*SEARCH, "method.sleep_s=0.5", "hydra.sweeper.n_trials=6", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    states = _states(sweep)
    assert states.count("COMPLETE") == 6
    assert states.count("FAIL") == in_flight  # the killed search's trial in flight, asked again
    assert f"{len(told)} trials done, {6 - len(told)} to run" in again.stdout
    for name, (text, mtime) in first.items():  # the first trials' run dirs untouched
        path = sweep / name / "run.json"
        assert path.read_bytes() == text and path.stat().st_mtime_ns == mtime
    # The same command once more has nothing left to run.
    third = launch(*SEARCH, "method.sleep_s=0.5", "hydra.sweeper.n_trials=6", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert "6 trials done, 0 to run" in third.stdout and _states(sweep).count("COMPLETE") == 6


def test_a_failed_trial_is_told_failed_and_the_search_goes_on(tmp_path):
    sweep = tmp_path / "search"
    proc = launch("-m", "method=debug", "hydra/sweeper=optuna", "method.fail=choice(true, false)",
                  "hydra.sweeper.sampler=random", "hydra.sweeper.n_trials=6", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = _study(sweep).get_trials(deepcopy=False)
    assert len(trials) == 6
    failed = [t for t in trials if t.state.name == "FAIL"]
    assert failed and all(t.params["method.fail"] is True for t in failed)
    assert all("failing on purpose" in t.user_attrs["error"] for t in failed)
    assert "failed (DebugFailure" in proc.stdout


def test_trials_run_two_at_a_time_through_the_local_launcher(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep = tmp_path / "search"
    proc = launch(*SEARCH, "method.sleep_s=1", "hydra/launcher=local", "hydra.sweeper.n_jobs=2",
                  "hydra.sweeper.n_trials=4", f"hydra.sweep.dir={sweep}", cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = _study(sweep).get_trials(deepcopy=False)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4
    runs = {t.number: json.loads((sweep / t.user_attrs["run_dir"] / "run.json").read_text()) for t in trials}
    assert len({r["pid"] for r in runs.values()}) == 4  # a process per trial, not the sweeper's
    for a, b in ((0, 1), (2, 3)):  # each pair ran side by side: one started before the other ended
        assert runs[b]["started_at"] < runs[a]["ended_at"] and runs[a]["started_at"] < runs[b]["ended_at"]


@pytest.mark.slow  # ~20 s of real training: kept out of the fast suite
def test_the_search_smoke_overlay_trains_and_reads_val_only(tmp_path, tiny_model_dir):
    """The tiny model through experiment=search_smoke: trained trials, objective on val, no test."""
    from tests.test_grid_smoke import SIZES, build_wheel, sha256_file

    cache = tmp_path / "cache"
    cache.mkdir()
    sha = sha256_file(build_wheel(cache, SIZES))
    sweep = tmp_path / "search"
    proc = launch("-m", "experiment=search_smoke", "model.source=hub", f"model.hub_id={tiny_model_dir}",
                  f"data.embedded.sha256={sha}", f"cache_dir={cache}", "hydra.sweeper.n_trials=2",
                  f"hydra.sweep.dir={sweep}", cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for run_dir in (sweep / "0", sweep / "1"):
        record = json.loads((run_dir / "run.json").read_text())
        assert record["status"] == "completed"
        assert record["objective"]["split"] == "val" and record["objective"]["n"] == record["train"]["n_val"]
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["split"] is None and metrics["overall"] == {}
        assert not (run_dir / "predictions.jsonl").exists()


@pytest.mark.parametrize("args, expected", [
    (["method=baseline", "hydra/sweeper=optuna", "eval.test_in_search=true", "seed=choice(1, 2)"],
     "a search never reads its objective from test"),
    (["method=debug", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=0", "method.value=choice(1, 2)"],
     "hydra.sweeper.n_trials=0 is not allowed; expected a positive int"),
    (["method=debug", "hydra/sweeper=optuna", "hydra.sweeper.sampler=grid", "method.value=choice(1, 2)"],
     "hydra.sweeper.sampler=grid is not allowed; expected one of tpe, random"),
    (["experiment=search_lora", "method.lora.r=tag(log, interval(4, 64))"],
     "method.lora.r: Value '4.0' of type 'float' could not be converted to Integer"),
])
def test_a_search_that_cannot_run_is_refused_in_one_line(args, expected, tmp_path):
    proc = launch("-m", *args, f"hydra.sweep.dir={tmp_path / 's'}", cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout[-2000:]
    assert expected in proc.stderr, proc.stderr
    assert "torch" not in proc.imported and not (tmp_path / "s").exists()


@pytest.mark.parametrize("overlay", ["search_smoke", "search_lora", "search_dpo"])
def test_search_overlays_and_their_confirm_command_pass_preflight(overlay):
    """The overlay composes as a search, and the command the search prints for its best settings (the
    basic sweeper, seeds) composes too."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from agentcoder.config import CONF_DIR
    from agentcoder.preflight import check_overrides, normalize_overrides, sweep_values
    from hydra_plugins.agentcoder_sweeper.optuna_sweeper import confirm_overrides
    from hydra_plugins.agentcoder_sweeper.space import parse_space

    assert check_overrides(CONF_DIR, [f"experiment={overlay}"], multirun=True) == []
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        params = OmegaConf.to_container(compose("config", [f"experiment={overlay}"], return_hydra_config=True)
                                        .hydra.sweeper.params)
    swept, fixed = parse_space(params, [f"experiment={overlay}"])
    best = {key: sweep_values(o)[-1] for key, o in swept.items()}  # a value each, as the sampler would give
    command = normalize_overrides(confirm_overrides(fixed, best))
    assert "hydra/sweeper=basic" in command and command[-1] == "seed=1,2,3"
    assert check_overrides(CONF_DIR, command, multirun=True) == []


def test_the_plugin_is_found_outside_the_checkout(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "agentcoder.run", "hydra/sweeper=optuna", "--cfg", "hydra",
                           "-p", "hydra.sweeper"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "n_trials: 20" in proc.stdout and str(ROOT) not in proc.stdout
