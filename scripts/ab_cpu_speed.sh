#!/usr/bin/env bash
# Back to back on this machine: `make run` and a LoRA step of the real SmolLM2 (bench_train), at an
# older commit (default f3d46bc, before model.dtype) and at this checkout, in one shell run.
#
#   bash scripts/ab_cpu_speed.sh [OLD_REF] [OUT_DIR]
#
# Both sides use this checkout's .venv; the old side runs from a git worktree (its own agentcoder
# and conf/). Prints wall times, tokens/s and their ratios; then compares the two make-run
# evaluations example by example (`compare --diff`). Run it alone on the machine.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OLD_REF="${1:-f3d46bc}"
OUT="${2:-/tmp/ab_cpu_speed}"
PY="$ROOT/.venv/bin/python"
rm -rf "$OUT"; mkdir -p "$OUT"
git -C "$ROOT" worktree add --detach "$OUT/old" "$OLD_REF" >/dev/null
trap 'git -C "$ROOT" worktree remove --force "$OUT/old" >/dev/null 2>&1 || true' EXIT
grep -o 'avx512_bf16\|amx_bf16' /proc/cpuinfo | sort -u | tr '\n' ' ' | sed 's/^/cpu bf16 flags: /;s/$/\n/'
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"

timed() {  # NAME DIR CMD...: wall seconds into $OUT/NAME.s, output into $OUT/NAME.log
  local name=$1 dir=$2; shift 2
  local t0; t0=$(date +%s.%N)
  (cd "$dir" && "$@") >"$OUT/$name.log" 2>&1
  echo "$(date +%s.%N) - $t0" | bc > "$OUT/$name.s"
  printf '%-12s %8.1f s\n' "$name" "$(cat "$OUT/$name.s")"
}

# make run = `python -m agentcoder.run` with the defaults (50 test examples + the latency probe).
timed run_old "$OUT/old" "$PY" -m agentcoder.run "hydra.run.dir=$OUT/run_old"
timed run_new "$ROOT" "$PY" -m agentcoder.run "hydra.run.dir=$OUT/run_new"
BENCH=(--examples 120 --steps 3 --batch-size 2 --max-length 1024 --configs project data.categories=[simple_python,multiple,parallel,parallel_multiple,irrelevance,live_simple])
timed bench_old "$OUT/old" "$PY" scripts/bench_train.py "${BENCH[@]}" --json "$OUT/bench_old.json"
timed bench_new "$ROOT" "$PY" scripts/bench_train.py "${BENCH[@]}" --json "$OUT/bench_new.json"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"

"$PY" - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
s = {n: float((out / f"{n}.s").read_text()) for n in ("run_old", "run_new")}
print(f"make run: old {s['run_old']:.1f} s, new {s['run_new']:.1f} s, speed-up {s['run_old'] / s['run_new']:.2f}x")
b = {n: json.loads((out / f"bench_{n}.json").read_text())[0] for n in ("old", "new")}
print(f"LoRA step: old {b['old']['tokens_per_s']:.1f} tok/s, new {b['new']['tokens_per_s']:.1f} tok/s, "
      f"speed-up {b['new']['tokens_per_s'] / b['old']['tokens_per_s']:.2f}x")
for n in ("old", "new"):
    m = json.loads((out / f"run_{n}" / "run.json").read_text())["model"]
    print(f"  {n}: model dtype {m['dtype']} ({m.get('dtype_reason', 'fp32 on CPU: no model.dtype')})")
PY
"$PY" -m agentcoder.compare --diff "$OUT/run_old" "$OUT/run_new" --out "$OUT/diff" | tail -25
