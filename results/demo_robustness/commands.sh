#!/usr/bin/env bash
# The demo robustness matrix (issue 25): a preset x 5 demo folds x 3 seeds x fp32/bf16 -> test accuracy and
# the first epoch at which val accuracy reaches 1.0 ("epochs to learn"). A benchmark, not a test: it trains
# 30 runs per preset (about 2 minutes each on one core of a 2-core CPU).
#   bash results/demo_robustness/commands.sh run MODEL PRESET [PRECISION...]   # e.g. run resnet small_recipe
#   bash results/demo_robustness/commands.sh matrix                             # -> results/demo_robustness/matrix.md
#   bash results/demo_robustness/commands.sh ablation NAME PRESET [OPTIONS...]  # one run of ablation.md
#   bash results/demo_robustness/commands.sh ablation-table RUN_DIR...          # its table
# Each (model, preset, precision) is one cross-validation under runs/cv/; rerunning resumes it. Its finished
# runs' records are kept in results/demo_robustness/records/ (cv --keep-into) and restored from there first,
# so the matrix grows over sessions on different machines; `matrix` reads the kept records.
# PARALLEL=N runs N of its trainings at once (cv --parallel: each gets 1/N of the CPUs as its threads);
# THREADS=N instead gives each training N threads (cv --cpus-per-job), and runs CPUs/N of them at once
# (with PARALLEL too: at most PARALLEL of them).
set -euo pipefail
PY=.venv/bin/python
JOB_ARGS="${PARALLEL:+--parallel $PARALLEL} ${THREADS:+--cpus-per-job $THREADS}"
KEPT=results/demo_robustness/records

case ${1:-} in
  run)
    model=$2 preset=$3; shift 3
    for precision in "${@:-fp32 bf16}"; do
      for p in $precision; do
        $PY -m common cv --name "demo-$model-$preset-$p" --cv-root runs/cv --keep-into "$KEPT" --folds 5 --seeds 0 1 2 \
          --models "$model" $JOB_ARGS --data demo --precision "$p" --$model-args "--preset $preset"
      done
    done ;;
  ablation)  # e.g. ablation O_parts_nozero small --model branch_relu=false --model kaiming_init=true --model conv_bias=false
    name=$2 preset=$3; shift 3
    $PY -m torch_resnet train --run-dir "runs/ablation/$name" --quiet --precision fp32 --threads 1 --preset "$preset" "$@" ;;
  ablation-table) shift; $PY -m common.evaluation.robustness --ablation "$@" ;;
  matrix) $PY -m common.evaluation.robustness $KEPT/demo-*-*-fp32 $KEPT/demo-*-*-bf16 --out results/demo_robustness/matrix.md ;;
  *) echo "usage: $0 run MODEL PRESET [PRECISION...] | matrix | ablation NAME PRESET [OPTIONS...] | ablation-table RUN_DIR..." >&2; exit 2 ;;
esac
