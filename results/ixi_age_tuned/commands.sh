#!/usr/bin/env bash
# IXI T1 brain MRI (Hammersmith, 181 subjects), 3-class age group at 64^3: both models tuned by Optuna with
# the same budget (issue 26), then each model's best trial through 5-fold cross-validation (test read once).
# The same folds as results/ixi_age_cv64 (subject-grouped, stratified, split seed 42), whose hand-tuned
# configurations are the comparison. Both models run their strided recipe presets (README "Models").
# Run from the repository root with ../shared/data beside it:
#   bash results/ixi_age_tuned/commands.sh tune | report
# `tune` resumes after an interruption (rerun the same line): finished trials and fold runs are kept.
set -euo pipefail
PY=.venv/bin/python
NAME=ixi_age_tuned
ROOT=runs/tune
# Equal budget: 6 trials per model, each trial the mean val AUC over the 5 folds' val sets (Optuna's
# MedianPruner may stop a trial after any fold), 80 epochs for both models, two trials at once (one thread each).
TUNE=(--name $NAME --tune-root $ROOT --models transformer resnet --trials 6 --folds 5 --seeds 0 --parallel 2
      --objective auc)
DATA=(--data ../shared/data/ixi_t1_hh/labels.csv --label-column age_group --shape 64 64 64 --epochs 80
      --weight-decay-exclusions)
case ${1:-} in
  tune)
    $PY -m common tune "${TUNE[@]}" "${DATA[@]}" \
      --transformer-args "--preset small_recipe_strided" --resnet-args "--preset small_recipe_strided" ;;
  report)  # the tuning report, the tuned pair's cv report and summary, and the hand-tuned configurations beside them
    mkdir -p results/$NAME
    cp $ROOT/$NAME/tuning.md $ROOT/$NAME/tuning.json $ROOT/$NAME/selected.json results/$NAME/
    cp $ROOT/$NAME/*.png results/$NAME/ 2>/dev/null || true
    $PY -m common report $ROOT/$NAME/cv --out-root results/$NAME --name cv \
      --title "IXI age group, 64^3, 5-fold CV: each model's Optuna-tuned configuration"
    $PY -m common.evaluation.summary $ROOT/$NAME/cv --out results/$NAME/summary.json --selected cv
    # Against the hand-tuned configurations of results/ixi_age_cv64 (the same folds): val (tables) and test
    ln -sfn "$(realpath $ROOT/$NAME/cv)" runs/cv64/ixi_age_cv64-optuna
    $PY results/ixi_age_cv/tables.py runs/cv64 ixi_age_cv64 > results/$NAME/tables.md
    $PY -m common report runs/cv64/ixi_age_cv64-vit-strided-lr5e-4 runs/cv64/ixi_age_cv64-resnet-strided-long \
      runs/cv64/ixi_age_cv64-optuna --out-root results/$NAME --name against_hand_tuned \
      --title "IXI age group, 64^3, 5-fold CV: Optuna-tuned against hand-tuned configurations" ;;
  *) echo "usage: $0 tune | report" >&2; exit 2 ;;
esac
