"""Reading a model.keras: Keras' safe mode, and one error line for a file that is not a loadable model."""

from __future__ import annotations

from pathlib import Path

import keras

from common.errors import ConfigError


def load_selected_model(path: Path) -> keras.Model:
    """model.keras in Keras' safe mode: a file with Lambda layers or other code is refused, by name."""
    if not path.is_file():
        raise ConfigError(f"{path}: not found (the run has not finished an epoch)")
    try:
        return keras.saving.load_model(path, safe_mode=True, compile=False)
    except ValueError as exc:
        raise ConfigError(f"{path}: refused by Keras' safe mode or not a model file "
                          f"({str(exc).splitlines()[0][:300]})") from exc
    except Exception as exc:  # zip / h5 errors of a damaged file
        raise ConfigError(f"{path}: not a loadable Keras model ({type(exc).__name__}: {exc})") from exc
