"""Bad command lines and kills, as a new user meets them: a reproducible table for issue 11.

    .venv/bin/python scripts/bad_commands.py                 # this checkout
    .venv/bin/python scripts/bad_commands.py --repo /work/main --only 1-5

Each command runs `python -m agentcoder.run` from a fresh temp directory (so `outputs/` and
`multirun/` there show whether a run dir was created) and prints one Markdown row: exit code,
seconds, stderr line count, run dirs created, and the first stderr line (truncated).
`--kills` adds SIGTERM / SIGINT / SIGKILL / disk-full runs (disk-full mounts a 2 MiB tmpfs: root).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# (label, overrides); "{prev}" is a completed debug run (method.value=1), "{empty}" an empty dir.
BAD = [
    ("seed below numpy's range", ["method=debug", "seed=-1"]),
    ("seed above numpy's range", ["method=debug", "seed=1099511627776"]),
    ("5,000-digit seed", ["method=debug", "seed=" + "9" * 5000]),
    ("seed not a number", ["method=debug", "seed=abc"]),
    ("logging_steps=0", ["method=lora", "method.train.logging_steps=0"]),
    ("epochs=inf", ["method=lora", "method.train.epochs=inf"]),
    ("lr=nan", ["method=lora", "method.train.lr=nan"]),
    ("eval_steps=0", ["method=lora", "method.train.eval_steps=0"]),
    ("unknown attention", ["model.attn_implementation=bogus"]),
    ("adapter path missing", ["model.adapter=/nonexistent"]),
    ("gguf path missing", ["model.gguf_path=/nonexistent.gguf"]),
    ("unknown BFCL category", ["data.categories=[nope]"]),
    ("tracker not installed", ["method=lora", "method.train.report_to=[wandb]"]),
    ("unknown tracker", ["method=lora", "method.train.report_to=[nope]"]),
    # Every method is built now, so the issue's `method=dpo` (planned then) is no bad line any more;
    # tests/test_preflight_values.py marks a method planned to keep that check.
    ("another method's section", ["method=grpo", "method.dpo.beta=0.1"]),
    ("unknown method in a sweep", ["-m", "method=debug,nope"]),
    ("negative max_examples", ["data.max_examples=-3"]),
    ("data.path for bfcl", ["data.path=/tmp/x.jsonl"]),
    ("xlam data.path missing", ["data=xlam60k", "data.path=/nonexistent.jsonl"]),
    ("nan metric value", ["method=debug", "method.value=nan"]),
    ("resume_from empty dir", ["method=debug", "resume_from={empty}"]),
    ("resume_from other config", ["method=debug", "method.value=2", "resume_from={prev}"]),
    ("resume_from missing dir", ["method=debug", "resume_from=/nonexistent"]),
    ("method=null", ["method=null"]),
    ("model=null", ["model=null"]),
    ("unset env interpolation", ["model.revision=${oc.env:AGENTCODER_SURELY_UNSET}"]),
    ("100k-character value", ["model.attn_implementation=" + "x" * 100_000]),
    ("unknown key", ["foo=1"]),
    ("unknown key, advised +", ["+foo=1"]),
    ("group option", ["quant=3bit"]),
    ("data_fraction", ["data_fraction=1.5"]),
    ("unknown method", ["method=nope"]),
    ("eval.batch_size=0", ["eval.batch_size=0"]),
    ("LoRA rank", ["method=lora", "method.lora.r=-4"]),
    ("max_examples=0", ["data.max_examples=0"]),
    ("eval.limit=0", ["eval.limit=0"]),
    ("model.init", ["model.init=bogus"]),
    ("categories not a list", ["data.categories=nope"]),
    ("bad value in a sweep", ["-m", "method=debug", "seed=1,-1"]),
    ("two errors at once", ["method=debug", "seed=-1", "eval.limit=0"]),
]


def _env(repo: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(repo), "HYDRA_FULL_ERROR": "0"}


def _run_dirs(cwd: Path) -> int:
    return sum(1 for sub in ("outputs", "multirun") for _ in (cwd / sub).glob("**/.hydra"))


def bad_rows(repo: Path, picks: list[int], timeout: int) -> list[str]:
    work = Path(tempfile.mkdtemp(prefix="bad_commands."))
    prev, empty = work / "prev", work / "empty"
    empty.mkdir()
    subprocess.run([sys.executable, "-m", "agentcoder.run", "method=debug", "method.value=1",
                    f"hydra.run.dir={prev}"], cwd=work, env=_env(repo), capture_output=True, timeout=timeout)
    rows = ["| # | case | command | exit | s | stderr lines | run dirs | first stderr line |",
            "|---|---|---|---|---|---|---|---|"]
    for i in picks:
        label, args = BAD[i - 1]
        args = [a.replace("{prev}", str(prev)).replace("{empty}", str(empty)) for a in args]
        cwd = work / f"case{i}"
        cwd.mkdir()
        t0 = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, "-m", "agentcoder.run", *args], cwd=cwd, env=_env(repo),
                                  capture_output=True, text=True, timeout=timeout)
            code, err = str(proc.returncode), proc.stderr
        except subprocess.TimeoutExpired as exc:
            code, err = "timeout", (exc.stderr or b"").decode(errors="replace") if exc.stderr else ""
        secs = time.perf_counter() - t0
        lines = [ln for ln in err.splitlines() if ln.strip()]
        shown = " ".join(a if len(a) <= 40 else a[:30] + f"…({len(a)} chars)" for a in args)
        first = (lines[0] if lines else "").replace("|", "\\|")
        first = first if len(first) <= 110 else first[:110] + "…"
        rows.append(f"| {i} | {label} | `{shown}` | {code} | {secs:.1f} | {len(lines)} | {_run_dirs(cwd)} | {first} |")
        print(rows[-1], flush=True)
    shutil.rmtree(work, ignore_errors=True)
    return rows


# --------------------------------------------------------------------------- kills

# A debug run whose method sleeps (patched in this child process only), so a signal lands mid-run.
_SLOW = """
import signal, sys, time
import agentcoder.methods.debug as debug
# A background shell starts children with SIGINT ignored; a user's Ctrl-C is not.
signal.signal(signal.SIGINT, signal.default_int_handler)
def run(cfg, record):
    print("started", flush=True)
    time.sleep(60)
