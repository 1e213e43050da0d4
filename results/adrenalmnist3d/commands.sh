#!/usr/bin/env bash
# AdrenalMNIST3D at 28^3, official MedMNIST split (train 1188 / val 98 / test 298), both models.
# Run from the repository root with ../shared/data beside it. Everything is selected on val only; each
# configuration's test predictions are written once by its run and read by the report at the end.
#
#   bash results/adrenalmnist3d/commands.sh tune-vit | tune-resnet | seeds-vit CONFIG | seeds-resnet CONFIG
#                                          | seeds-one CONFIG SEED | ablation | report
# A finished run (its metrics.json exists) is not run again.
set -euo pipefail -f  # -f: no globbing of the [..] in --model values
DATA=../shared/data/medmnist/adrenalmnist3d.npz
ROOT=runs/adrenal
COMMON=(--data "$DATA" --shape 28 28 28 --batch-size 32 --epochs 40 --quiet)
# The small-data recipe's training options (issue 11), the same for both models.
RECIPE=(--label-smoothing 0.1 --rotate-degrees 10 --scale-jitter 0.1 --weight-decay 0.05 --weight-decay-exclusions)

declare -A CONFIG=(
  # Equal tuning budget: two configurations per model, seed 0, compared on val.
  [vit-small]="--preset small --lr 5e-4"
  [vit-recipe]="--preset small_recipe --lr 5e-4 ${RECIPE[*]}"
  [resnet-small]="--preset small --lr 1e-3"
  [resnet-recipe]="--preset small --lr 1e-3 ${RECIPE[*]}"
  # The transformer's selected training recipe (label smoothing, weight decay 0.05 with exclusions, no
  # rotation/scaling) on the ResNet: the two then differ in architecture only.
  [resnet-recipe-no-rotate-scale]="--preset small --lr 1e-3 --label-smoothing 0.1 --weight-decay 0.05 --weight-decay-exclusions"
  # Ablation of the transformer recipe: the full recipe minus one element each (seed 0).
  [vit-recipe-no-layerscale]="--preset small_recipe --lr 5e-4 ${RECIPE[*]} --model layer_scale=0"
  [vit-recipe-no-droppath]="--preset small_recipe --lr 5e-4 ${RECIPE[*]} --model drop_path=0"
  [vit-recipe-patchify-stem]="--preset small_recipe --lr 5e-4 ${RECIPE[*]} --model stem_filters=[128,64] --model stem_kernels=[8,1] --model stem_strides=[8,1] --model stem_norm=false"
  [vit-recipe-no-wd-exclusions]="--preset small_recipe --lr 5e-4 --label-smoothing 0.1 --rotate-degrees 10 --scale-jitter 0.1 --weight-decay 0.05"
  [vit-recipe-no-rotate-scale]="--preset small_recipe --lr 5e-4 --label-smoothing 0.1 --weight-decay 0.05 --weight-decay-exclusions"
  [vit-recipe-no-label-smoothing]="--preset small_recipe --lr 5e-4 --rotate-degrees 10 --scale-jitter 0.1 --weight-decay 0.05 --weight-decay-exclusions"
)

train() {  # train NAME SEED
  local name=$1 seed=$2 package=tf_transformer
  [[ $name == resnet-* ]] && package=torch_resnet
  local dir="$ROOT/$name-s$seed"
  [[ -f $dir/metrics.json ]] && return 0
  # shellcheck disable=SC2086  # the configuration is a word list
  .venv/bin/python -m $package train "${COMMON[@]}" ${CONFIG[$name]} --seed "$seed" --run-dir "$dir"
}

case ${1:-} in
  tune-vit) train vit-small 0; train vit-recipe 0 ;;
  tune-resnet) train resnet-small 0; train resnet-recipe 0 ;;
  seeds-vit|seeds-resnet) for seed in 0 1 2; do train "$2" "$seed"; done ;;
  seeds-one) train "$2" "$3" ;;  # one seed of a configuration
  ablation) for name in vit-recipe vit-recipe-no-layerscale vit-recipe-no-droppath vit-recipe-patchify-stem \
                        vit-recipe-no-wd-exclusions vit-recipe-no-rotate-scale vit-recipe-no-label-smoothing; do
              train "$name" 0; done ;;
  report)  # report A B [C ...]: the paired report of A's and B's seed-0 runs; summary.json of every seed of all
    .venv/bin/python results/adrenalmnist3d/tables.py "$ROOT" > results/adrenalmnist3d/tables.md
    .venv/bin/python -m common report "$ROOT/$2-s0" "$ROOT/$3-s0" --out-root results --name adrenalmnist3d \
      --title "AdrenalMNIST3D 28^3 (official split), seed 0 of $2 and $3"
    runs=()
    for config in "${@:2}"; do
      for seed in 0 1 2; do [[ -f $ROOT/$config-s$seed/metrics.json ]] && runs+=("$ROOT/$config-s$seed"); done
    done
    .venv/bin/python -m common.evaluation.summary "${runs[@]}" --out results/adrenalmnist3d/summary.json ;;
  *) echo "usage: $0 tune-vit|tune-resnet|seeds-vit CONFIG|seeds-resnet CONFIG|seeds-one CONFIG SEED|ablation|report A B [C ...]" >&2
     exit 2 ;;
esac
