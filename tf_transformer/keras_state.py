"""The process-wide Keras state this package sets, all of it here.

- The backend: KERAS_BACKEND, set before keras is first imported (keras reads it once; it cannot change
  afterwards, so there is nothing to restore). Only the backends the project installs and tests are accepted.
- TensorFlow's CPU kernels: TF_ENABLE_ONEDNN_OPTS=1 unless the environment sets it (`cpu_kernels`).
- The precision policy: keras.mixed_precision's global policy decides the dtype policy of the layers built
  while it is set; it is set around building (and compiling) a model and restored afterwards, so a later
  model in the same process (a test, the probe, a benchmark) starts from the policy it found.
Importable before keras (the CLI chooses the backend with it).
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager

from common.errors import ConfigError

SUPPORTED_BACKENDS = ("tensorflow", "torch")
ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"


def cpu_kernels() -> str:
    """TensorFlow's oneDNN kernels on every CPU, unless the environment already says (`0` keeps Eigen's).

    TensorFlow turns oneDNN on by itself only on CPUs with AVX512-VNNI, AVX512-BF16 or AMX; on an AVX2-only
    AMD EPYC its default (Eigen) kernels trained `small_recipe` at 28^3 11x slower than with oneDNN
    (18.8 against 208 samples/s, `tf_transformer.bench`; README "Precision and memory layout"). TensorFlow
    reads the variable once, when it is imported, so this runs before keras is. Returns the value in force."""
    return os.environ.setdefault(ONEDNN_VARIABLE, "1")
POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}


def select_backend(requested: str | None) -> str:
    """Set KERAS_BACKEND to `requested` (or keep the environment's, default tensorflow) before keras is
    imported; refuse a backend the project does not support, and a change after keras was imported."""
    if requested:
        os.environ["KERAS_BACKEND"] = requested
    cpu_kernels()
    chosen = os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    if chosen not in SUPPORTED_BACKENDS:
        raise ConfigError(f"KERAS_BACKEND={chosen}: the transformer runs on {' or '.join(SUPPORTED_BACKENDS)} "
                          "(the backends the project installs and tests)")
    if "keras" in sys.modules:
        active = sys.modules["keras"].backend.backend()
        if active != chosen:
            raise ConfigError(f"Keras backend {chosen} requested, but keras was already imported with {active}")
    return chosen


@contextmanager
def precision_policy(precision: str):
    """Layers built inside take the policy of `precision` (fp32 | bf16 | fp16); the previous global policy
    is restored on exit, also after an error."""
    import keras

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(POLICIES[precision])
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)
