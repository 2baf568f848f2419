"""Select the adapter on the task metric: val exact match every eval_steps, the best one kept.

The adapter goes to a temp dir first and then takes the place of <run_dir>/adapter, so a kill
never leaves a half-written best adapter; best.json (score, step) is written after it.  Under several
processes every rank evaluates its share of val and sees the same score; rank 0 saves.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from transformers import TrainerCallback

from agentcoder import ranks
from agentcoder.files import BEST_FILE, read_json
from agentcoder.tracking.records import atomic_write_json
from agentcoder.tracking.result import val_objective

ADAPTER_DIR = "adapter"


class ValSelection(TrainerCallback):
    """Every eval_steps (and at the end): val exact match; on improvement, save the adapter."""

    def __init__(self, run_dir: Path, examples: list, tokenizer: Any, cfg: DictConfig, tag: str):
        self.run_dir = run_dir
        self.examples = examples
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.tag = tag
        self.eval_steps: int | None = None  # set from the run's schedule (setup.plan_schedule)
        self.trainer: Any = None  # set once the trainer exists (trainer.log needs it)
        best = read_json(run_dir / BEST_FILE) or {}  # a resumed run keeps competing with its old best
        self.best_score: float | None = best.get("val_exact_match")
        self.best_step: int | None = best.get("step")
        self.best_overall: dict[str, Any] | None = best.get("overall")  # every val figure at the best step
        self.last_step: int | None = None
        self.last_score: float | None = None
        self.eval_time_s = 0.0

    def check(self, model: Any, step: int) -> dict[str, float]:
        """Val exact match of MODEL at STEP; on improvement the adapter and best.json are saved.
        Returns the figures to log (the trainer callback logs them; PPO's loop writes its own log)."""
        from agentcoder.evaluation.evaluator import evaluate_as_run
        from agentcoder.models.memory import release_memory

        t0 = time.perf_counter()
        result = evaluate_as_run(self.cfg, model, self.tokenizer, self.examples, progress=False, desc=f"val@{step}")
        # Generation's buffers (a new shape every token) leave the heap in holes that training's fixed
        # shapes do not fill: handed back, they do not stay resident for the rest of the run.
        release_memory()
        seconds = time.perf_counter() - t0
        self.eval_time_s += seconds
        em = float(result.metrics["overall"]["exact_match"])
        self.last_step, self.last_score = step, em
        if self.best_score is None or em > self.best_score:
            self.best_score, self.best_step = em, step
            self.best_overall = {k: v for k, v in result.metrics["overall"].items() if not isinstance(v, list)}
            if ranks.is_main():
                save_adapter(model, self.tokenizer, self.run_dir / ADAPTER_DIR)
                best = {"val_exact_match": em, "step": step, "n_val": len(self.examples),
                        "overall": self.best_overall}
                atomic_write_json(self.run_dir / BEST_FILE, best)
        print(f"[{self.tag}] step {step}: val exact match {em:.3f} (best {self.best_score:.3f} @ {self.best_step})")
        return {"val_exact_match": em, "val_best_exact_match": self.best_score, "val_s": seconds}

    def objective(self, metric: str) -> dict[str, Any] | None:
        """The run's objective: METRIC of the selected (best) checkpoint on the val examples it was
        selected on; None when nothing was selected (no val split)."""
        return best_objective(self.run_dir, metric)

    def score(self, model: Any, step: int) -> float:
        figures = self.check(model, step)
        # trainer.log resets control.should_log; inside on_step_end that would drop this step's loss.
        control = self.trainer.control
        should_log = control.should_log
        self.trainer.log(figures)
        control.should_log = should_log
        return figures["val_exact_match"]

    def on_step_end(self, args, state, control, model=None, **kwargs):  # noqa: ANN001
        if self.examples and self.eval_steps and state.global_step % self.eval_steps == 0:
            self.score(model, state.global_step)

    def on_train_end(self, args, state, control, model=None, **kwargs):  # noqa: ANN001
        if self.examples and self.last_step != state.global_step:
            self.score(model, state.global_step)


def best_objective(run_dir: Path, metric: str) -> dict[str, Any] | None:
    """The objective record of the adapter RUN_DIR selected (its best.json): METRIC on val at the best step."""
    best = read_json(Path(run_dir) / BEST_FILE) or {}
    overall = best.get("overall") or ({"exact_match": best["val_exact_match"]} if "val_exact_match" in best else None)
    return val_objective(metric, overall, best.get("n_val"), step=best.get("step"))


def save_adapter(model: Any, tokenizer: Any, target: Path) -> None:
    """peft save_pretrained + tokenizer into TARGET, replacing it only once the new one is complete."""
    tmp = target.with_name(f".{target.name}.tmp")
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(tmp, ignore_errors=True)
    # Only the trained adapter: a frozen reference copy (GRPO's "ref", PPO's "reference") is not the result.
    adapters = getattr(model, "peft_config", {})
    selected = {"selected_adapters": [model.active_adapter]} if len(adapters) > 1 else {}
    model.save_pretrained(str(tmp), **selected)
    tokenizer.save_pretrained(str(tmp))
    if target.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def recover_adapter(target: Path) -> None:
    """A kill between the two renames of save_adapter leaves only .adapter.old: put it back."""
    old = target.with_name(f".{target.name}.old")
    if not target.exists() and old.is_dir():
        os.replace(old, target)


def keep_best(peft_model: Any, tokenizer: Any, run_dir: Path, selection: ValSelection, device: str) -> Path:
    """Load the best adapter's weights into PEFT_MODEL (or save the final one when nothing was
    selected, e.g. without a val split); returns the adapter folder."""
    from peft import load_peft_weights, set_peft_model_state_dict

    adapter_dir = run_dir / ADAPTER_DIR
    ranks.barrier()  # rank 0's last save is complete before any rank reads it
    if adapter_dir.is_dir() and selection.best_step is not None:
        set_peft_model_state_dict(peft_model, load_peft_weights(str(adapter_dir), device=device))
    elif ranks.is_main():
        save_adapter(peft_model, tokenizer, adapter_dir)
    return adapter_dir
