"""hydra/sweeper=optuna: a search on the validation split with optuna's ask/tell.

    python -m agentcoder.run -m experiment=search_lora hydra.sweeper.n_trials=20
    python -m agentcoder.run -m method=lora hydra/sweeper=optuna 'method.train.lr=tag(log, interval(1e-5, 1e-3))'

Each trial is an ordinary run (a job of the configured launcher: in-process, `hydra/launcher=local`
or `slurm`, `n_jobs` at a time) whose record holds its objective: `eval.objective` on val, never test.
Unless `eval.test_in_search=true`, trials skip the test split (`eval.split=none`); the search ends by
printing the command that runs the best settings on test, with seeds.

The study lives in <sweep dir>/study.journal (optuna's JournalFileBackend: a file, safe for several
processes).  The same command with more trials goes on where it stopped: trials a kill left running
are marked failed (`interrupted`) and asked again with the same settings (their run dirs resume); a
trial whose run failed is told as failed and the search goes on.
"""


import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from agentcoder.checks import search_problems
from agentcoder.config import SEARCH_SWEEPER
from agentcoder.files import RUN_FILE, STUDY_FILE, read_json
from agentcoder.preflight import normalize_overrides
from hydra_plugins.agentcoder_sweeper.space import distribution, override_value, parse_space

# A trial a kill left running: failed, and asked again (user attribute on the failed one).
INTERRUPTED = "interrupted"
CONFIRM_SEEDS = "1,2,3"


@dataclass
class OptunaSweeperConf:
    _target_: str = SEARCH_SWEEPER
    n_trials: int = 20  # trials in the study, counting those of earlier invocations (more: it goes on)
    n_jobs: int = 1  # trials launched together through hydra/launcher
    direction: str = "maximize"  # maximize | minimize (eval.objective's metrics are higher-is-better)
    sampler: str = "tpe"  # tpe | random
    startup_trials: int = 5  # TPE samples at random until this many trials are done (searches here are small)
    seed: int | None = None  # the sampler's seed; null: the run's `seed`
    study_name: str = "search"
    params: dict[str, str] | None = None  # the search space (see space.py); the command line adds to it


ConfigStore.instance().store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="agentcoder")


def say(text: str) -> None:
    print(f"[search] {text}", flush=True)


