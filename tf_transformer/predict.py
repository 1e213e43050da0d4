"""`predict`: a trained run directory + new NIfTI files (or a manifest) -> CSV of class probabilities."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from common.data.inference import load_inputs, write_probabilities
from common.errors import ConfigError
from common.runs.decision import decide
from common.runs.ensemble import ensemble_members, ensemble_threshold, record_members
from tf_transformer.model_file import load_selected_model
from tf_transformer.train import MODEL, MODEL_FILE, predict_probabilities


def load_run_model(run_dir: Path) -> keras.Model:
    """The run's model.keras, refused unless it takes the volumes and gives the classes its config.json
    records (a model.keras copied in from another run, or a tampered record)."""
    from common.runs.record import read_record

    record = read_record(run_dir)
    path = Path(run_dir) / MODEL_FILE
    model = load_selected_model(path)
    found_shape, found_classes = tuple(model.inputs[0].shape[1:4]), int(model.outputs[0].shape[-1])
    want_shape, want_classes = tuple(record.data.preprocess.shape), len(record.data.classes)
    if (found_shape, found_classes) != (want_shape, want_classes):
        raise ConfigError(f"{path}: a model for {found_shape} volumes and {found_classes} classes, but "
                          f"{Path(run_dir) / 'config.json'} records {want_shape} and {want_classes}: "
                          "not this run's model")
    return model


def predict_files(run_dir: Path, inputs: list[Path] | None, manifest: Path | None, out: Path, *,
                  batch_size: int = 4, workers: int = 1) -> Path:
    """The run's preprocessing and weights; the precision policy travels inside model.keras.

    `run_dir` may also be a folder of runs (a cross-validation's cv/<name>/transformer): their class
    probabilities are averaged (a fold ensemble).
    """
    members = ensemble_members(Path(run_dir), MODEL)
    first = members[0][1]
    models = [load_run_model(member_dir) for member_dir, _ in members]
    sample_ids, volumes = load_inputs(inputs, manifest, first.data.preprocess, workers=workers)
    probabilities = np.mean([predict_probabilities(m, volumes, batch_size=batch_size) for m in models], axis=0)
    written = write_probabilities(out, sample_ids, list(first.data.classes), probabilities,
                                  decide(probabilities, ensemble_threshold(members)))
    record_members(written, members)
    return written
