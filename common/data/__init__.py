"""Data: sources, the synthetic demo, preprocessing, the cache, splits, batches and augmentation."""
