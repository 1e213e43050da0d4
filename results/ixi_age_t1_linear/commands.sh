#!/usr/bin/env bash
# IXI T1 brain MRI, 3-class age group, 5-fold cross-validation with --preprocess t1-linear (N4 + affine
# registration to MNI152), everything else exactly as results/ixi_age_cv (same folds: same samples, split
# seed 42; same model settings; 32^3; training seed 0). Run from the repository root with ../shared/data.
set -euo pipefail
# Each finished run's record is kept in records/ (cv --keep-into; restored from there on a new machine).
# THREADS=N gives each training N threads (cv --cpus-per-job) and runs CPUs/N of them at once;
# unset: one training at a time on every CPU.
JOB_ARGS=${THREADS:+--cpus-per-job $THREADS}
.venv/bin/python -m common cv --name ixi_age_t1_linear_cv --cv-root runs/cv --keep-into results/ixi_age_t1_linear/records --folds 5 --seeds 0 \
  --data ../shared/data/ixi_t1_hh/labels.csv --label-column age_group --shape 32 32 32 --batch-size 8 \
  --preprocess t1-linear --workers 2 $JOB_ARGS \
  --resnet-args "--preset small --epochs 25 --lr 1e-3" --transformer-args "--preset small --epochs 40 --lr 5e-4"
.venv/bin/python -m common report results/ixi_age_t1_linear/records/ixi_age_t1_linear_cv --out-root results --name ixi_age_t1_linear \
  --title "IXI T1 brain MRI, age group (3 classes), 32^3, t1-linear, 5-fold cross-validation"
.venv/bin/python -m common.evaluation.summary results/ixi_age_t1_linear/records/ixi_age_t1_linear_cv --out results/ixi_age_t1_linear/summary.json
