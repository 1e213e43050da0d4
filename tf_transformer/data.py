"""Feeding the shared batches (common.data.batches.EpochBatches) to Keras as a PyDataset."""

from __future__ import annotations

import keras

from common.data.batches import EpochBatches


class KerasBatches(keras.utils.PyDataset):
    """(x (B, D, H, W, 1) float32, y (B, K) soft targets float32, sample weight (B,) float32) per step.

    Keras reduces a weighted loss as mean(weight * loss) over the batch, as the ResNet does. The shared
    batches' probability targets (one-hot, or blended by mixup) let CategoricalCrossentropy apply label
    smoothing exactly as torch's cross_entropy does.
    """

    def __init__(self, batches: EpochBatches, *, num_classes: int, **kwargs):
        super().__init__(**kwargs)
        self.batches, self.num_classes = batches, num_classes

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, step: int):
        batch = self.batches[step]
        if batch.target.shape[1] != self.num_classes:
            raise ValueError(f"batch targets have {batch.target.shape[1]} classes, the model {self.num_classes}")
        return batch.x[..., None], batch.target, batch.weight
