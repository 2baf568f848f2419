#!/usr/bin/env bash
# The CPU study behind docs/results/cpu_study/: SmolLM2-135M on the short-prompt BFCL categories,
# all 150 test examples, seeds 1 and 2; then the report from the committed run files.
#
#   bash scripts/cpu_study.sh          # ~1.5 h on an idle 2-core CPU with bf16 units; a re-run skips finished jobs
#
# Seed by seed, so that a cut-short study still holds complete sets: baseline (greedy, so once),
# lora at data_fraction 0.25 and 1.0 (the 1.0 run is the SFT stage the others reuse), then dpo,
# grpo and ppo from that stage, and grpo from the base model (method.init=base).
# Run it alone: other jobs on the two cores slow torch several times over.
set -uo pipefail
SWEEP=${SWEEP:-multirun/cpu_study}
PY=${PY:-.venv/bin/python}
SEEDS=${SEEDS:-1 2}
run() { "$PY" -m agentcoder.run -m experiment=cpu_study "hydra.sweep.dir=$SWEEP" "$@" || echo "[study] failed: $*"; }
VAL=(method.train.val_limit=40 method.train.evaluations=2)
DPO=(method=dpo "${VAL[@]}" method.train.epochs=1 method.dpo.max_prompts=40)
GRPO=(method=grpo "${VAL[@]}" method.train.max_steps=10)
PPO=(method=ppo "${VAL[@]}" method.train.max_steps=3 method.ppo.ppo_epochs=2)

for seed in $SEEDS; do
  [ "$seed" = "${SEEDS%% *}" ] && run method=baseline "seed=$seed"
  run method=lora data_fraction=0.25,1.0 "seed=$seed"
  run "${DPO[@]}" "seed=$seed"
  run "${GRPO[@]}" "seed=$seed"
  run "${PPO[@]}" "seed=$seed"
  run "${GRPO[@]}" method.init=base "seed=$seed"
done

# The small files of every run (no adapters, no checkpoints) into the results folder, one dir per
# run named by method, init, fraction and seed; then the report from those committed files.
OUT=${OUT:-docs/results/cpu_study}
"$PY" scripts/collect_runs.py "$SWEEP" "$OUT/runs"
"$PY" -m agentcoder.compare "$OUT/runs" --report --out "$OUT"
