#!/usr/bin/env bash
# IXI T1 brain MRI (Hammersmith, 181 subjects), 3-class age group, 5-fold cross-validation (subject-grouped,
# stratified, split seed 42; val carved from each fold's training part), both models, training seed 0.
# 32^3 (not 64^3) so that the 10 runs fit a 2-core CPU in about 20 minutes. Run from the repository root
# with ../shared/data beside it. Same per-model settings as results/ixi_age (no tuning on test).
set -euo pipefail
.venv/bin/python -m common cv --name ixi_age_cv --cv-root runs/cv --folds 5 --seeds 0 \
  --data ../shared/data/ixi_t1_hh/labels.csv --label-column age_group --shape 32 32 32 --batch-size 8 \
  --resnet-args "--preset small --epochs 25 --lr 1e-3" --transformer-args "--preset small --epochs 40 --lr 5e-4"
.venv/bin/python -m common report runs/cv/ixi_age_cv --out-root results --name ixi_age_cv \
  --title "IXI T1 brain MRI, age group (3 classes), 32^3, 5-fold cross-validation"
.venv/bin/python -m common.evaluation.summary runs/cv/ixi_age_cv --out results/ixi_age_cv/summary.json
