"""Framework-free batches: the order, augmentation and loss weights of every training step.

A training batch is a pure function of (seed, epoch, step): both trainers iterate the same
`EpochBatches`, so for one seed they see the same augmented volumes in the same order, and a resumed
run repeats the uninterrupted one. Under DDP a global batch is split across ranks (rank r takes
rows r, r + W, ...), so the global batches do not depend on the number of processes.

Every batch carries soft targets (B, K) and a loss weight per sample; both trainers minimise
mean(weight * cross-entropy(target, prediction)). Without mixup the targets are one-hot. With mixup
(Zhang et al., "mixup: Beyond Empirical Risk Minimization", ICLR 2018) each volume is blended with a
partner from the same global batch, x = lam * x_a + (1 - lam) * x_b, lam ~ Beta(alpha, alpha) per sample
and folded to lam >= 1/2 so that a sample's own label stays the dominant one (the pairs (a, b, lam) and
(b, a, 1 - lam) are the same mixture). With class weights w the weight becomes lam * w_a + (1 - lam) * w_b
and the target (lam * w_a * e_a + (1 - lam) * w_b * e_b) / weight, so weight * CE(target) =
lam * w_a * CE_a + (1 - lam) * w_b * CE_b: the class-weighted loss of each component, on both sides.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.utils.class_weight import compute_class_weight

from common.data.augment import AugmentConfig, augment_volume
from common.errors import ConfigError

ORDER_STREAM, AUGMENT_STREAM, MIXUP_STREAM = 0, 1, 2


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
    y: np.ndarray  # (B,) int64 class indices: each sample's own (with mixup: its dominant) label
    weight: np.ndarray  # (B,) float32 loss weight per sample; the loss is mean(weight * cross-entropy)
    indices: np.ndarray  # (B,) rows of the split
    target: np.ndarray  # (B, K) float32 soft targets, rows sum to 1: one-hot unless mixup blended them


class EpochBatches:
    """The training batches of one epoch (this rank's share of each global batch)."""

    def __init__(self, split, *, batch_size: int, seed: int, epoch: int, augment: AugmentConfig | None = None,
                 balanced: bool = False, class_weights: np.ndarray | None = None, rank: int = 0,
                 world_size: int = 1, drop_last: bool = False, num_classes: int | None = None, mixup: float = 0.0):
        if batch_size % world_size:
            raise ConfigError(f"--batch-size {batch_size}: must be a multiple of the {world_size} processes")
        if mixup < 0:
            raise ConfigError(f"--mixup {mixup}: must be >= 0")
        self.split, self.seed, self.epoch, self.augment = split, seed, epoch, augment
        self.class_weights, self.rank, self.world_size, self.mixup = class_weights, rank, world_size, mixup
        known = len(class_weights) if class_weights is not None else int(np.max(split.y, initial=0)) + 1
        self.num_classes = num_classes if num_classes is not None else known
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
        positions = global_rows[self.rank::self.world_size] - global_rows[0]  # this rank's rows of the global batch
        indices = self.order[global_rows[positions]]
        x = self._volumes(global_rows, positions, step)
        y = self.split.y[indices]
        weight = self._class_weight(y)
        one_hot = np.eye(self.num_classes, dtype=np.float32)
        target = one_hot[y]
        if self.mixup:  # everything stays float32: lam, the volumes, the weights and the targets are
            rng = np.random.default_rng([self.seed, self.epoch, MIXUP_STREAM, step])
            partner = rng.permutation(len(global_rows))[positions]  # positions in the global batch
            lam = rng.beta(self.mixup, self.mixup, size=len(global_rows))[positions]
            lam = np.maximum(lam, 1 - lam).astype(np.float32)
            x_b = self._volumes(global_rows, partner, step)
            y_b = self.split.y[self.order[global_rows[partner]]]
            x = lam[:, None, None, None] * x + (1 - lam[:, None, None, None]) * x_b
            w_a, w_b = lam * weight, (1 - lam) * self._class_weight(y_b)
            weight = w_a + w_b
            target = (w_a[:, None] * target + w_b[:, None] * one_hot[y_b]) / weight[:, None]
        return Batch(step, x, y, weight, indices, target)

    def _volumes(self, global_rows: np.ndarray, positions: np.ndarray, step: int) -> np.ndarray:
        """(len(positions), D, H, W): the (augmented) volumes at these positions of the global batch."""
        x = read_rows(self.split.x, self.order[global_rows[positions]])
        if self.augment is not None:
            for b, position in enumerate(positions):  # a generator per sample of the global batch
                rng = np.random.default_rng([self.seed, self.epoch, AUGMENT_STREAM, step, int(position)])
                x[b] = augment_volume(x[b], self.augment, rng)
        return x

    def _class_weight(self, y: np.ndarray) -> np.ndarray:
        return (np.ones(len(y)) if self.class_weights is None else self.class_weights[y]).astype(np.float32)

    def __iter__(self):
        return (self[i] for i in range(len(self)))
