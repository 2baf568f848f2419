#!/usr/bin/env bash
# The real small grid behind docs/results/: SmolLM2-135M (embedded) on this 2-core CPU, every method
# on the same 50 BFCL test examples at data_fraction 0.02 (lora also at 0.05), then the report.
#
#   bash scripts/cpu_small_grid.sh            # ~1.5 h on an idle 2-core CPU; a re-run skips finished jobs
#
# conf/experiment/cpu_small.yaml holds the shared settings (the SFT stage's sft_train, eval.limit).
# Each RL method takes its cost caps here: an overlay cannot set method.* for every method.
set -uo pipefail
SWEEP=${SWEEP:-multirun/cpu_small}
PY=${PY:-.venv/bin/python}
run() { "$PY" -m agentcoder.run -m experiment=cpu_small "hydra.sweep.dir=$SWEEP" "$@" || echo "[grid] failed: $*"; }
CAPS=(method.train.val_limit=16 method.train.evaluations=2)

run method=baseline,lora                      # lora is the SFT stage the others reuse
# The RL methods sample: prompts up to ~1,200 tokens and 96 new tokens keep each job near 15 minutes.
run method=dpo "${CAPS[@]}" method.train.max_steps=6 method.dpo.max_prompt_length=1184 \
    method.dpo.max_completion_length=96
run method=grpo "${CAPS[@]}" method.train.max_steps=6 method.train.max_length=1280 \
    method.grpo.max_completion_length=96
run method=ppo "${CAPS[@]}" method.train.max_steps=3 method.train.max_length=1280 method.ppo.max_new_tokens=96 \
    method.ppo.rollout_batch_size=8 method.ppo.ppo_epochs=2
if [ "${WITH_FRACTION:-0}" = 1 ]; then        # the fraction axis: lora at 0.05 (~40 min more)
  run method=lora data_fraction=0.05
fi
time "$PY" -m agentcoder.compare "$SWEEP" --out docs/results --report
