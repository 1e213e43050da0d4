"""Keras precision policies and one synthetic training step: what the timed probe and the benchmarks
time. Imports only keras, numpy and the model, so it runs on a GPU machine with a small keras install and
none of the project's other dependencies.
"""

from __future__ import annotations

import keras
import numpy as np

from common.runs.hardware import peak_rss_bytes
from tf_transformer.config import TransformerConfig
from tf_transformer.keras_state import precision_policy
from tf_transformer.model import build_transformer


def compile_for_training(model: keras.Model, *, optimizer, loss, jit_compile, metrics=None) -> None:
    """model.compile, with the optimizer's slots made now rather than by the first step: variables created
    inside the traced train step make TensorFlow trace it twice (about half of a transformer run's first
    epoch, and of each precision candidate's warm-up in the probe)."""
    model.compile(optimizer=optimizer, loss=loss, metrics=metrics, jit_compile=jit_compile)
    model.optimizer.build(model.trainable_variables)


def synthetic_training_step(config: TransformerConfig, precision: str, *, batch_size: int, jit_compile,
                            lazy_optimizer: bool = False):
    """A real training step (AdamW) of a freshly built model under a precision policy, on one fixed
    random batch; returns the loss. The probe times it; `tf_transformer.bench` measures speed with it.
    lazy_optimizer: Keras' own compile, the optimizer's slots made by the first step (what
    `tf_transformer.bench --first-step` compares against)."""
    keras.utils.set_random_seed(0)
    with precision_policy(precision):  # the model keeps its layers' policy after the scope
        model = build_transformer(config)
        compile_args = dict(optimizer=keras.optimizers.AdamW(1e-4), jit_compile=jit_compile,
                            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        if lazy_optimizer:
            model.compile(**compile_args)
        else:
            compile_for_training(model, **compile_args)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(batch_size, *config.input_shape, config.in_channels)).astype("float32")
    y = rng.integers(0, config.num_classes, batch_size)
    return lambda: float(model.train_on_batch(x, y))


def peak_memory_bytes() -> tuple[int, str]:
    """(bytes, what they are): the accelerator's peak allocation on the active backend, else peak RSS."""
    backend = keras.backend.backend()
    try:
        if backend == "torch":
            import torch

            if torch.cuda.is_available():
                return int(torch.cuda.max_memory_allocated()), "torch.cuda.max_memory_allocated"
        elif backend == "tensorflow":
            import tensorflow as tf

            if tf.config.list_physical_devices("GPU"):
                return int(tf.config.experimental.get_memory_info("GPU:0")["peak"]), "tf get_memory_info peak"
    except (RuntimeError, KeyError, ValueError):
        pass
    return peak_rss_bytes(), "process peak RSS"