class OptunaSweeper(Sweeper):
    def __init__(self, n_trials: int, n_jobs: int, direction: str, sampler: str, startup_trials: int,
                 seed: int | None, study_name: str, params: dict[str, str] | None) -> None:
        self.settings = {"n_trials": n_trials, "n_jobs": n_jobs, "direction": direction, "sampler": sampler,
                         "startup_trials": startup_trials}
        lines = search_problems(self.settings)  # preflight said them already; a direct caller hears them here
        if lines:
            raise ValueError("; ".join(lines))
        self.n_trials, self.n_jobs, self.direction = n_trials, n_jobs, direction
        self.sampler_name, self.startup_trials, self.seed = sampler, startup_trials, seed
        self.study_name = study_name
        self.params = dict(params or {})
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher: Any = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    # ------------------------------------------------------------------ the study

    def _sampler(self, done: int) -> Any:
        import optuna

        # Offset by the trials already in the study: a resumed search draws new settings, not the
        # first invocation's again.
        seed = int(self.config.seed if self.seed is None else self.seed) + done
        if self.sampler_name == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=self.startup_trials,
                                          constant_liar=self.n_jobs > 1)

    def _study(self, sweep_dir: Path) -> Any:
        import optuna
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # the search prints its own lines
        storage = JournalStorage(JournalFileBackend(str(sweep_dir / STUDY_FILE)))
        names = optuna.get_all_study_names(storage)
        done = 0
        if self.study_name in names:
            done = len(optuna.load_study(study_name=self.study_name, storage=storage).trials)
        return optuna.create_study(study_name=self.study_name, storage=storage, sampler=self._sampler(done),
                                   direction=self.direction, load_if_exists=True)

    @staticmethod
    def _requeue_interrupted(study: Any) -> int:
        """Trials a killed search left running: failed (marked interrupted) and asked again."""
        import optuna
        from optuna.trial import TrialState

        stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        for frozen in stale:
            optuna.trial.Trial(study, frozen._trial_id).set_user_attr(INTERRUPTED, True)
            study.tell(frozen.number, state=TrialState.FAIL)
            study.enqueue_trial(frozen.params, user_attrs={"asked_again_for": frozen.number})
        return len(stale)

    @staticmethod
    def _counted(study: Any) -> int:
        """Trials that count towards n_trials: completed, and failed by their run (not by a kill)."""
        from optuna.trial import TrialState

        return sum(t.state == TrialState.COMPLETE or (t.state == TrialState.FAIL and not t.user_attrs.get(INTERRUPTED))
                   for t in study.get_trials(deepcopy=False))

    # ------------------------------------------------------------------ the sweep

    def sweep(self, arguments: list[str]) -> list[Any]:
        from omegaconf import OmegaConf

        assert self.config is not None
        swept, fixed = parse_space(self.params, arguments)
        if not swept:
            raise ValueError("hydra/sweeper=optuna has nothing to search: give hydra.sweeper.params or a sweep "
                             "on the command line, e.g. 'method.train.lr=tag(log, interval(1e-5, 1e-3))'")
        space = {key: distribution(o) for key, o in swept.items()}
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        test_in_search = bool(OmegaConf.select(self.config, "eval.test_in_search", default=False))
        extra = [] if test_in_search else ["eval.split=none"]

        study = self._study(sweep_dir)
        requeued = self._requeue_interrupted(study)
        counted = self._counted(study)
        remaining = max(0, self.n_trials - counted)
        say(f"study '{self.study_name}' in {sweep_dir / STUDY_FILE}: {counted} trials done, {remaining} to run"
            + (f" ({requeued} left running by a stopped search, asked again)" if requeued else "")
            + ("" if test_in_search else "; trials skip the test split (eval.test_in_search=false)"))
        returns = []
        while remaining > 0:
            asked = [study.ask(space) for _ in range(min(self.n_jobs, remaining))]
            remaining -= len(asked)
            trials = [t for t in asked if not self._seen(study, t)]
            if not trials:
                continue
            batch = [normalize_overrides([*fixed, *(f"{k}={override_value(v)}" for k, v in t.params.items()), *extra])
                     for t in trials]
            self.validate_batch_is_legal(batch)
            results = self.launcher.launch(batch, initial_job_idx=trials[0].number)
            for trial, result in zip(trials, results, strict=True):
                self._tell(study, trial, result)
            returns.append(results)
        self._summary(study, fixed, swept)
        return returns

    @staticmethod
    def _seen(study: Any, trial: Any) -> bool:
        """A trial the sampler gave the settings of a completed one (a categorical space runs out of new
        ones): told that trial's value, with nothing launched, its run dir left as it is."""
        from optuna.trial import TrialState

        same = next((t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                     if t.params == trial.params), None)
        if same is None:
            return False
        trial.set_user_attr("run_dir", same.user_attrs.get("run_dir", str(same.number)))
        trial.set_user_attr("same_as", same.number)
        study.tell(trial, same.value)
        say(f"trial {trial.number}: the settings of trial {same.number} again: {same.value:.4f} (not run again)")
        return True

    def _tell(self, study: Any, trial: Any, result: JobReturn) -> None:
        from optuna.trial import TrialState

        run_dir = Path(str(result.hydra_cfg.hydra.runtime.output_dir)) if result.hydra_cfg else None
        if run_dir is not None:
            trial.set_user_attr("run_dir", run_dir.name)
        objective = (read_json(run_dir / RUN_FILE) or {}).get("objective") if run_dir else None
        value = result._return_value if result.status == JobStatus.COMPLETED else None
        params = " ".join(f"{k}={override_value(v)}" for k, v in trial.params.items())
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            study.tell(trial, float(value))
            where = f"{objective['metric']} on val, n={objective['n']}" if objective else "objective"
            best = study.best_trial
            say(f"trial {trial.number}: {value:.4f} ({where}) {params} | best {best.value:.4f} (trial {best.number})")
            return
        if result.status == JobStatus.FAILED:
            error = f"{type(result._return_value).__name__}: {result._return_value}"
        else:
            error = "the run returned no validation objective (no val split, or nothing selected)"
        trial.set_user_attr("error", error.splitlines()[0][:300] if error else "")
        study.tell(trial, state=TrialState.FAIL)
        say(f"trial {trial.number}: failed ({trial.user_attrs.get('error') or error}) {params}")

    def _summary(self, study: Any, fixed: list[str], swept: dict[str, Any]) -> None:
        from optuna.trial import TrialState

        trials = study.get_trials(deepcopy=False)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        failed = sum(t.state == TrialState.FAIL and not t.user_attrs.get(INTERRUPTED) for t in trials)
        if not complete:
            say(f"{len(trials)} trials, none completed ({failed} failed): no best settings")
            return
        best = study.best_trial
        settings = [f"{k}={override_value(v)}" for k, v in best.params.items()]
        say(f"{len(complete)} completed, {failed} failed; best trial {best.number}: {best.value:.4f} "
            f"({self.direction}) with {' '.join(settings)}")
        say("run the best settings on test, with seeds:")
        print("  python -m agentcoder.run -m " + " ".join(_quote(c) for c in confirm_overrides(fixed, best.params)),
              flush=True)
        sys.stdout.flush()


def confirm_overrides(fixed: list[str], params: dict[str, Any]) -> list[str]:
    """The overrides that run PARAMS on test with seeds: the search's fixed overrides, the basic sweeper
    (no search; the params a search overlay set are dropped), a seed sweep."""
    keep = [f for f in fixed if not f.startswith(("seed=", "eval.split=", "eval.test_in_search="))]
    settings = [f"{k}={override_value(v)}" for k, v in params.items() if k != "seed"]
    return [*keep, "hydra/sweeper=basic", "hydra.sweeper.params=null", *settings, f"seed={CONFIRM_SEEDS}"]


def _quote(arg: str) -> str:
    return f"'{arg}'" if any(c in arg for c in " ()'\"$*?[]") else arg
