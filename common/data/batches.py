"""Framework-free batch assembly: seeded epoch orders, DDP sharding, class balancing.

Both trainers draw their epoch order here, so an epoch is a pure function of (seed, epoch):
that is what makes a resumed run repeat the uninterrupted one.
"""

from __future__ import annotations

import numpy as np
from sklearn.utils.class_weight import compute_class_weight

from common.data.augment import AugmentConfig, augment_batch


def epoch_rng(seed: int, epoch: int, stream: int = 0) -> np.random.Generator:
    """An independent generator per (seed, epoch, stream); stream 0 orders, 1 augments."""
    return np.random.default_rng([seed, epoch, stream])


def epoch_order(y: np.ndarray, *, seed: int, epoch: int, balanced: bool = False) -> np.ndarray:
    """Sample indices for one epoch: a permutation, or (balanced) a class-balanced draw with replacement."""
    rng = epoch_rng(seed, epoch)
    n = len(y)
    if not balanced:
        return rng.permutation(n)
    counts = np.bincount(y)
    weights = 1.0 / counts[y]
    return rng.choice(n, size=n, replace=True, p=weights / weights.sum())


def shard(order: np.ndarray, *, rank: int, world_size: int) -> np.ndarray:
    """This rank's share of `order`, padded by wrapping so every rank gets the same count."""
    if world_size == 1:
        return order
    per_rank = -(-len(order) // world_size)
    padded = np.resize(order, per_rank * world_size)
    return padded[rank::world_size]


def load_batch(x: np.ndarray, indices: np.ndarray, *, augment: AugmentConfig | None = None,
               rng: np.random.Generator | None = None) -> np.ndarray:
    """(B, D, H, W) float32 from the memory-mapped split, rows read in ascending order."""
    order = np.argsort(indices, kind="stable")
    batch = np.empty((len(indices), *x.shape[1:]), dtype=np.float32)
    batch[order] = x[np.asarray(indices)[order]]
    if augment is not None:
        batch = augment_batch(batch, augment, rng)
    return batch


def batch_slices(n: int, batch_size: int, *, drop_last: bool = False) -> list[slice]:
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    return [slice(i, min(i + batch_size, stop)) for i in range(0, stop, batch_size)]


def balanced_class_weights(y: np.ndarray, n_classes: int) -> np.ndarray:
    """n / (k * count_c), scikit-learn's 'balanced' weights; classes absent from y get weight 1."""
    weights = np.ones(n_classes, dtype=np.float64)
    present = np.unique(y)
    weights[present] = compute_class_weight("balanced", classes=present, y=y)
    return weights
