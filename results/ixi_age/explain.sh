#!/usr/bin/env bash
# One IXI example per model and method (issue 13): the first two test subjects of fold 0 of the 5-fold
# cross-validation in results/ixi_age_cv (32^3; run its commands.sh first), maps of each model's predicted
# class. Figures and saliency.csv are copied into results/ixi_age/explain/.
set -euo pipefail
OUT=results/ixi_age/explain
mkdir -p $OUT
for model in resnet transformer; do
  for method in gradcam occlusion; do
    .venv/bin/python -m common explain --run-dir runs/cv/ixi_age_cv/$model/fold0-seed0 --split test --limit 2 \
      --method $method --out runs/ixi-explain/$model-$method
    for png in runs/ixi-explain/$model-$method/figures/*.png; do
      cp "$png" "$OUT/$model-$method-$(basename "$png")"
    done
    cp runs/ixi-explain/$model-$method/saliency.csv "$OUT/$model-$method.csv"
  done
done
