"""`predict`: a trained run directory + new NIfTI files (or a manifest) -> CSV of class probabilities."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from common.data.inference import load_inputs, write_probabilities
from common.errors import ConfigError
from common.runs.ensemble import ensemble_members, record_members
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
    """The run's preprocessing and weights; the precision policy travels inside model.keras.

    `run_dir` may also be a folder of runs (a cross-validation's cv/<name>/transformer): their class
    probabilities are averaged (a fold ensemble).
    """
    members = ensemble_members(Path(run_dir), MODEL)
    first = members[0][1]
    models = [load_selected_model(member_dir / MODEL_FILE) for member_dir, _ in members]
    sample_ids, volumes = load_inputs(inputs, manifest, first.data.preprocess, workers=workers)
    probabilities = np.mean([predict_probabilities(m, volumes, batch_size=batch_size) for m in models], axis=0)
    written = write_probabilities(out, sample_ids, list(first.data.classes), probabilities)
    record_members(written, members)
    return written
