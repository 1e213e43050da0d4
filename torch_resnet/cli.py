"""`python -m torch_resnet train | predict` (multi-GPU: `torchrun --nproc_per_node N -m torch_resnet train ...`)."""

from __future__ import annotations

import argparse

from common.runs.options import (
    add_data_arguments,
    add_predict_arguments,
    add_training_arguments,
    run_trainer_command,
)
from torch_resnet.config import PRESETS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m torch_resnet", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train, select on val, predict val/test, write the run directory")
    add_data_arguments(train)
    add_training_arguments(train, default_preset="small", presets=PRESETS)
    g = train.add_argument_group("pytorch")
    g.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="channels_last_3d memory format (default: on for >= 16 filters, where it is faster)")
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g.add_argument("--activation-checkpointing", action="store_true",
                   help="recompute each stage's activations in backward (less memory, more compute)")
    predict = sub.add_parser("predict", help="class probabilities for new NIfTI files from a trained run")
    add_predict_arguments(predict)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return run_trainer_command(args, train=_load_train, predict_files=_load_predict)


def _load_train():
    from torch_resnet.train import train

    return train


def _load_predict():
    from torch_resnet.predict import predict_files

    return predict_files
