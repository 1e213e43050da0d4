"""Framework-free batches: the order, augmentation and loss weights of every training step.

A training batch is a pure function of (seed, epoch, step): both trainers iterate the same
`EpochBatches`, so for one seed they see the same augmented volumes in the same order, and a resumed
run repeats the uninterrupted one. Under DDP a global batch is split across ranks (rank r takes
rows r, r + W, ...), so the global batches do not depend on the number of processes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.utils.class_weight import compute_class_weight

from common.data.augment import AugmentConfig, augment_volume
from common.errors import ConfigError

ORDER_STREAM, AUGMENT_STREAM = 0, 1


def epoch_order(y: np.ndarray, *, seed: int, epoch: int, balanced: bool = False) -> np.ndarray:
    """Sample indices for one epoch: a permutation, or (balanced) a class-balanced draw with replacement."""
    rng = np.random.default_rng([seed, epoch, ORDER_STREAM])
    n = len(y)
    if not balanced:
        return rng.permutation(n)
    counts = np.bincount(y)
    weights = 1.0 / counts[y]
    return rng.choice(n, size=n, replace=True, p=weights / weights.sum())


def batch_slices(n: int, batch_size: int, *, drop_last: bool = False) -> list[slice]:
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    return [slice(i, min(i + batch_size, stop)) for i in range(0, stop, batch_size)]


def balanced_class_weights(y: np.ndarray, n_classes: int) -> np.ndarray:
    """n / (k * count_c), scikit-learn's 'balanced' weights (mean 1 over the samples); absent classes 1."""
    weights = np.ones(n_classes, dtype=np.float64)
    present = np.unique(y)
    weights[present] = compute_class_weight("balanced", classes=present, y=y)
    return weights


def read_rows(x: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """(B, D, H, W) float32 from the memory-mapped split, rows read in ascending order."""
    order = np.argsort(indices, kind="stable")
    batch = np.empty((len(indices), *x.shape[1:]), dtype=np.float32)
    batch[order] = x[np.asarray(indices)[order]]
    return batch


@dataclass(frozen=True)
class Batch:
    step: int
    x: np.ndarray  # (B, D, H, W) float32
    y: np.ndarray  # (B,) int64 class indices
    weight: np.ndarray  # (B,) float32 loss weight per sample; the loss is mean(weight * cross-entropy)
    indices: np.ndarray  # (B,) rows of the split


class EpochBatches:
    """The training batches of one epoch (this rank's share of each global batch)."""

    def __init__(self, split, *, batch_size: int, seed: int, epoch: int, augment: AugmentConfig | None = None,
                 balanced: bool = False, class_weights: np.ndarray | None = None, rank: int = 0,
                 world_size: int = 1, drop_last: bool = False):
        if batch_size % world_size:
            raise ConfigError(f"--batch-size {batch_size}: must be a multiple of the {world_size} processes")
        self.split, self.seed, self.epoch, self.augment = split, seed, epoch, augment
        self.class_weights, self.rank, self.world_size = class_weights, rank, world_size
        order = epoch_order(split.y, seed=seed, epoch=epoch, balanced=balanced)
        if world_size > 1:  # every rank needs the same number of rows in every step
            order = np.resize(order, -(-len(order) // batch_size) * batch_size)
        self.order = order
        self.slices = batch_slices(len(order), batch_size, drop_last=drop_last)

    def __len__(self) -> int:
        return len(self.slices)

    def __getitem__(self, step: int) -> Batch:
        if not 0 <= step < len(self.slices):
            raise IndexError(step)
        global_rows = np.arange(len(self.order))[self.slices[step]]
        mine = global_rows[self.rank::self.world_size]
        indices = self.order[mine]
        x = read_rows(self.split.x, indices)
        if self.augment is not None:
            for b, position in enumerate(mine - global_rows[0]):  # a generator per sample of the global batch
                rng = np.random.default_rng([self.seed, self.epoch, AUGMENT_STREAM, step, int(position)])
                x[b] = augment_volume(x[b], self.augment, rng)
        y = self.split.y[indices]
        weight = (np.ones(len(y)) if self.class_weights is None else self.class_weights[y]).astype(np.float32)
        return Batch(step, x, y, weight, indices)

    def __iter__(self):
        return (self[i] for i in range(len(self)))
