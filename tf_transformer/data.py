"""Feeding the shared batches (common.data.batches.EpochBatches) to Keras as a PyDataset."""

from __future__ import annotations

import keras

from common.data.batches import EpochBatches


class KerasBatches(keras.utils.PyDataset):
    """(x (B, D, H, W, 1) float32, y (B,) int, sample weight (B,) float32) per step of one epoch.

    Keras reduces a weighted loss as mean(weight * loss) over the batch, as the ResNet does.
    """

    def __init__(self, batches: EpochBatches, **kwargs):
        super().__init__(**kwargs)
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, step: int):
        batch = self.batches[step]
        return batch.x[..., None], batch.y, batch.weight
