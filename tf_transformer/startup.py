"""Start the Keras backend without TensorFlow's C++ start-up log on stderr.

TensorFlow 2.21 writes its oneDNN note, "Could not find cuda drivers" and "failed call to cuInit"
before absl logging is initialised, so TF_CPP_MIN_LOG_LEVEL cannot hide them. We import the backend
and let it probe its devices with file descriptor 2 pointed at /dev/null; Python exceptions are
raised after stderr is restored, so a real failure is still shown. `--verbose` skips this.
"""

from __future__ import annotations

import os
from contextlib import contextmanager


@contextmanager
def _stderr_silenced():
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def start_backend(*, verbose: bool = False) -> None:
    """Import keras and its backend and list the devices once (where TensorFlow logs its start-up)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbose else "3")
    from tf_transformer.keras_state import cpu_kernels

    cpu_kernels()
    if verbose:
        return
    with _stderr_silenced():
        import keras

        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            tf.config.list_physical_devices()
