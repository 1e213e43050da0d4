#!/usr/bin/env bash
# AdrenalMNIST3D at 28^3, official MedMNIST split (train 1188 / val 98 / test 298), both models.
# Run from the repository root with ../shared/data beside it. Selection on val only.
set -euo pipefail
DATA=../shared/data/medmnist/adrenalmnist3d.npz
COMMON=(--data "$DATA" --shape 28 28 28 --batch-size 32 --epochs 40 --quiet)
.venv/bin/python -m torch_resnet train "${COMMON[@]}" --preset small --lr 1e-3 --run-dir runs/adrenal-resnet
.venv/bin/python -m tf_transformer train "${COMMON[@]}" --preset small --lr 5e-4 --run-dir runs/adrenal-vit
.venv/bin/python -m common report runs/adrenal-vit runs/adrenal-resnet --out-root results --name adrenalmnist3d \
  --title "AdrenalMNIST3D 28^3 (official split)"
