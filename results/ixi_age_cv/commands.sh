#!/usr/bin/env bash
# IXI T1 brain MRI (Hammersmith, 181 subjects), 3-class age group, 5-fold cross-validation (subject-grouped,
# stratified, split seed 42; val carved from each fold's training part), training seed 0.
# 32^3 (not 64^3) so that the runs fit a 2-core CPU. Run from the repository root with ../shared/data beside it.
#   bash results/ixi_age_cv/commands.sh baseline | tune CONFIG | tune-all | tables | compare VIT RESNET
# (in that order: compare also writes summary.json over every configuration)
# A cross-validation's finished runs are not run again; an interrupted one resumes. Each finished run's record
# is kept in results/ixi_age_cv/records/ (cv --keep-into; restored from there on a new machine), and the
# tables, reports and summary.json are made from the kept records.
set -euo pipefail
PY=.venv/bin/python
KEPT=results/ixi_age_cv/records
DATA=(--data ../shared/data/ixi_t1_hh/labels.csv --label-column age_group --shape 32 32 32 --batch-size 8)
# THREADS=N gives each training N threads (cv --cpus-per-job) and runs CPUs/N of them at once;
# unset: one training at a time on every CPU.
JOB_ARGS=${THREADS:+--cpus-per-job $THREADS}
# The small-data recipe's training options (issue 11), as in results/adrenalmnist3d.
RECIPE="--label-smoothing 0.1 --weight-decay 0.05 --weight-decay-exclusions"

# The tuning configurations (issue 11, equal budget: three per model, selected on val only by
# tables.py). The first of each is the baseline (`baseline`, both models in one cross-validation).
# The baselines underfit (train loss still falling at their last epoch), so the other two train longer
# with the recipe's training options (the transformer with its recipe preset), at the baseline's
# learning rate and at twice it. No rotation/scaling: the models underfit, more augmentation would not help.
declare -A CONFIG=(
  [vit-recipe-long]="--preset small_recipe --epochs 150 --lr 5e-4 $RECIPE"
  [vit-recipe-long-lr1e-3]="--preset small_recipe --epochs 150 --lr 1e-3 $RECIPE"
  [resnet-recipe-long]="--preset small --epochs 60 --lr 1e-3 $RECIPE"
  [resnet-recipe-long-lr2e-3]="--preset small --epochs 60 --lr 2e-3 $RECIPE"
)

tune() {  # tune CONFIG: the cross-validation of one model's configuration -> runs/cv/ixi_age_cv-CONFIG
  local name=$1 model=transformer
  [[ $name == resnet-* ]] && model=resnet
  [[ -n ${CONFIG[$name]:-} ]] || { echo "unknown configuration $name" >&2; exit 2; }
  $PY -m common cv --name "ixi_age_cv-$name" --cv-root runs/cv --keep-into $KEPT --folds 5 --seeds 0 --models $model $JOB_ARGS "${DATA[@]}" \
    --$model-args "${CONFIG[$name]}"
}

case ${1:-} in
  baseline)  # the unchanged `small` presets of results/ixi_age, both models in one cross-validation
    $PY -m common cv --name ixi_age_cv --cv-root runs/cv --keep-into $KEPT --folds 5 --seeds 0 "${DATA[@]}" \
      --resnet-args "--preset small --epochs 25 --lr 1e-3" --transformer-args "--preset small --epochs 40 --lr 5e-4"
    $PY -m common report $KEPT/ixi_age_cv --out-root results --name ixi_age_cv \
      --title "IXI T1 brain MRI, age group (3 classes), 32^3, 5-fold cross-validation" ;;
  tune) tune "$2" ;;
  tune-all) for name in "${!CONFIG[@]}"; do tune "$name"; done ;;
  tables) $PY results/ixi_age_cv/tables.py $KEPT > results/ixi_age_cv/tables.md ;;
  compare)  # compare VIT RESNET: the selected configurations' cross-validations in one report -> selected/
    $PY -m common report "$KEPT/ixi_age_cv-$2" "$KEPT/ixi_age_cv-$3" --out-root results/ixi_age_cv \
      --name selected --title "IXI age group, 32^3, 5-fold CV: the selected transformer ($2) and ResNet ($3)"
    # summary.json: every configuration of both models (the baselines and each tuned one), the two selected on val marked
    $PY -m common.evaluation.summary $KEPT/ixi_age_cv $KEPT/ixi_age_cv-* --out results/ixi_age_cv/summary.json \
      --selected "ixi_age_cv-$2" "ixi_age_cv-$3" ;;
  *) echo "usage: $0 baseline | tune CONFIG | tune-all | tables | compare VIT RESNET" >&2; exit 2 ;;
esac
