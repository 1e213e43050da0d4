#!/usr/bin/env bash
# Bundles on real data (issue 27): the IXI 64^3 ResNet fold ensemble (results/ixi_age_cv64) exported, then
# bundle vs native probabilities on all 181 scans, and the speed table. From the repository root, with
# ../shared/data beside it and the cross-validation's runs under runs/cv64/.
#   bash results/export/commands.sh parity CONFIG   # e.g. resnet-strided-lr1e-3
#   bash results/export/commands.sh bench          # -> results/export/bench.md
set -euo pipefail
PY=.venv/bin/python
MANIFEST=../shared/data/ixi_t1_hh/labels.csv
case ${1:-} in
  parity)
    model=resnet package=torch_resnet
    [[ $2 == vit-* ]] && { model=transformer; package=tf_transformer; }
    folder=runs/cv64/ixi_age_cv64-$2/$model out=runs/bundles/ixi-$2
    rm -rf "$out"
    $PY -m common export "$folder" --out "$out"
    $PY -m common predict --bundle "$out" --manifest $MANIFEST --out "$out-bundle.csv" --workers 2
    $PY -m $package predict --run-dir "$folder" --manifest $MANIFEST --out "$out-native.csv" --workers 2
    $PY results/export/parity.py "$out-bundle.csv" "$out-native.csv" ;;
  bench) $PY -m common.export.bench --shapes 32 64 --batch 4 --threads 2 --out results/export/bench.md ;;
  *) echo "usage: $0 parity CONFIG | bench" >&2; exit 2 ;;
esac
