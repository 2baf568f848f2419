"""The one entrypoint: compose -> validate -> seed -> dispatch to the method -> write records.

    python -m agentcoder.run method=lora quant=4bit
    python -m agentcoder.run -m method=baseline,lora data_fraction=0.1,1.0
    torchrun --nproc_per_node 2 -m agentcoder.run method=lora     # one run on two processes (ranks.py)

Everything before dispatch stays free of torch so that `--help`, `--cfg job` and config errors
answer in about a second.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from agentcoder import ranks
from agentcoder.checks import validate
from agentcoder.config import CONF_DIR, METHODS, ConfigError, config_hash
from agentcoder.preflight import check_overrides, normalize_overrides, split_argv
from agentcoder.tracking.callbacks import CURRENT_SWEEP, LIVE_ELSEWHERE, sweep_summary_line
from agentcoder.tracking.records import Interrupted, RunRecord, live_run_error, mark_skipped, mark_stale_failed
from agentcoder.tracking.result import objective_value
from agentcoder.tracking.secrets import scrub_file


def seed_everything(seed: int, *, torch: bool = True) -> None:
    """python, numpy, torch and every CUDA device (transformers' set_seed); TORCH=False (a method
    that never uses it) seeds python and numpy only, without importing torch."""
    if torch:
        from transformers import set_seed

        set_seed(seed)
        return
    import random

    random.seed(seed)
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed(seed)


# The hub libraries' offline switches: read when called (peft, datasets) or at import (huggingface_hub).
OFFLINE_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


@contextmanager
def hub_offline(cfg: DictConfig) -> Iterator[bool]:
    """Offline mode for the hub libraries while a run whose model and data are embedded runs: nothing it
    needs is on the hub, and a lookup (peft asks the hub about the base model at every adapter save)
    would only wait on DNS.  Yields whether it switched."""
    embedded = cfg.model.source == "embedded" and cfg.data.source == "embedded"
    if not embedded:
        yield False
        return
    saved = {k: os.environ.get(k) for k in OFFLINE_ENV}
    os.environ.update(dict.fromkeys(OFFLINE_ENV, "1"))
    hub = sys.modules.get("huggingface_hub.constants")
    hub_saved = getattr(hub, "HF_HUB_OFFLINE", None)
    if hub is not None:
        hub.HF_HUB_OFFLINE = True
    try:
        yield True
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if hub is not None:
            hub.HF_HUB_OFFLINE = hub_saved


def _hydra_facts() -> tuple[Path, dict]:
    hc = HydraConfig.get()
    facts = {
        "choices": {k: v for k, v in OmegaConf.to_container(hc.runtime.choices).items() if not k.startswith("hydra/")},
        # As typed: an ${oc.env:...} in an override must not land resolved in the record.
        "overrides": OmegaConf.to_container(hc.overrides.task, resolve=False),
        "job_num": hc.job.get("num"),
    }
    return Path(hc.runtime.output_dir), facts


def run_task(raw_cfg: DictConfig) -> float | None:
    """One job: validate, record, dispatch to the method; returns the run's objective (`eval.objective`
    on the validation split: what hydra/sweeper=optuna maximises), or None where the run has none.  A job
    skipped as already completed returns the objective its record holds."""
    cfg = validate(raw_cfg)  # also a sweep combination preflight did not compose
    run_dir, facts = _hydra_facts()

    # Under several processes every rank works in rank 0's run dir, and decides from rank 0's reading of it.
    run_dir = Path(ranks.broadcast(str(run_dir)))
    previous = ranks.broadcast(mark_stale_failed(run_dir) if ranks.is_main() else None)  # killed: failed, re-run
    if previous and previous.get("status") == "running":  # came alive since on_run_start looked
        raise RuntimeError(live_run_error(run_dir, previous))
    if str(run_dir.resolve()) in LIVE_ELSEWHERE:  # a sweep job kept out of a live run's dir
        raise RuntimeError(LIVE_ELSEWHERE[str(run_dir.resolve())])
    if cfg.resume and previous and previous.get("status") == "completed":
        if previous.get("config_hash") == config_hash(cfg):
            if ranks.is_main():
                mark_skipped(run_dir)
            print(f"[agentcoder] skip {run_dir}: already completed with the same config (resume=false re-runs)")
            return objective_value(previous.get("objective"))

    from agentcoder.methods import load_method

    with RunRecord.start(run_dir, cfg, facts) as record, hub_offline(cfg):
        seed_everything(cfg.seed, torch=METHODS[cfg.method.name].uses_torch)
        result = load_method(cfg.method.name).run(cfg, record)
        metrics = result.to_metrics()
        report_to = list(OmegaConf.select(cfg, "method.train.report_to", default=None) or [])
        if report_to and ranks.is_main():
            from agentcoder.tracking.trackers import report_final

            steps = int((result.training or {}).get("steps") or 0)
            record.update(trackers=report_final(report_to, run_dir, metrics, step=steps))
        record.update(objective=result.objective)
        record.complete(metrics)
    return result.objective_value()


task = hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")(run_task)


def _raise_interrupted(signum: int, frame: object) -> None:
    # A second signal while the record is being closed kills at once (the heartbeat tells).
    signal.signal(signum, signal.SIG_DFL)
    raise Interrupted(signum)


def _start_ranks(multirun: bool) -> None:
    """One run on several processes: refuse a sweep, open the process group (Hydra's run dir needs it:
    tracking/callbacks.new_dir), and leave Hydra's own files (.hydra/, the job log) to rank 0."""
    n = ranks.world_size()
    if multirun:
        if ranks.is_main():
            print(f"agentcoder: -m under {n} processes (WORLD_SIZE={n}): a sweep runs its jobs side by side, "
                  f"one process each; launch one run per torchrun / accelerate launch", file=sys.stderr)
        ranks.exit_after_main(2)  # after a refusal rank 0 prints
    try:
        backend = ranks.start()
    except ranks.RendezvousError as err:  # every rank says it: each may have been started alone
        print(f"agentcoder: {err}", file=sys.stderr)
        sys.exit(1)
    if ranks.is_main():
        print(f"[agentcoder] one run on {n} processes ({backend})")
    else:  # rank 0 speaks for the run: the others' prints and progress bars would only repeat it
        sys.argv.extend(["hydra.output_subdir=null", "hydra/job_logging=stdout"])
        os.environ.update(TQDM_DISABLE="1", HF_DATASETS_DISABLE_PROGRESS_BARS="1")
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process


