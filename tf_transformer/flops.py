"""Forward FLOPs of one sample, counted from the config (a multiply-add is 2 FLOPs)."""

from __future__ import annotations

import math

from common.runs.presets import require_data
from tf_transformer.config import TransformerConfig


def flops_per_sample(config: TransformerConfig) -> int:
    flops = 0
    grid, channels = require_data(config), config.in_channels
    for filters, kernel, stride in zip(config.stem_filters, config.stem_kernels, config.stem_strides):
        grid = tuple(math.ceil(n / stride) for n in grid)
        flops += 2 * kernel**3 * channels * filters * math.prod(grid)
        channels = filters
    t, p, inner = config.num_tokens, config.projection_dim, config.num_heads * config.key_dim
    per_block = 2 * t * p * inner * 3  # Q, K, V projections
    per_block += 2 * t * t * inner * 2  # scores and the weighted sum
    per_block += 2 * t * inner * p  # output projection
    width = p
    for units in config.mlp_units:
        per_block += 2 * t * width * units
        width = units
    flops += config.num_blocks * per_block
    features = p * len(config.taps) * (t if config.pooling == "flatten" else 1)
    flops += 2 * features * config.head_units + 2 * config.head_units * config.num_classes
    return int(flops)
