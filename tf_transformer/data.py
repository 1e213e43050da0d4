"""Feeding the shared memory-mapped cache to Keras: a PyDataset per split."""

from __future__ import annotations

import keras
import numpy as np

from common.data.augment import AugmentConfig
from common.data.batches import batch_slices, epoch_order, load_batch
from common.data.dataset import SplitData


class VolumeBatches(keras.utils.PyDataset):
    """Batches (B, D, H, W, 1) float32, (B,) int labels. Training order and augmentation are pure
    functions of (seed, epoch, batch index), so threads and resumed runs draw the same batches."""

    def __init__(self, split: SplitData, batch_size: int, *, seed: int = 0, shuffle: bool = False,
                 balanced: bool = False, augment: AugmentConfig | None = None, with_labels: bool = True,
                 drop_last: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.split, self.batch_size, self.seed = split, batch_size, seed
        self.shuffle, self.balanced, self.augment, self.with_labels = shuffle, balanced, augment, with_labels
        self.drop_last = drop_last  # replicas of a distribution strategy need equal shares of every batch
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if self.shuffle:
            self.order = epoch_order(self.split.y, seed=self.seed, epoch=epoch, balanced=self.balanced)
        else:
            self.order = np.arange(len(self.split))
        self.slices = batch_slices(len(self.order), self.batch_size, drop_last=self.drop_last)

    def __len__(self) -> int:
        return len(self.slices)

    def __getitem__(self, index: int):
        indices = self.order[self.slices[index]]
        rng = np.random.default_rng([self.seed, self.epoch, 1, index]) if self.augment else None
        x = load_batch(self.split.x, indices, augment=self.augment, rng=rng)[..., None]  # (B, D, H, W, 1)
        return (x, self.split.y[indices]) if self.with_labels else (x,)


class EpochSetter(keras.callbacks.Callback):
    """Tells the training batches which epoch begins (also after BackupAndRestore skips epochs)."""

    def __init__(self, batches: VolumeBatches):
        super().__init__()
        self.batches = batches

    def on_epoch_begin(self, epoch, logs=None):
        self.batches.set_epoch(epoch)
