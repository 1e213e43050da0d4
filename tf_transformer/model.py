"""The transformer as one Keras functional graph, built from a TransformerConfig.

    stem:     Conv3D x len(stem_filters), 'same', ReLU      # (B, D, H, W, 1) -> (B, d, h, w, P)
    tokens:   Reshape -> PositionEmbedding                  # (B, T, P), T = d*h*w
    encoder:  num_blocks pre-norm blocks (LN -> MHA -> add; LN -> MLP -> add)
    decoder:  Concatenate(taps) -> BatchNorm -> pool -> Dense(head_units, relu) -> Dense(N)   # logits
"""

from __future__ import annotations

import warnings

import keras
from keras import layers

from common.runs.presets import require_data
from tf_transformer.config import TransformerConfig
from tf_transformer.position_embedding import PositionEmbedding
from tf_transformer.recipe_layers import ClassToken, DropPath, LayerScale, TakeToken


def drop_path_rate(config: TransformerConfig, index: int) -> float:
    """Stochastic depth of 1-based block `index`: linear from 0 (first) to config.drop_path (last), as DeiT."""
    return config.drop_path * (index - 1) / max(config.num_blocks - 1, 1)


def _residual_branch(branch, config: TransformerConfig, name: str, index: int):
    if config.layer_scale:
        branch = LayerScale(config.layer_scale, name=f"{name}_scale")(branch)
    rate = drop_path_rate(config, index)
    if rate:
        branch = DropPath(rate, seed=index, name=f"{name}_droppath")(branch)
    return branch


def transformer_block(x, config: TransformerConfig, index: int):
    """One pre-norm block; `index` is 1-based (block k's output is tap k)."""
    name = f"block{index}"
    attention_in = layers.LayerNormalization(epsilon=config.layer_norm_epsilon, name=f"{name}_ln1")(x)
    attention = layers.MultiHeadAttention(num_heads=config.num_heads, key_dim=config.key_dim,
                                          dropout=config.attention_dropout, name=f"{name}_mha")(attention_in, attention_in)
    x = layers.Add(name=f"{name}_add1")([x, _residual_branch(attention, config, f"{name}_attention", index)])
    mlp = layers.LayerNormalization(epsilon=config.layer_norm_epsilon, name=f"{name}_ln2")(x)
    for j, units in enumerate(config.mlp_units, start=1):
        mlp = layers.Dense(units, activation="gelu", name=f"{name}_mlp{j}")(mlp)
        mlp = layers.Dropout(config.mlp_dropout, name=f"{name}_drop{j}")(mlp)
    return layers.Add(name=f"{name}_add2")([x, _residual_branch(mlp, config, f"{name}_mlp", index)])


def build_transformer(config: TransformerConfig, *, name: str = "transformer3d") -> keras.Model:
    require_data(config)  # a preset alone has no shape: config.with_data(input_shape=..., num_classes=...)
    if config.num_tokens < 2:
        warnings.warn(f"token grid {config.token_grid} of input {config.input_shape} has {config.num_tokens} token: "
                      "attention has nothing to attend to", stacklevel=2)
    # ---- stem ------------------------------------------------------------------------------
    inputs = keras.Input(shape=(*config.input_shape, config.in_channels), name="volume")  # (B, D, H, W, C)
    x = inputs
    for i, (filters, kernel, stride) in enumerate(
            zip(config.stem_filters, config.stem_kernels, config.stem_strides), start=1):
        if config.stem_norm:  # conv -> BN -> ReLU (the conv's bias would be cancelled by BN)
            x = layers.Conv3D(filters, kernel, strides=stride, padding="same", use_bias=False, name=f"stem{i}")(x)
            x = layers.BatchNormalization(momentum=config.batchnorm_momentum, name=f"stem{i}_bn")(x)
            x = layers.ReLU(name=f"stem{i}_relu")(x)
        else:
            x = layers.Conv3D(filters, kernel, strides=stride, padding="same", activation="relu", name=f"stem{i}")(x)
    # ---- tokens ----------------------------------------------------------------------------
    x = layers.Reshape((config.num_tokens, config.projection_dim), name="tokens")(x)  # (B, T, P)
    if config.pooling == "token":
        x = ClassToken(name="class_token")(x)  # (B, T + 1, P)
    x = PositionEmbedding(name="position_embedding")(x)
    # ---- encoder ---------------------------------------------------------------------------
    taps = []
    for index in range(1, config.num_blocks + 1):
        x = transformer_block(x, config, index)
        if index in config.taps:
            taps.append(x)
    # ---- decoder ---------------------------------------------------------------------------
    x = layers.Concatenate(axis=-1, name="taps")(taps) if len(taps) > 1 else taps[0]  # (B, T, P * len(taps))
    x = layers.BatchNormalization(momentum=config.batchnorm_momentum, name="decoder_bn")(x)
    if config.pooling == "mean":
        x = layers.GlobalAveragePooling1D(name="pool")(x)
    elif config.pooling == "token":
        x = TakeToken(0, name="pool")(x)  # the class token's features
    else:
        x = layers.Flatten(name="pool")(x)
    x = layers.Dense(config.head_units, activation="relu", name="head")(x)
    logits = layers.Dense(config.num_classes, name="logits", dtype="float32")(x)  # float32 under mixed precision
    return keras.Model(inputs, logits, name=name)


def summary_lines(config: TransformerConfig) -> list[str]:
    lines = [f"input {config.input_shape} -> token grid {config.token_grid} = {config.num_tokens} tokens "
             f"x {config.projection_dim}", f"taps {config.taps}, pooling {config.pooling}"]
    if config.num_tokens < 2:
        lines.append(f"WARNING: {config.num_tokens} token: the transformer blocks see a single vector")
    return lines
