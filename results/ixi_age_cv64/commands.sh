#!/usr/bin/env bash
# IXI T1 brain MRI (Hammersmith, 181 subjects), 3-class age group, 5-fold cross-validation at 64^3
# (3.75 mm voxels; the 32^3 results in results/ixi_age_cv stay the comparison). The same folds as the
# 32^3 study (subject-grouped, stratified, split seed 42; val carved from each fold's training part), seed 0.
# Both models run their strided recipe presets (small_recipe_strided): a stem with one more stride-2 stage,
# so a 64^3 sample costs about what the 32^3 presets cost (README "Models").
# Run from the repository root with ../shared/data beside it:
#   bash results/ixi_age_cv64/commands.sh tune CONFIG | tables | interim VIT RESNET | compare VIT RESNET
# A cross-validation's finished runs are not run again; an interrupted one resumes (rerun the same line). Each
# finished run's record is kept in results/ixi_age_cv64/records/ (cv --keep-into; restored from there on a new
# machine); tables, reports and summary.json are made from the kept records.
set -euo pipefail
PY=.venv/bin/python
KEPT=results/ixi_age_cv64/records
DATA=(--data ../shared/data/ixi_t1_hh/labels.csv --label-column age_group --shape 64 64 64 --batch-size 8)
# THREADS=N gives each training N threads (cv --cpus-per-job) and runs CPUs/N of them at once;
# unset: one training at a time on every CPU.
JOB_ARGS=${THREADS:+--cpus-per-job $THREADS}
# The small-data recipe's training options (issue 11), as at 32^3.
RECIPE="--label-smoothing 0.1 --weight-decay 0.05 --weight-decay-exclusions"

# Equal budget: two configurations per model, selected on the mean val AUC by tables.py (val only). The
# first of each is the 32^3 study's selected configuration on the strided preset. The second: the
# transformer's other 32^3 learning rate; for the ResNet, whose first folds underfit at 60 epochs (train
# accuracy ~0.66 at epoch 37), twice the epochs.
declare -A CONFIG=(
  [vit-strided-lr1e-3]="--preset small_recipe_strided --epochs 150 --lr 1e-3 $RECIPE"
  [vit-strided-lr5e-4]="--preset small_recipe_strided --epochs 150 --lr 5e-4 $RECIPE"
  [resnet-strided-lr1e-3]="--preset small_recipe_strided --epochs 60 --lr 1e-3 $RECIPE"
  [resnet-strided-long]="--preset small_recipe_strided --epochs 120 --lr 1e-3 $RECIPE"
)

tune() {  # tune CONFIG: the cross-validation of one model's configuration -> runs/cv64/ixi_age_cv64-CONFIG
  local name=$1 model=transformer
  [[ $name == resnet-* ]] && model=resnet
  [[ -n ${CONFIG[$name]:-} ]] || { echo "unknown configuration $name" >&2; exit 2; }
  $PY -m common cv --name "ixi_age_cv64-$name" --cv-root runs/cv64 --keep-into $KEPT --folds 5 --seeds 0 --models $model $JOB_ARGS "${DATA[@]}" \
    --$model-args "${CONFIG[$name]}"
}

case ${1:-} in
  tune) tune "$2" ;;
  tables) $PY results/ixi_age_cv/tables.py $KEPT ixi_age_cv64 > results/ixi_age_cv64/tables.md ;;
  compare)  # compare VIT RESNET: the selected configurations in one report -> selected/, and summary.json
    $PY -m common report "$KEPT/ixi_age_cv64-$2" "$KEPT/ixi_age_cv64-$3" --out-root results/ixi_age_cv64 \
      --name selected --title "IXI age group, 64^3, 5-fold CV: the selected transformer ($2) and ResNet ($3)"
    $PY -m common.evaluation.summary $KEPT/ixi_age_cv64-* --out results/ixi_age_cv64/summary.json \
      --selected "ixi_age_cv64-$2" "ixi_age_cv64-$3" ;;
  interim)  # interim VIT RESNET: two finished configurations in one report -> first/ (before the selection)
    $PY -m common report "$KEPT/ixi_age_cv64-$2" "$KEPT/ixi_age_cv64-$3" --out-root results/ixi_age_cv64 \
      --name first --title "IXI age group, 64^3, 5-fold CV: the first configurations ($2, $3)"
    $PY -m common.evaluation.summary "$KEPT/ixi_age_cv64-$2" "$KEPT/ixi_age_cv64-$3" \
      --out results/ixi_age_cv64/first/summary.json ;;
  *) echo "usage: $0 tune CONFIG | tables | interim VIT RESNET | compare VIT RESNET" >&2; exit 2 ;;
esac
