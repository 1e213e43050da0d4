"""Layers of the small-data transformer recipe (all off in the `reference` presets), registered for safe loading.

    LayerScale  (CaiT, Touvron et al. 2021): a learned per-channel gain on each residual branch,
                initialised small (0.1 for <= 18 blocks), so deep stacks start close to identity.
    DropPath    (stochastic depth, Huang et al. 2016; DeiT's 0.1): drops a whole residual branch per
                sample in training and rescales the survivors; identity in inference.
    ClassToken  (ViT): one learned token prepended to the sequence; the head reads it (TakeToken).
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="tf_transformer")
class LayerScale(keras.layers.Layer):
    """(B, T, C) -> (B, T, C) * gamma[C], gamma initialised to `init_value`."""

    def __init__(self, init_value: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        self.init_value = float(init_value)

    def build(self, input_shape):
        self.gamma = self.add_weight(name="gamma", shape=(input_shape[-1],),
                                     initializer=keras.initializers.Constant(self.init_value), trainable=True)

    def call(self, x):
        return x * ops.cast(self.gamma, x.dtype)

    def get_config(self):
        return {**super().get_config(), "init_value": self.init_value}


@keras.saving.register_keras_serializable(package="tf_transformer")
class DropPath(keras.layers.Layer):
    """Zero a residual branch for a random `rate` of the samples of a batch; scale the rest by 1/(1-rate)."""

    def __init__(self, rate: float = 0.0, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.rate, self.seed = float(rate), seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, x, training=None):
        if not training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        shape = (ops.shape(x)[0],) + (1,) * (len(x.shape) - 1)  # one draw per sample
        mask = ops.floor(keep + keras.random.uniform(shape, seed=self.seed_generator, dtype=x.dtype))
        return x * mask / keep

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


@keras.saving.register_keras_serializable(package="tf_transformer")
class ClassToken(keras.layers.Layer):
    """(B, T, C) -> (B, T + 1, C): a learned token first."""

    def build(self, input_shape):
        self.token = self.add_weight(name="token", shape=(1, 1, input_shape[-1]), initializer="zeros", trainable=True)

    def call(self, x):
        token = ops.broadcast_to(ops.cast(self.token, x.dtype), (ops.shape(x)[0], 1, x.shape[-1]))
        return ops.concatenate([token, x], axis=1)

    def compute_output_shape(self, input_shape):
        tokens = None if input_shape[1] is None else input_shape[1] + 1
        return (input_shape[0], tokens, input_shape[2])


@keras.saving.register_keras_serializable(package="tf_transformer")
class TakeToken(keras.layers.Layer):
    """(B, T, C) -> (B, C): the token at `index` (the class token is 0)."""

    def __init__(self, index: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.index = int(index)

    def call(self, x):
        return x[:, self.index]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])

    def get_config(self):
        return {**super().get_config(), "index": self.index}
