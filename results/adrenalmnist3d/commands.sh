#!/usr/bin/env bash
# AdrenalMNIST3D at 28^3 (RES=64: the 64^3 release, runs under runs/adrenal64), official MedMNIST split
# (train 1188 / val 98 / test 298), both models. Run from the repository root with ../shared/data beside it. Everything is selected on val only; each
# configuration's test predictions are written once by its run and read by the report at the end.
#
#   bash results/adrenalmnist3d/commands.sh tune-vit | tune-resnet | tune-resnet-stream K N | seeds-vit CONFIG | seeds-resnet CONFIG
#                                          | seeds-one CONFIG SEED | ablation | tables | decision (of RES)
# Each finished run's record (config, history, predictions, metrics; no weights) is kept in records/<RES>/ by
# `python -m common keep`, and the tables, reports and summary.json are made from there: the seeds of a set
# can be trained in different sessions on different machines. A kept run is not run again.
set -euo pipefail -f  # -f: no globbing of the [..] in --model values
RES=${RES:-28}
case $RES in
  28) DATA=../shared/data/medmnist/adrenalmnist3d.npz; ROOT=runs/adrenal ;;
  64) DATA=../shared/data/medmnist/adrenalmnist3d_64.npz; ROOT=runs/adrenal64 ;;
  *) echo "RES must be 28 or 64, not '$RES'" >&2; exit 2 ;;
esac
KEPT=results/adrenalmnist3d/records/$RES
COMMON=(--data "$DATA" --shape "$RES" "$RES" "$RES" --batch-size 32 --epochs 40 --quiet)
# THREADS=1 runs two configurations side by side on a 2-core machine (tune-resnet-stream); unset: the probe's.
[[ -n ${THREADS:-} ]] && COMMON+=(--threads "$THREADS")
# The small-data recipe's training options (issue 11), the same for both models.
RECIPE=(--label-smoothing 0.1 --rotate-degrees 10 --scale-jitter 0.1 --weight-decay 0.05 --weight-decay-exclusions)

declare -A CONFIG=(
  # The starting pair of each model (seed 0): the preset without and with the recipe's training options.
  [vit-small]="--preset small --lr 5e-4"
  [vit-recipe]="--preset small_recipe --lr 5e-4 ${RECIPE[*]}"
  [resnet-small]="--preset small --lr 1e-3"
  [resnet-recipe]="--preset small --lr 1e-3 ${RECIPE[*]}"
  # The ResNet's own tuning (issue 11, equal budget: eight seed-0 configurations per model, as the
  # transformer's): the recipe minus each training element, its head with global mean pooling, two
  # other learning rates (5e-4 is the transformer's).
  [resnet-recipe-no-wd-exclusions]="--preset small --lr 1e-3 --label-smoothing 0.1 --rotate-degrees 10 --scale-jitter 0.1 --weight-decay 0.05"
  [resnet-recipe-no-label-smoothing]="--preset small --lr 1e-3 --rotate-degrees 10 --scale-jitter 0.1 --weight-decay 0.05 --weight-decay-exclusions"
  [resnet-recipe-mean-pooling]="--preset small --lr 1e-3 ${RECIPE[*]} --model pooling=mean"
  [resnet-recipe-lr5e-4]="--preset small --lr 5e-4 ${RECIPE[*]}"
  [resnet-recipe-lr2e-3]="--preset small --lr 2e-3 ${RECIPE[*]}"
  # The transformer's selected training recipe (label smoothing, weight decay 0.05 with exclusions, no
  # rotation/scaling) on the ResNet: the two then differ in architecture only.
  [resnet-recipe-no-rotate-scale]="--preset small --lr 1e-3 --label-smoothing 0.1 --weight-decay 0.05 --weight-decay-exclusions"
  # Issue 25: the selected configuration of each model with its operating point chosen on val (Youden's J,
  # the threshold of the highest val balanced accuracy); the training is the selected one's, unchanged.
  [vit-recipe-no-rotate-scale-youden]="--preset small_recipe --lr 5e-4 --label-smoothing 0.1 --weight-decay 0.05 --weight-decay-exclusions --decision youden"
  [resnet-recipe-lr2e-3-youden]="--preset small --lr 2e-3 ${RECIPE[*]} --decision youden"
  # 64^3 (RES=64, issue 25): each model's strided recipe preset, the preset that affords 64^3 on a CPU
  # (README "Models"), with the training options selected at 28^3 and the operating point chosen on val.
  # Not tuned again at 64^3: no configuration search for either model there.
  [vit-strided-youden]="--preset small_recipe_strided --lr 5e-4 --label-smoothing 0.1 --weight-decay 0.05 --weight-decay-exclusions --decision youden"
  [resnet-strided-youden]="--preset small_recipe_strided --lr 2e-3 ${RECIPE[*]} --decision youden"
  # Ablation of the transformer recipe: the full recipe minus one element each (seed 0).
  [vit-recipe-no-layerscale]="--preset small_recipe --lr 5e-4 ${RECIPE[*]} --model layer_scale=0"
  [vit-recipe-no-droppath]="--preset small_recipe --lr 5e-4 ${RECIPE[*]} --model drop_path=0"
  [vit-recipe-patchify-stem]="--preset small_recipe --lr 5e-4 ${RECIPE[*]} --model stem_filters=[128,64] --model stem_kernels=[8,1] --model stem_strides=[8,1] --model stem_norm=false"
  [vit-recipe-no-wd-exclusions]="--preset small_recipe --lr 5e-4 --label-smoothing 0.1 --rotate-degrees 10 --scale-jitter 0.1 --weight-decay 0.05"
  [vit-recipe-no-rotate-scale]="--preset small_recipe --lr 5e-4 --label-smoothing 0.1 --weight-decay 0.05 --weight-decay-exclusions"
  [vit-recipe-no-label-smoothing]="--preset small_recipe --lr 5e-4 --rotate-degrees 10 --scale-jitter 0.1 --weight-decay 0.05 --weight-decay-exclusions"
)

