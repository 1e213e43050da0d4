"""Seconds per volume of each saliency method for a model's hooks (the packages' bench commands call it)."""

from __future__ import annotations

import time

import numpy as np

from common.explain.occlusion import OcclusionConfig, forward_passes, occlusion_map
from common.explain.run import ModelHooks


def benchmark_occlusion(shape: int) -> OcclusionConfig:
    """The same relative occlusion at every size: cube 1/4 of the axis, step 1/8 (7^3 cubes + 1 reference)."""
    return OcclusionConfig(size=max(2, shape // 4), stride=max(1, shape // 8), batch_size=16)


def time_methods(hooks: ModelHooks, shape: int, *, volumes: int = 2, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    batch = rng.normal(size=(volumes, shape, shape, shape)).astype(np.float32)
    targets = np.zeros(volumes, dtype=np.int64)
    hooks.gradient_map(batch[:1], targets[:1])  # warm-up: first-call set-up is not per-volume cost
    start = time.perf_counter()
    hooks.gradient_map(batch, targets)
    gradcam = (time.perf_counter() - start) / volumes
    config = benchmark_occlusion(shape)
    start = time.perf_counter()
    occlusion_map(batch[0], hooks.predict, 0, config)
    occlusion = time.perf_counter() - start
    return {"model": hooks.model, "shape": shape, "gradcam_seconds_per_volume": gradcam,
            "gradient_layer": hooks.gradient_layer, "occlusion_seconds_per_volume": occlusion,
            "occlusion_size": config.size, "occlusion_stride": config.step,
            "occlusion_forward_passes": forward_passes((shape,) * 3, config), "occlusion_batch": config.batch_size}
