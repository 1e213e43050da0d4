"""Learned positional encoding: one trainable vector per token, added to the stem's tokens."""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="tf_transformer")
class PositionEmbedding(keras.layers.Layer):
    """(B, T, C) -> (B, T, C) + table[T, C]. T and C come from the input shape at build time."""

    def __init__(self, initializer="random_normal", **kwargs):
        super().__init__(**kwargs)
        self.initializer = keras.initializers.get(initializer)

    def build(self, input_shape):
        _, tokens, channels = input_shape
        self.table = self.add_weight(name="table", shape=(tokens, channels), initializer=self.initializer,
                                     trainable=True)

    def call(self, tokens):
        return tokens + keras.ops.cast(self.table, tokens.dtype)[None]

    def get_config(self):
        return {**super().get_config(), "initializer": keras.initializers.serialize(self.initializer)}
