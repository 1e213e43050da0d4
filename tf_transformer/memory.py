"""Training memory of the transformer on paper, analytically from its configuration (no framework:
the seed at 192^3, 8000 tokens, is planned on any machine).

Per sample, the elements autograd keeps for backward, as Keras 3 layers save them on the torch backend
(counted tensor by tensor with torch.autograd.graph.saved_tensors_hooks as batch 2 minus batch 1, which
leaves out per-model copies of weights; tests/test_memory_plan.py checks this formula against that count):

    stem        input + every stage's output, in both layouts C*D*H*W + 2 * sum(grid_i * filters_i)
    per block   attention scores, softmax, dropout           3 * heads * T^2     (flash attention: heads * T)
                Q, K^T, V, context                           4 * heads * T * key_dim
                LayerNorms, residual adds, last MLP layer    6 * T * P
                LayerNorm statistics                         4 * T
                hidden MLP layers (dense, GELU, dropout)     3 * T * sum(mlp_units[:-1])
    decoder     concatenated taps, BatchNorm                 2 * T * P * len(taps)

The T^2 term is the one that does not scale: at 192^3 (T = 8000) it is 768 M elements per block.
Keras uses flash attention only without attention dropout, so the flash rows of a plan assume 0.
"""

from __future__ import annotations

import math

from common.bench.capacity import MemoryPlan, plan_batches, training_state_bytes
from tf_transformer.config import TransformerConfig

FP32_BYTES = 4


def activation_elements(config: TransformerConfig, *, flash_attention: bool = False) -> int:
    """Elements saved for backward by one training sample (see the module docstring)."""
    tokens, width, heads = config.num_tokens, config.projection_dim, config.num_heads
    stem = config.in_channels * math.prod(config.input_shape)
    grid = config.input_shape
    for filters, stride in zip(config.stem_filters, config.stem_strides):
        grid = tuple(math.ceil(n / stride) for n in grid)
        stem += 2 * math.prod(grid) * filters  # channels-last conv output, also kept channels-first
    scores = heads * tokens if flash_attention else 3 * heads * tokens**2
    block = (scores + 4 * heads * tokens * config.key_dim + 6 * tokens * width + 4 * tokens
             + 3 * tokens * sum(config.mlp_units[:-1]))
    decoder = 2 * tokens * width * len(config.taps)
    return stem + config.num_blocks * block + decoder


def parameter_count(config: TransformerConfig) -> int:
    """Weights of the model `build_transformer(config)` builds (tests compare with Keras' count_params)."""
    count, channels = 0, config.in_channels
    for filters, kernel in zip(config.stem_filters, config.stem_kernels):
        # with stem_norm: no conv bias, BatchNorm's gamma, beta, moving mean and variance instead
        count += kernel**3 * channels * filters + (4 * filters if config.stem_norm else filters)
        channels = filters
    width, inner = config.projection_dim, config.num_heads * config.key_dim
    class_token = config.pooling == "token"
    count += (config.num_tokens + class_token) * width + class_token * width  # position embedding, class token
    block = 2 * 2 * width  # two LayerNorms
    block += 3 * (width * inner + inner) + inner * width + width  # Q, K, V and the output projection
    units_in = width
    for units in config.mlp_units:
        block += units_in * units + units
        units_in = units
    if config.layer_scale:
        block += 2 * width  # one gain vector per residual branch
    count += config.num_blocks * block
    tapped = width * len(config.taps)
    count += 4 * tapped  # BatchNorm: gamma, beta, moving mean and variance
    pooled = tapped * config.num_tokens if config.pooling == "flatten" else tapped
    count += pooled * config.head_units + config.head_units + config.head_units * config.num_classes + config.num_classes
    return count


def memory_plan(config: TransformerConfig) -> MemoryPlan:
    """fp32 training memory with standard attention; `checkpointed_bytes` holds the flash-attention
    figure (the transformer's memory lever, as checkpointing is the ResNet's)."""
    plan = MemoryPlan(model="tf_transformer", input_shape=config.input_shape, precision="fp32",
                      fixed_bytes=training_state_bytes(parameter_count(config)),
                      activation_bytes=FP32_BYTES * activation_elements(config),
                      checkpointed_bytes=FP32_BYTES * activation_elements(config, flash_attention=True),
                      method="analytic, from the configuration (tf_transformer/memory.py)")
    return plan_batches(plan)
