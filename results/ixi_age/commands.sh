#!/usr/bin/env bash
# IXI T1 brain MRI (Hammersmith, 181 subjects), 3-class age group, 64^3, subject-grouped stratified
# 70/10/20 split with split seed 42, both models. Run from the repository root. Selection on val only.
set -euo pipefail
DATA=../shared/data/ixi_t1_hh/labels.csv
COMMON=(--data "$DATA" --label-column age_group --shape 64 64 64 --batch-size 8 --quiet)
.venv/bin/python -m torch_resnet train "${COMMON[@]}" --preset small --epochs 25 --lr 1e-3 --run-dir runs/ixi-age-resnet
.venv/bin/python -m tf_transformer train "${COMMON[@]}" --preset small --epochs 40 --lr 5e-4 --run-dir runs/ixi-age-vit
.venv/bin/python -m common report runs/ixi-age-vit runs/ixi-age-resnet --out-root results --name ixi_age \
  --title "IXI T1 brain MRI, age group (3 classes), 64^3"
# summary.json: "selected" marks each model's one configuration (chosen up front, no tuning on val)
.venv/bin/python -m common.evaluation.summary runs/ixi-age-vit runs/ixi-age-resnet --out results/ixi_age/summary.json \
  --selected ixi-age-vit ixi-age-resnet
