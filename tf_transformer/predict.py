"""`predict`: a trained run directory + new NIfTI files (or a manifest) -> CSV of class probabilities."""

from __future__ import annotations

from pathlib import Path

import keras

from common.data.inference import load_inputs, write_probabilities
from common.errors import ConfigError
from common.runs.record import read_record
from tf_transformer.train import MODEL, MODEL_FILE, predict_probabilities


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


def predict_files(run_dir: Path, inputs: list[Path] | None, manifest: Path | None, out: Path, *,
                  batch_size: int = 4, workers: int = 1) -> Path:
    """The run's preprocessing and weights; the precision policy travels inside model.keras."""
    record = read_record(run_dir)
    if record.model != MODEL:
        raise ConfigError(f"--run-dir {run_dir}: this run was trained by {record.model}; "
                          f"use python -m {record.model} predict")
    model = load_selected_model(Path(run_dir) / MODEL_FILE)
    sample_ids, volumes = load_inputs(inputs, manifest, record.data.preprocess, workers=workers)
    probabilities = predict_probabilities(model, volumes, batch_size=batch_size)
    return write_probabilities(out, sample_ids, list(record.data.classes), probabilities)
