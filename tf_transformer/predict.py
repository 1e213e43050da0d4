"""`predict`: a trained run directory + new NIfTI files (or a manifest) -> CSV of class probabilities."""

from __future__ import annotations

from pathlib import Path

import keras

from common.data.inference import load_inputs, write_probabilities
from common.data.preprocess import PreprocessConfig
from common.runs.rundir import read_config
from tf_transformer.train import MODEL_FILE, predict_probabilities


def predict_files(run_dir: Path, inputs: list[Path] | None, manifest: Path | None, out: Path, *,
                  batch_size: int = 4, workers: int = 1) -> Path:
    config = read_config(run_dir)
    preprocess = PreprocessConfig.from_dict(config["data"]["preprocess"])
    sample_ids, volumes = load_inputs(inputs, manifest, preprocess, workers=workers)
    model = keras.saving.load_model(Path(run_dir) / MODEL_FILE, safe_mode=True, compile=False)
    probabilities = predict_probabilities(model, volumes, batch_size=batch_size)
    return write_probabilities(out, sample_ids, config["data"]["classes"], probabilities)
