#!/usr/bin/env bash
# The study at equal compute behind docs/results/tuned_study/ (experiment=tuned_study): SmolLM2-135M on
# the CPU study's categories and its 150 test examples.
#
#   bash scripts/tuned_study.sh            # ~6 h on an idle 2-core CPU with bf16 units; a re-run skips finished jobs
#   PART=search bash scripts/tuned_study.sh   # one part: search | stage | arms | base | collect
#
# 1. search: the LoRA search on val at data_fraction 0.25 (experiment=search_lora, 12 trials);
#    conf/experiment/tuned_study.yaml holds its best settings (a test checks they are the committed best).
# 2. stage: those settings at fraction 1.0 with seeds 1-3: the tuned LoRA, and the SFT stage of the arms.
# 3. arms: from each of seeds 1-2's stage, dpo, grpo, ppo and more of the same SFT (method=lora
#    method.init=sft), each sized to the same training time (ARM_* below; the
#    comparator's "At equal compute" section sets them side by side with their times).
# 4. base: grpo from the base model for the stage's time plus an arm's (the ToolRL question).
# 5. collect: the small files of every run into docs/results/tuned_study/runs, then the report.
# Run it alone: other jobs on the two cores slow torch several times over.
set -uo pipefail
PART=${PART:-all}
ROOT=${ROOT:-multirun/tuned_study}
PY=${PY:-.venv/bin/python}
OUT=${OUT:-docs/results/tuned_study}
STAGE_SEEDS=${STAGE_SEEDS:-1 2 3}
ARM_SEEDS=${ARM_SEEDS:-1 2}
# Each arm's size for one training budget (about 10 min on the study's CPU, its val checks included;
# the measured times are in run.json and in the report): steps for lora, grpo and ppo (iterations);
# for dpo the train prompts it samples its pairs from (4 samples each, one epoch over the pairs), since
# sampling them is most of its time and the comparator counts it.
ARM_LORA=${ARM_LORA:-100}
ARM_DPO_PROMPTS=${ARM_DPO_PROMPTS:-64}
ARM_GRPO=${ARM_GRPO:-20}
ARM_PPO=${ARM_PPO:-3}
# grpo from base: at least the stage's time plus an arm's (50 steps took 1.39x that here: from the base
# model the rollouts run longer than from the stage), for one seed (a second would pass the 6 h).
BASE_GRPO=${BASE_GRPO:-50}
BASE_SEEDS=${BASE_SEEDS:-1}

# One sweep dir for every job (a job whose completed run is there already is skipped).
run() { "$PY" -m agentcoder.run -m experiment=tuned_study "hydra.sweep.dir=$ROOT/study" "$@" || echo "[study] failed: $*"; }
VAL=(method.train.val_limit=40 method.train.evaluations=2)

part() { [ "$PART" = all ] || [ "$PART" = "$1" ]; }

if part search; then
  # Copies the committed trials first, so the search goes on from them instead of starting over.
  [ -d "$ROOT/search" ] || { mkdir -p "$ROOT" && cp -r "$OUT/search" "$ROOT/search"; }
  "$PY" -m agentcoder.run -m experiment=search_lora "hydra.sweep.dir=$ROOT/search" \
    hydra.sweeper.n_trials=12 hydra.sweeper.startup_trials=6 || echo "[study] search failed"
fi
if part stage; then
  # Baseline trains nothing, so it takes the CPU study's overlay (the same data, eval and test examples;
  # tuned_study sets LoRA settings that baseline has no key for), with the study's generation budget.
  tokens=$("$PY" -c "from omegaconf import OmegaConf as O; print(O.load('conf/experiment/tuned_study.yaml').eval.max_new_tokens)")
  "$PY" -m agentcoder.run -m experiment=cpu_study method=baseline "eval.max_new_tokens=$tokens" \
    "hydra.sweep.dir=$ROOT/study" || echo "[study] failed: baseline"
  for seed in $STAGE_SEEDS; do run method=lora "seed=$seed"; done
fi
if part arms; then
  for seed in $ARM_SEEDS; do
    # More of the same SFT: the stage's learning rate, on from its adapter.
    run method=lora method.init=sft "method.train.max_steps=$ARM_LORA" 'method.train.lr=${sft_train.lr}' \
      "${VAL[@]}" "seed=$seed"
    run method=dpo "method.dpo.max_prompts=$ARM_DPO_PROMPTS" method.train.epochs=1 "${VAL[@]}" "seed=$seed"
    run method=grpo "method.train.max_steps=$ARM_GRPO" "${VAL[@]}" "seed=$seed"
    run method=ppo "method.train.max_steps=$ARM_PPO" method.ppo.ppo_epochs=2 "${VAL[@]}" "seed=$seed"
  done
fi
if part base; then
  for seed in $BASE_SEEDS; do
    run method=grpo method.init=base "method.train.max_steps=$BASE_GRPO" "${VAL[@]}" "seed=$seed"
  done
fi
if part collect; then
  "$PY" scripts/collect_runs.py --search "$ROOT/search" "$OUT/search"
  "$PY" scripts/collect_runs.py "$ROOT/study" "$OUT/runs"
  "$PY" -m agentcoder.compare "$OUT/runs" --report --out "$OUT"
fi
