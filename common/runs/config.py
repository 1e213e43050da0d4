"""The typed configuration of a training run, shared by both trainers.

`DataConfig` (data, preprocessing, split), `TrainConfig` (what the model is trained with: it defines
the run with the data and the model config) and `RuntimeConfig` (where and how this process runs:
it never changes the result). The CLI options are generated from these fields (common.runs.typed).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from common.data.augment import AugmentConfig
from common.data.preprocess import (
    DEFAULT_SHAPE,
    NORMALIZATIONS,
    PIPELINES,
    RESIZE_MODES,
    STORAGE_DTYPES,
    PreprocessConfig,
)
from common.data.splits import SplitConfig
from common.errors import ConfigError
from common.runs.decision import DECISIONS
from common.runs.schedules import SCHEDULES
from common.runs.typed import option, validate_choices

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
OPTIMIZERS = ("adamw", "adam", "sgd")
SELECT_METRICS = ("val_loss", "val_accuracy")


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    data: str = field(default="demo", metadata=option(
        "manifest .csv, BIDS dataset folder, class-per-folder directory, MedMNIST .npz, or 'demo' (synthetic)"))
    label_column: str | None = field(default=None, metadata=option(
        "label column of a manifest CSV or of a BIDS participants.tsv (e.g. sex)"))
    bids_suffix: str = field(default="T1w", metadata=option("BIDS: the image suffix read from anat/"))
    bids_filter: tuple[str, ...] = field(default=(), metadata=option(
        "BIDS: keep images whose entity KEY is VALUE (e.g. ses=M00 run=1)", metavar="KEY=VALUE"))
    classes: tuple[str, ...] | None = field(default=None, metadata=option(
        "class names in order (default: sorted labels)"))
    class_names: tuple[str, ...] | None = field(default=None, metadata=option(
        "names of the integer labels of an .npz, in label order (default: the integers)"))
    dataset_name: str | None = field(default=None, metadata=option(
        "the dataset's name for the report (default: from --data)"))
    dataset_licence: str | None = field(default=None, metadata=option(
        "the dataset's licence / credit line for the report (known: IXI, MedMNIST v2 files)"))
    drop_invalid: bool = field(default=False, metadata=option(
        "leave out invalid volumes (constant, NaN, unreadable...) with a warning; listed in the run record"))
    shape: tuple[int, int, int] = field(default=DEFAULT_SHAPE, metadata=option(
        "target volume shape", metavar=("D", "H", "W")))
    resize: str = field(default="fit", metadata=option(
        "fit: keep proportions and pad; stretch: per-axis scaling", choices=RESIZE_MODES))
    normalize: str = field(default="auto", metadata=option(
        "intensity normalisation; auto: minmax for MedMNIST .npz, zscore for NIfTI", choices=("auto", *NORMALIZATIONS)))
    percentiles: tuple[float, float] = field(default=(0.5, 99.5), metadata=option(
        "clipping percentiles of --normalize percentile", metavar=("LOW", "HIGH")))
    storage_dtype: str = field(default="float16", metadata=option("cache dtype", choices=STORAGE_DTYPES))
    pipeline: str = field(default="basic", metadata=option(
        "basic: reorient + resample; t1-linear: N4 bias-field correction and affine registration to MNI152 first",
        choices=PIPELINES, flag="--preprocess"))
    brain_mask: bool = field(default=False, metadata=option(
        "t1-linear: zero everything outside the template's brain mask after registration"))
    split_ratios: tuple[float, float, float] = field(default=(0.7, 0.1, 0.2), metadata=option(
        "train/val/test fractions, by subject", metavar=("TRAIN", "VAL", "TEST")))
    split_seed: int = field(default=42, metadata=option("seed of the train/val/test split"))
    folds: int = field(default=0, metadata=option("k-fold cross-validation (0: ratio split)"))
    fold: int = field(default=0, metadata=option("which fold is the test fold, with --folds"))
    cache_dir: Path | None = field(default=None, metadata=option("cache root (default: $VOLCLS_CACHE or ./.cache)"))
    workers: int = field(default=min(4, os.cpu_count() or 1), metadata=option("preprocessing processes"))

    def __post_init__(self):
        validate_choices(self)
        if self.workers < 1:
            raise ConfigError(f"--workers {self.workers}: must be >= 1")
        from common.data.bids import parse_filters

        parse_filters(self.bids_filter)
        self.preprocess()  # every check of the preprocessing and split values, before any work
        self.split()

    def preprocess(self) -> PreprocessConfig:
        return PreprocessConfig(shape=self.shape, resize=self.resize, normalize=self.normalize,
                                percentiles=self.percentiles, dtype=self.storage_dtype, pipeline=self.pipeline,
                                brain_mask=self.brain_mask)

    def split(self) -> SplitConfig:
        return SplitConfig(ratios=self.split_ratios, seed=self.split_seed, folds=self.folds, fold=self.fold)


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Everything the weights depend on besides the data and the model config (run identity)."""

    # One budget for both models, so that they differ in architecture only (issue 11). 40: the ResNet's
    # demo learning "clicked" after 3 to 29 epochs in the runs of issue 11, and a 15-epoch cosine had
    # sometimes decayed the rate before it did (1 run in 6); attention learns slower than convolution
    # from ~100 volumes.
    epochs: int = field(default=40, metadata=option("training epochs (a finished run may be resumed with more)"))
    batch_size: int = field(default=8, metadata=option("global batch size (split across DDP ranks / replicas)"))
    optimizer: str = field(default="adamw", metadata=option(
        "adamw (decoupled weight decay), adam, or sgd (Nesterov momentum 0.9)", choices=OPTIMIZERS))
    lr: float = field(default=1e-3, metadata=option("peak learning rate"))
    weight_decay: float = field(default=1e-4, metadata=option("AdamW / SGD weight decay"))
    schedule: str = field(default="cosine", metadata=option(
        "per-epoch LR: cosine decay, constant, or step (x0.1 at 50% and 75% of the epochs)", choices=SCHEDULES))
    warmup_epochs: int = field(default=1, metadata=option("linear warm-up epochs"))
    seed: int = field(default=0, metadata=option("training seed: weights, batch order, augmentation"))
    precision: str = field(default="auto", metadata=option(
        "auto: decided once per run where it runs and recorded in config.json (see README)", choices=PRECISIONS))
    augment: bool = field(default=True, metadata=option("flip/shift/intensity augmentation of training batches"))
    flip_axes: tuple[int, ...] = field(default=(0,), metadata=option("axes flipped by augmentation (0 = L-R)"))
    rotate_degrees: float = field(default=0.0, metadata=option(
        "augmentation: random rotation about each axis, up to this many degrees (0: off)"))
    scale_jitter: float = field(default=0.0, metadata=option(
        "augmentation: random isotropic zoom in [1 - s, 1 + s] (0: off)"))
    class_weights: bool = field(default=False, metadata=option(
        "weight each sample's loss by n / (k * count of its class) (scikit-learn 'balanced')"))
    balanced_sampler: bool = field(default=False, metadata=option("draw class-balanced batches with replacement"))
    label_smoothing: float = field(default=0.0, metadata=option(
        "label smoothing epsilon: targets (1 - e) one-hot + e / K (Szegedy et al. 2016); 0: off"))
    mixup: float = field(default=0.0, metadata=option(
        "mixup alpha: blend each training volume and its target with a partner from the batch, "
        "lam ~ Beta(alpha, alpha) (Zhang et al. 2018; e.g. 0.2); 0: off"))
    ema_decay: float = field(default=0.0, metadata=option(
        "exponential moving average of the weights, used for validation, selection and the saved model "
        "(e.g. 0.999; 0: off)"))
    weight_decay_exclusions: bool = field(default=False, metadata=option(
        "no weight decay on biases, norms and other 1-D parameters, position embedding and class token "
        "(DeiT / timm)"))
    grad_clip: float = field(default=0.0, metadata=option(
        "clip the global gradient norm to this value before each step; 0: off"))
    patience: int = field(default=0, metadata=option("early stopping patience in epochs (0: off)"))
    select_metric: str = field(default="val_loss", metadata=option(
        "validation metric that selects the saved model (never test)", choices=SELECT_METRICS))
    decision: str = field(default="argmax", metadata=option(
        "how class probabilities become a prediction: argmax, or youden (binary tasks): predict the second "
        "class when its probability reaches the threshold of the highest val balanced accuracy, chosen on "
        "val at the end of training and kept in the run", choices=DECISIONS))

    def __post_init__(self):
        validate_choices(self)
        for f in fields(self):  # NaN and infinity pass every comparison below: refuse them first
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{_flag(f.name)} {value}: must be a finite number")
        if self.seed < 0:
            raise ConfigError(f"--seed {self.seed}: must be >= 0")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{_flag(name)} {getattr(self, name)}: must be >= 1")
        if not self.lr > 0:
            raise ConfigError(f"--lr {self.lr}: must be > 0")
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"--ema-decay {self.ema_decay}: must be in [0, 1)")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"--label-smoothing {self.label_smoothing}: must be in [0, 1)")
        for name in ("weight_decay", "warmup_epochs", "patience", "grad_clip", "mixup"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{_flag(name)} {getattr(self, name)}: must be >= 0")
        self.augmentation()

    def augmentation(self) -> AugmentConfig | None:
        if not self.augment:
            return None
        return AugmentConfig(flip_axes=self.flip_axes, max_rotation_degrees=self.rotate_degrees,
                             max_scale=self.scale_jitter)

    def learning_rate(self, epoch: int) -> float:
        from common.runs.schedules import learning_rate

        return learning_rate(epoch, base_lr=self.lr, epochs=self.epochs, schedule=self.schedule,
                             warmup_epochs=self.warmup_epochs)


# Fields of TrainConfig that a resumed run may change (raise): everything else must be equal.
RESUMABLE_TRAINING_FIELDS = ("epochs",)


@dataclass(frozen=True, kw_only=True)
class RuntimeConfig:
    """Where and how this process runs; none of it changes the trained weights' meaning."""

    run_dir: Path | None = field(default=None, metadata=option(
        "run directory (default: <runs-root>/<model>-<timestamp>); an existing run of this model is resumed"))
    runs_root: Path = field(default=Path("runs"), metadata=option("where new run directories go"))
    threads: int = field(default=0, metadata=option("CPU threads (0: the framework's default)"))
    quiet: bool = field(default=False, metadata=option("no progress bars"))
    check_only: bool = field(default=False, metadata=option(
        "check every option, the model config and the data (building its cache and split), then exit without "
        "training (cv runs this once per model before it writes its plan)"))

    def __post_init__(self):
        if self.threads < 0:
            raise ConfigError(f"--threads {self.threads}: must be >= 0")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")
