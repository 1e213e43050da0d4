#!/usr/bin/env bash
# Saliency maps on the synthetic demo, checked against the lesions the generator planted (issues 13, 25).
# Run from the repository root:  bash results/explain_demo/commands.sh [train | layers | explain | check | all | pooling]
# Both models at their default settings, seed 0, and the ResNet recipe preset (`small_recipe`); every test
# volume; both methods for the defaults (Grad-CAM only for the recipe); each method also on the same
# architecture with re-initialised weights (the randomisation sanity check). The map target is the lesion
# class for every input (--target lesion), so lesion volumes the model misclassifies still count.
set -euo pipefail
ROOT=runs/explain_demo
OUT=results/explain_demo
PY=.venv/bin/python

train() {
  [[ -f $ROOT/resnet/metrics.json ]] || $PY -m torch_resnet train --seed 0 --quiet --run-dir $ROOT/resnet
  [[ -f $ROOT/resnet-recipe/metrics.json ]] || \
    $PY -m torch_resnet train --seed 0 --preset small_recipe --quiet --run-dir $ROOT/resnet-recipe
  [[ -f $ROOT/vit/metrics.json ]] || $PY -m tf_transformer train --seed 0 --quiet --run-dir $ROOT/vit
}

# Which stage the ResNet's Grad-CAM reads: every stage on val, the best (a tie: the deepest) then on test.
layers() {
  $PY results/explain_demo/gradcam_layers.py $ROOT/resnet $ROOT/resnet-recipe > $OUT/gradcam_layers.md
}

explain() {
  local methods
  for run in $ROOT/resnet $ROOT/vit $ROOT/resnet-recipe; do
    methods="gradcam occlusion"
    [[ $run == *recipe ]] && methods=gradcam
    for method in $methods; do
      $PY -m common explain --run-dir $run --split test --method $method --target lesion
      $PY -m common explain --run-dir $run --split test --method $method --target lesion --random-weights
    done
  done
}

check() {
  $PY -m common check-maps $ROOT/resnet $ROOT/resnet-recipe $ROOT/vit --out $OUT
  $PY -m common report $ROOT/vit $ROOT/resnet --out-root results --name explain_demo \
    --title "Synthetic demo: what the models look at"
  # summary.json: "selected" marks each model's default settings (nothing here is selected on val)
  $PY -m common.evaluation.summary $ROOT/vit $ROOT/resnet $ROOT/resnet-recipe --out $OUT/summary.json \
    --selected vit resnet
  mkdir -p $OUT/figures
  rm -f $OUT/figures/*.png
  # Two lesion volumes of the test split, every model x method, for the README.
  for sample in demo-sub007_scan0 demo-sub051_scan1; do
    for model in resnet vit; do
      for method in gradcam occlusion; do
        cp $ROOT/$model/explain/$method/figures/$sample.png $OUT/figures/$model-$method-$sample.png
      done
    done
    cp $ROOT/resnet-recipe/explain/gradcam/figures/$sample.png $OUT/figures/resnet-recipe-gradcam-$sample.png
  done
  for model in resnet vit resnet-recipe; do  # speed: seconds per volume as each explain run measured it
    for method in gradcam occlusion; do
      [[ -f $ROOT/$model/explain/$method/explain.json ]] || continue
      $PY -c "import json,sys; s=json.load(open(sys.argv[1])); print(sys.argv[2], sys.argv[3], \
'%.3f s/volume, %d forward passes' % (s['seconds_per_volume'], s['forward_passes_per_volume']))" \
        $ROOT/$model/explain/$method/explain.json $model $method
    done
  done > $OUT/seconds.txt
}

# The ResNet with --model pooling=mean (global average pooling; issue 11), 40 epochs: its maps, checked alike.
pooling() {
  local run=$ROOT/resnet-mean-pooling
  [[ -f $run/metrics.json ]] || $PY -m torch_resnet train --seed 0 --model pooling=mean --quiet --run-dir $run
  for method in gradcam occlusion; do
    $PY -m common explain --run-dir $run --split test --method $method --target lesion
    $PY -m common explain --run-dir $run --split test --method $method --target lesion --random-weights
  done
  $PY -m common check-maps $run --out $OUT/mean_pooling
}

case ${1:-all} in
  train) train ;;
  layers) layers ;;
  pooling) pooling ;;
  explain) explain ;;
  check) check ;;
  all) train; layers; explain; check ;;
  *) echo "usage: $0 [train | layers | explain | check | all | pooling]" >&2; exit 2 ;;
esac
