"""Saliency for the transformer: gradient x activation on the token grid, and occlusion's predict function.

The map is read at the stem's output, (B, d, h, w, P) just before it is reshaped into tokens: the last
tensor that still has a 3-D grid, one cell per token (4^3 at 32^3 input for the `small` preset). Attention
maps were not used: after the first block a token mixes every position, and the seed pools all tokens, so
attention weights say where information moves, not what the class depends on. Per cell:
ReLU(sum over channels of d(target logit)/d(activation) x activation) (gradient x activation, the
element-wise form of Grad-CAM), upsampled trilinearly to the model grid.

Gradients need the backend's own autodiff: TensorFlow (the default) and torch are supported.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from common.errors import ConfigError
from common.explain.maps import positive_part, upsample
from common.explain.run import ModelHooks
from tf_transformer.predict import load_run_model
from tf_transformer.train import MODEL, predict_probabilities

GRID_LAYER = "tokens"  # the map is read at this layer's input: the stem output on its 3-D grid


def load_network(run_dir: Path, *, random_weights: bool = False, seed: int = 0) -> keras.Model:
    """The selected model, or (the sanity check) a clone with freshly initialised weights."""
    model = load_run_model(Path(run_dir))
    if random_weights:
        keras.utils.set_random_seed(seed)
        model = keras.models.clone_model(model)  # same graph, new weights from each layer's initialisers
    return model


def split_at_grid(model: keras.Model) -> tuple[keras.Model, keras.Model]:
    """(stem: volume -> (B, d, h, w, P) grid, head: grid -> logits), sharing the model's layers."""
    grid = model.get_layer(GRID_LAYER).input
    return keras.Model(model.inputs[0], grid), keras.Model(grid, model.outputs[0])


def _target_gradient(head: keras.Model, grid, targets: np.ndarray):
    """d(sum over the batch of the target logit) / d(grid), with the backend's autodiff."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        grid = tf.convert_to_tensor(grid)
        with tf.GradientTape() as tape:
            tape.watch(grid)
            logits = tf.cast(head(grid, training=False), tf.float32)
            score = tf.reduce_sum(tf.gather(logits, targets, axis=1, batch_dims=1))
        return tape.gradient(score, grid).numpy()
    if backend == "torch":
        import torch

        grid = grid.detach().requires_grad_(True)
        logits = head(grid, training=False).float()
        score = logits.gather(1, torch.as_tensor(targets, device=logits.device).long()[:, None]).sum()
        (gradient,) = torch.autograd.grad(score, grid)
        return gradient.cpu().numpy()
    raise ConfigError(f"explain --method gradcam: the {backend} backend is not supported "
                      "(KERAS_BACKEND=tensorflow or torch); --method occlusion works on every backend")


def gradient_activation(stem: keras.Model, head: keras.Model, volumes: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(B, D, H, W) volumes, (B,) class indices -> (B, D, H, W) maps."""
    grid = stem(np.asarray(volumes, dtype=np.float32)[..., None], training=False)  # (B, d, h, w, P)
    gradient = _target_gradient(head, grid, np.asarray(targets, dtype=np.int32))
    activation = keras.ops.convert_to_numpy(keras.ops.cast(grid, "float32"))
    cells = (gradient.astype(np.float32) * activation).sum(axis=-1)  # (B, d, h, w)
    return np.stack([upsample(positive_part(c), volumes.shape[1:]) for c in cells])


def model_hooks(run_dir: Path, classes, *, random_weights: bool = False, gradcam_layer: str | None = None) -> ModelHooks:
    if gradcam_layer not in (None, GRID_LAYER):
        raise ConfigError(f"--gradcam-layer {gradcam_layer}: the transformer's gradient map has one grid, the stem "
                          f"output ('{GRID_LAYER}'); after it every token mixes every position")
    return hooks_for(load_network(run_dir, random_weights=random_weights), classes)


def hooks_for(model: keras.Model, classes) -> ModelHooks:
    stem, head = split_at_grid(model)
    return ModelHooks(MODEL, list(classes),
                      lambda volumes: predict_probabilities(model, volumes, batch_size=len(volumes)),
                      lambda v, t: gradient_activation(stem, head, v, t), f"{GRID_LAYER} (input: the stem output)")
