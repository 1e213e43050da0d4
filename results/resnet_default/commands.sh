#!/usr/bin/env bash
# Which ResNet preset is the default (issue 25 item 2): `small` against `small_recipe` (the recipe's block:
# post-activation, Kaiming init, no conv bias) on real data, IXI T1 age group at 32^3 (the demo's size),
# 3-fold cross-validation, seed 0, every other option at its default. Selection on val only (tables.md);
# test is in the report and summary for the record. Run from the repository root with ../shared/data beside it.
#   bash results/resnet_default/commands.sh run | tables | report
set -euo pipefail
PY=.venv/bin/python
DATA=(--data ../shared/data/ixi_t1_hh/labels.csv --label-column age_group --shape 32 32 32 --batch-size 8)
case ${1:-} in
  run)
    for preset in small small_recipe; do
      $PY -m common cv --models resnet --folds 3 --seeds 0 --name ixi32-$preset --cv-root runs/cvpresets --parallel 2 \
        "${DATA[@]}" --preset $preset
    done ;;
  tables) $PY results/ixi_age_cv/tables.py runs/cvpresets ixi32 > results/resnet_default/tables.md ;;
  report)
    $PY -m common report runs/cvpresets/ixi32-small runs/cvpresets/ixi32-small_recipe --out-root results \
      --name resnet_default --title "IXI age group, 32^3, 3-fold CV: ResNet small against small_recipe"
    $PY -m common.evaluation.summary runs/cvpresets/ixi32-small runs/cvpresets/ixi32-small_recipe \
      --selected ixi32-small --out results/resnet_default/summary.json ;;
  *) echo "usage: $0 run | tables | report" >&2; exit 2 ;;
esac
