"""The command lines of `python -m common`, `torch_resnet` and `tf_transformer`, generated from the
typed configs (common.runs.config) so the two trainers accept exactly the same data and training
options, with defaults and choices read from the dataclasses. The parsed Namespace stops here:
everything past `configs_from_args` is typed.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from common.data.dataset import PreparedDataset, prepare_dataset
from common.errors import ConfigError, DataError
from common.runs.config import DataConfig, RuntimeConfig, TrainConfig
from common.runs.presets import canonical_preset
from common.runs.typed import add_arguments, from_namespace


class Parser(argparse.ArgumentParser):
    """argparse, but a bad option ends with one `error: ...` line and exit code 2, and no abbreviations
    (`--seed` must not silently mean `--seeds`)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    add_arguments(parser, DataConfig(), title="data")


def add_training_arguments(parser: argparse.ArgumentParser, *, presets, default_preset: str,
                           defaults: TrainConfig = TrainConfig()) -> None:
    parser.add_argument("--preset", default=default_preset, choices=sorted(presets), type=canonical_preset,
                        help=f"model preset (default: {default_preset}; the old names seed, seed_literal "
                             "still work)")
    parser.add_argument("--model", action="append", default=[], metavar="KEY=VALUE",
                        help="override one field of the preset's model config, e.g. --model layer_scale=0 "
                             "(repeatable; typed by the config's field; recorded in config.json)")
    add_arguments(parser, defaults, title="training (defines the run)")
    add_arguments(parser, RuntimeConfig(), title="runtime")


def add_predict_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run-dir", type=Path, required=True, help="a trained run directory")
    add_scan_arguments(parser)


def add_scan_arguments(parser: argparse.ArgumentParser) -> None:
    """The scans to score and where the probabilities go: every `predict` (a run's, or a bundle's)."""
    parser.add_argument("inputs", nargs="*", type=Path, help="NIfTI files")
    parser.add_argument("--manifest", type=Path, help="CSV with a 'path' column (relative to the CSV)")
    parser.add_argument("--out", type=Path, default=Path("predictions_new.csv"), help="output CSV")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workers", type=int, default=1, help="preprocessing processes")


def configs_from_args(args: argparse.Namespace) -> tuple[DataConfig, TrainConfig, RuntimeConfig]:
    return from_namespace(DataConfig, args), from_namespace(TrainConfig, args), from_namespace(RuntimeConfig, args)


def dataset_for(data: DataConfig, *, progress: bool = True) -> PreparedDataset:
    dataset = prepare_dataset(data.data, label_column=data.label_column, classes=list(data.classes or []) or None,
                           preprocess=data.preprocess(), split=data.split(), cache_root=data.cache_dir,
                           workers=data.workers, progress=progress, drop_invalid=data.drop_invalid,
                           class_names=data.class_names, bids_suffix=data.bids_suffix,
                           bids_filter=data.bids_filter)
    return replace(dataset, name=data.dataset_name, licence=data.dataset_licence)


def check_predict_arguments(args: argparse.Namespace) -> None:
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size {args.batch_size}: must be >= 1")
    if args.workers < 1:
        raise ConfigError(f"--workers {args.workers}: must be >= 1")
    if Path(args.out).is_dir():
        raise ConfigError(f"--out {args.out}: is a directory; name a CSV file")
    folder = Path(args.out).absolute().parent
    if not folder.is_dir():
        raise ConfigError(f"--out {args.out}: its folder {folder} does not exist")
    if not os.access(folder, os.W_OK):  # checked before any scan is read, not after all the work
        raise ConfigError(f"--out {args.out}: its folder {folder} is not writable")


EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C


def run_command(command: Callable[[], object]) -> int:
    """Run a CLI command; bad input (DataError / ConfigError) ends with one `error:` line, exit 2; Ctrl-C
    with one line and exit 130 (every file is written atomically, so a rerun resumes).
    A command that returns an int (a forwarded child's exit status) exits with it."""
    try:
        result = command()
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    return result if isinstance(result, int) and not isinstance(result, bool) else 0
