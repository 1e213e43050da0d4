"""Command-line options shared by `python -m common`, `torch_resnet` and `tf_transformer`.

One definition, so the two trainers accept exactly the same data and training options.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from common.data.augment import AugmentConfig
from common.data.dataset import PreparedDataset, prepare_dataset
from common.errors import DataError
from common.data.preprocess import NORMALIZATIONS, RESIZE_MODES, STORAGE_DTYPES, PreprocessConfig
from common.data.splits import SplitConfig

DEFAULT_SHAPE = (32, 32, 32)


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("data")
    g.add_argument("--data", default="demo",
                   help="manifest .csv, class-per-folder directory, MedMNIST .npz, or 'demo' (default: synthetic demo)")
    g.add_argument("--label-column", help="label column of a manifest CSV (e.g. sex, age_group)")
    g.add_argument("--classes", nargs="+", help="class names in order (default: sorted labels)")
    g.add_argument("--shape", nargs=3, type=int, metavar=("D", "H", "W"), default=list(DEFAULT_SHAPE),
                   help="target volume shape (default: %(default)s)")
    g.add_argument("--resize", choices=RESIZE_MODES, default="fit",
                   help="fit: keep proportions and pad; stretch: per-axis scaling (default: fit)")
    g.add_argument("--normalize", choices=NORMALIZATIONS,
                   help="intensity normalisation (default: zscore for NIfTI, minmax for MedMNIST)")
    g.add_argument("--percentiles", nargs=2, type=float, default=[0.5, 99.5], help="for --normalize percentile")
    g.add_argument("--storage-dtype", choices=STORAGE_DTYPES, default="float16", help="cache dtype (default: float16)")
    g.add_argument("--split-ratios", nargs=3, type=float, default=[0.7, 0.1, 0.2], metavar=("TRAIN", "VAL", "TEST"))
    g.add_argument("--split-seed", type=int, default=42, help="seed of the train/val/test split (default: 42)")
    g.add_argument("--folds", type=int, default=0, help="k-fold cross-validation (0: ratio split)")
    g.add_argument("--fold", type=int, default=0, help="which fold is the test fold, with --folds")
    g.add_argument("--cache-dir", type=Path, default=None, help="cache root (default: $VOLCLS_CACHE or ./.cache)")
    g.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                   help="preprocessing processes (default: %(default)s)")


def add_training_arguments(parser: argparse.ArgumentParser, *, default_preset: str, presets) -> None:
    g = parser.add_argument_group("training")
    g.add_argument("--preset", default=default_preset, choices=sorted(presets), help="model preset (default: %(default)s)")
    g.add_argument("--epochs", type=int, default=15)
    g.add_argument("--batch-size", type=int, default=8)
    g.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default: %(default)s)")
    g.add_argument("--weight-decay", type=float, default=1e-4)
    g.add_argument("--schedule", choices=("cosine", "constant", "step"), default="cosine",
                   help="cosine decay, constant, or x0.1 at 50%% and 75%% of the epochs (MedMNIST protocol)")
    g.add_argument("--warmup-epochs", type=int, default=1)
    g.add_argument("--seed", type=int, default=0, help="training seed (weights, order, augmentation)")
    g.add_argument("--run-dir", type=Path, help="run directory (default: <runs-root>/<model>-<timestamp>); "
                   "an existing one with resume state is resumed")
    g.add_argument("--runs-root", type=Path, default=Path("runs"), help="where new run directories go (default: runs)")
    g.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto",
                   help="mixed precision (auto: bf16 where the hardware supports it fast, else fp32)")
    g.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True,
                   help="flip/shift/intensity augmentation of training batches (default: on)")
    g.add_argument("--flip-axes", nargs="*", type=int, default=[0], help="axes flipped by augmentation (default: 0 = L-R)")
    g.add_argument("--class-weights", action="store_true", help="weight the loss by inverse class frequency")
    g.add_argument("--balanced-sampler", action="store_true", help="draw class-balanced batches instead")
    g.add_argument("--patience", type=int, default=0, help="early stopping patience in epochs (0: off)")
    g.add_argument("--select-metric", choices=("val_loss", "val_accuracy"), default="val_loss",
                   help="validation metric that selects the best checkpoint (never test)")
    g.add_argument("--threads", type=int, default=0, help="CPU threads (0: framework default)")
    g.add_argument("--quiet", action="store_true", help="no progress bars")


def add_predict_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run-dir", type=Path, required=True, help="a trained run directory")
    parser.add_argument("inputs", nargs="*", type=Path, help="NIfTI files")
    parser.add_argument("--manifest", type=Path, help="CSV with a 'path' column (relative to the CSV)")
    parser.add_argument("--out", type=Path, default=Path("predictions_new.csv"), help="output CSV")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workers", type=int, default=1, help="preprocessing processes")


def run_trainer_command(args, *, train: Callable, predict_files: Callable) -> int:
    """Dispatch `train` / `predict` of a trainer CLI; bad input ends with one `error:` line and exit 2.

    train(args); predict_files(run_dir, inputs, manifest, out, batch_size=, workers=) -> Path.
    Both are passed as zero-cost loaders so the framework is imported only when needed.
    """
    try:
        if args.command == "train":
            train()(args)
        else:
            out = predict_files()(args.run_dir, args.inputs, args.manifest, args.out, batch_size=args.batch_size,
                                  workers=args.workers)
            print(f"probabilities: {out}")
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def preprocess_config(args) -> PreprocessConfig | None:
    if args.normalize is None and str(args.data).endswith(".npz"):
        normalize = "minmax"
    else:
        normalize = args.normalize or "zscore"
    return PreprocessConfig(shape=tuple(args.shape), resize=args.resize, normalize=normalize,
                            percentiles=tuple(args.percentiles), dtype=args.storage_dtype)


def split_config(args) -> SplitConfig:
    return SplitConfig(ratios=tuple(args.split_ratios), seed=args.split_seed, folds=args.folds, fold=args.fold)


def augment_config(args) -> AugmentConfig | None:
    return AugmentConfig(flip_axes=tuple(args.flip_axes)) if args.augment else None


def dataset_from_args(args, *, progress: bool = True) -> PreparedDataset:
    return prepare_dataset(args.data, label_column=args.label_column, classes=args.classes,
                           preprocess=preprocess_config(args), split=split_config(args),
                           cache_root=args.cache_dir, workers=args.workers, progress=progress)


def training_config(args) -> dict:
    """The framework-independent part of a trainer's resolved config, for config.json."""
    keys = ("preset", "epochs", "batch_size", "lr", "weight_decay", "schedule", "warmup_epochs", "seed", "precision",
            "augment", "flip_axes", "class_weights", "balanced_sampler", "patience", "select_metric")
    return {k: getattr(args, k) for k in keys}
