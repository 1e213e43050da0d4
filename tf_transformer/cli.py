"""`python -m tf_transformer train | predict`. The Keras backend comes from KERAS_BACKEND or --backend
(tensorflow by default); keras is imported only after it is set."""

from __future__ import annotations

import argparse
import os

from common.runs.options import (
    add_data_arguments,
    add_predict_arguments,
    add_training_arguments,
    run_trainer_command,
)
from tf_transformer.config import PRESETS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tf_transformer", description=__doc__)
    parser.add_argument("--backend", choices=("tensorflow", "torch", "jax"),
                        help="Keras backend (default: $KERAS_BACKEND or tensorflow)")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train, select on val, predict val/test, write the run directory")
    add_data_arguments(train)
    add_training_arguments(train, default_preset="small", presets=PRESETS)
    train.set_defaults(epochs=40)  # attention learns slower than convolution from ~100 volumes (demo: 15 -> 0.79, 40 -> 0.83 test accuracy)
    g = train.add_argument_group("keras")
    g.add_argument("--optimizer", choices=("adamw", "adam", "sgd"), default="adamw")
    g.add_argument("--jit-compile", choices=("auto", "true", "false"), default="false",
                   help="XLA compilation of the train step (default: false, faster on CPU per BENCHMARKS.md; "
                        "auto lets Keras decide)")
    g.add_argument("--distribute", choices=("none", "mirrored", "multiworker", "data-parallel"), default="none",
                   help="tf.distribute MirroredStrategy / MultiWorkerMirroredStrategy (TensorFlow backend) or "
                        "keras.distribution.DataParallel (JAX backend)")
    g.add_argument("--logical-cpu-devices", type=int, default=0,
                   help="with --distribute mirrored on a CPU: split it into N logical devices")
    predict = sub.add_parser("predict", help="class probabilities for new NIfTI files from a trained run")
    add_predict_arguments(predict)
    return parser


def parse_jit(value: str):
    return {"auto": "auto", "true": True, "false": False}[value]


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.backend:
        os.environ["KERAS_BACKEND"] = args.backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.command == "train":
        args.jit_compile = parse_jit(args.jit_compile)
    return run_trainer_command(args, train=_load_train, predict_files=_load_predict)


def _load_train():
    from tf_transformer.train import train

    return train


def _load_predict():
    from tf_transformer.predict import predict_files

    return predict_files