debug.run = run
sys.argv = ["agentcoder.run", "method=debug", "hydra.run.dir={run_dir}"]
import agentcoder.run
agentcoder.run.main()
"""

# A debug run whose method writes until the disk is full.
_FILL = """
import sys
import agentcoder.methods.debug as debug
def run(cfg, record):
    with open(record.dir / "big.bin", "wb") as fh:
        while True:
            fh.write(b"x" * 65536)
            fh.flush()
debug.run = run
sys.argv = ["agentcoder.run", "method=debug", "hydra.run.dir={run_dir}"]
import agentcoder.run
agentcoder.run.main()
"""


def _status(run_dir: Path) -> str:
    try:
        data = json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError) as err:
        return f"unreadable run.json ({type(err).__name__})"
    extra = " pid+host+heartbeat" if {"pid", "host", "heartbeat_at"} <= set(data) else ""
    return f"{data.get('status')}{extra}"


def _signal_row(repo: Path, sig: signal.Signals, work: Path) -> str:
    run_dir = work / sig.name
    proc = subprocess.Popen([sys.executable, "-c", _SLOW.format(run_dir=run_dir)], cwd=work, env=_env(repo),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:  # log lines may come before "started"
        if line.strip() == "started":
            break
    t0 = time.perf_counter()
    proc.send_signal(sig)
    try:
        code = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = "still alive after 60 s (killed)"
    secs = time.perf_counter() - t0
    status = _status(run_dir)
    after = ""
    if sig == signal.SIGKILL:
        # What a reader (the sweep summary, resume_from) makes of the record the kill left.
        sys.path.insert(0, str(repo))
        try:
            from agentcoder.tracking.records import effective_status

            after = f"; read as {effective_status(json.loads((run_dir / 'run.json').read_text()))}"
        except (ImportError, OSError, ValueError):
            after = "; (no stale check)"
    return f"| {sig.name} mid-run | {code} | {secs:.1f} | {status}{after} | {(run_dir / 'error.txt').exists()} |"


def _disk_full_row(repo: Path, work: Path) -> str:
    mnt = work / "tiny"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)]).returncode != 0:
        return "| disk full | - | - | could not mount a tmpfs (needs root) | - |"
    try:
        run_dir = mnt / "run"
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", _FILL.format(run_dir=run_dir)], cwd=work, env=_env(repo),
                              capture_output=True, text=True, timeout=120)
        secs = time.perf_counter() - t0
        return (f"| disk full (2 MiB tmpfs) | {proc.returncode} | {secs:.1f} | {_status(run_dir)} | "
                f"{(run_dir / 'error.txt').exists()} |")
    finally:
        subprocess.run(["umount", str(mnt)])


def kill_rows(repo: Path) -> list[str]:
    work = Path(tempfile.mkdtemp(prefix="kills."))
    rows = ["| event | exit | s after signal | final run.json status | error.txt |", "|---|---|---|---|---|"]
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGKILL):
        rows.append(_signal_row(repo, sig, work))
        print(rows[-1], flush=True)
    rows.append(_disk_full_row(repo, work))
    print(rows[-1], flush=True)
    shutil.rmtree(work, ignore_errors=True)
    return rows


def _picks(spec: str | None) -> list[int]:
    if not spec:
        return list(range(1, len(BAD) + 1))
    out: list[int] = []
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", type=Path, default=ROOT, help="checkout whose agentcoder to run (default: this one)")
    ap.add_argument("--only", help="case numbers, e.g. 1-5,9")
    ap.add_argument("--timeout", type=int, default=300)
    ap.add_argument("--kills", action="store_true", help="also the SIGTERM/SIGINT/SIGKILL/disk-full table")
    ap.add_argument("--no-bad", action="store_true", help="skip the bad command lines")
    args = ap.parse_args()
    repo = args.repo.resolve()
    if not args.no_bad:
        bad_rows(repo, _picks(args.only), args.timeout)
    if args.kills:
        print()
        kill_rows(repo)


if __name__ == "__main__":
    main()
