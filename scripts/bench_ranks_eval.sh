#!/usr/bin/env bash
# The test evaluation of one run on two processes: sharded across the ranks (what the project does)
# against rank 0 alone (one process with the one thread torchrun gives each rank), back to back on the
# embedded default, plus a plain one-process run (all cores) for scale.  Run it alone on the machine.
#
#   bash scripts/bench_ranks_eval.sh [OUT_DIR] [N_EXAMPLES]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-/tmp/bench_ranks_eval}
N=${2:-32}
PY=.venv/bin/python
rm -rf "$OUT" && mkdir -p "$OUT"
echo "cpu bf16 flags: $(grep -o -m1 -E 'avx512_bf16|amx_bf16' /proc/cpuinfo | sort -u | tr '\n' ' ')"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
OMP_NUM_THREADS=1 $PY -m agentcoder.run method=baseline eval.limit="$N" hydra.run.dir="$OUT/rank0_alone" > "$OUT/rank0_alone.log" 2>&1
OMP_NUM_THREADS=1 $PY -m torch.distributed.run --standalone --nproc_per_node 2 -m agentcoder.run method=baseline \
    eval.limit="$N" hydra.run.dir="$OUT/sharded" > "$OUT/sharded.log" 2>&1
$PY -m agentcoder.run method=baseline eval.limit="$N" hydra.run.dir="$OUT/one_process" > "$OUT/one_process.log" 2>&1
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
for run in rank0_alone sharded one_process; do
  $PY - "$OUT/$run" <<'PY'
import json, sys
from pathlib import Path
d = Path(sys.argv[1])
m, r = json.loads((d / "metrics.json").read_text()), json.loads((d / "run.json").read_text())
print(f"{d.name:12} eval wall {m['overall']['wall_time_s']:7.1f} s  exact match {m['overall']['exact_match']:.3f}"
      f"  n {m['overall']['n']}  processes {r.get('world_size', 1)}")
PY
done
$PY - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
wall = {n: json.loads((out / n / "metrics.json").read_text())["overall"]["wall_time_s"] for n in ("rank0_alone", "sharded")}
print(f"sharded vs rank 0 alone: {wall['rank0_alone'] / wall['sharded']:.2f}x faster")
PY
$PY -m agentcoder.compare --diff "$OUT/rank0_alone" "$OUT/sharded" --out "$OUT/diff" | grep -E "same raw|exact match"