# The ResNet's eight tuning configurations, in the order they were run.
RESNET_TUNING=(resnet-small resnet-recipe resnet-recipe-no-label-smoothing resnet-recipe-no-wd-exclusions
               resnet-recipe-mean-pooling resnet-recipe-lr5e-4 resnet-recipe-lr2e-3 resnet-recipe-no-rotate-scale)

train() {  # train NAME SEED
  local name=$1 seed=$2 package=tf_transformer
  [[ $name == resnet-* ]] && package=torch_resnet
  local dir="$ROOT/$name-s$seed"
  [[ -f $KEPT/$name-s$seed/metrics.json ]] && return 0
  if [[ ! -f $dir/metrics.json ]]; then
    # shellcheck disable=SC2086  # the configuration is a word list
    .venv/bin/python -m $package train "${COMMON[@]}" ${CONFIG[$name]} --seed "$seed" --run-dir "$dir"
  fi
  # the youden runs feed decision (issue 25): their records are kept; the older argmax runs stay in runs/
  if [[ $name == *-youden ]]; then .venv/bin/python -m common keep "$dir" --into "$KEPT"; fi
}

case ${1:-} in
  tune-vit) train vit-small 0; train vit-recipe 0 ;;
  tune-resnet) for name in "${RESNET_TUNING[@]}"; do train "$name" 0; done ;;
  tune-resnet-stream)  # tune-resnet-stream K N: the K-th of N interleaved shares of tune-resnet (parallel workers)
    for i in "${!RESNET_TUNING[@]}"; do (( i % $3 == $2 )) && train "${RESNET_TUNING[$i]}" 0; done; true ;;
  seeds-vit|seeds-resnet) for seed in 0 1 2; do train "$2" "$seed"; done ;;
  seeds-one) train "$2" "$3" ;;  # one seed of a configuration
  ablation) for name in vit-recipe vit-recipe-no-layerscale vit-recipe-no-droppath vit-recipe-patchify-stem \
                        vit-recipe-no-wd-exclusions vit-recipe-no-rotate-scale vit-recipe-no-label-smoothing; do
              train "$name" 0; done ;;
  tables)  # tables.md: each model's tuning runs (the val-selected one marked) and the seed table
    .venv/bin/python results/adrenalmnist3d/tables.py runs/adrenal > results/adrenalmnist3d/tables.md ;;
  decision)  # issue 25: the selected pair with its val-chosen operating point at $RES, every seed kept in
             # records/$RES: decision.md, report.md (the seed-0 pair) and summary.json, here for 28^3, in res64/ for 64^3
    out=results/adrenalmnist3d vit=vit-recipe-no-rotate-scale-youden resnet=resnet-recipe-lr2e-3-youden
    [[ $RES == 64 ]] && { out=$out/res64 vit=vit-strided-youden resnet=resnet-strided-youden; }
    .venv/bin/python results/adrenalmnist3d/decision.py "$KEPT" > "$out/decision.md.partial" \
      || { rm -f "$out/decision.md.partial"; exit 1; }
    mv "$out/decision.md.partial" "$out/decision.md"
    .venv/bin/python -m common report "$KEPT/$vit-s0" "$KEPT/$resnet-s0" --out-root "$(dirname $out)" --name "$(basename $out)" \
      --title "AdrenalMNIST3D ${RES}^3 (official split): the selected transformer and ResNet, operating point chosen on val, seed 0"
    runs=()
    for config in $vit $resnet; do
      for seed in 0 1 2; do [[ -f $KEPT/$config-s$seed/metrics.json ]] && runs+=("$KEPT/$config-s$seed"); done
    done
    .venv/bin/python -m common.evaluation.summary "${runs[@]}" --out "$out/summary.json" --selected Transformer ResNet ;;
  *) echo "usage: $0 tune-vit|tune-resnet|tune-resnet-stream K N|seeds-vit CONFIG|seeds-resnet CONFIG|seeds-one CONFIG SEED|ablation|tables|decision" >&2
     exit 2 ;;
esac