def main() -> None:
    sys.argv[1:] = normalize_overrides(sys.argv[1:])
    overrides, flags = split_argv(sys.argv[1:])
    if not ({"-h", "--help", "--hydra-help", "--info", "-i", "--shell-completion", "-sc"} & set(flags)):
        showing = bool({"--cfg", "-c"} & set(flags))
        try:
            extra = check_overrides(CONF_DIR, overrides, starting=not showing,
                                    multirun=bool({"-m", "--multirun"} & set(flags)))
        except ConfigError as err:
            for line in str(err).splitlines() if ranks.is_main() else ():  # once, not once per process
                print(f"agentcoder: config error: {line}", file=sys.stderr)
            ranks.exit_after_main(2)
        sys.argv.extend(extra)
        if ranks.world_size() > 1 and not showing:
            _start_ranks(bool({"-m", "--multirun"} & set(flags)))
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_interrupted)
    code = 0
    try:
        task()
    except (Interrupted, KeyboardInterrupt) as err:
        signum = err.signum if isinstance(err, Interrupted) else signal.SIGINT
        print(f"[agentcoder] {err or 'interrupted by SIGINT'}", file=sys.stderr)
        code = 128 + signum
    finally:
        if CURRENT_SWEEP.get("dir"):
            scrub_file(CURRENT_SWEEP["dir"] / "multirun.yaml")  # also when no job got to start
            print(sweep_summary_line())
    if code:
        sys.exit(code)


if __name__ == "__main__":
    main()
