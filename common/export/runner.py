"""`python -m common predict --bundle BUNDLE scans... | --manifest CSV --out probs.csv`: onnxruntime, nibabel
and numpy only (no torch, TensorFlow or Keras), the same preprocessing code and CSV columns as `predict`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from common.data.inference import load_inputs, write_probabilities
from common.data.preprocess import PreprocessConfig
from common.errors import DataError
from common.export.bundle import CLASSES_FILE, PREPROCESS_FILE, read_bundle
from common.runs.decision import decide
from common.runs.typed import from_jsonable


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def preprocess_of(bundle: Path) -> PreprocessConfig:
    """preprocess.json read back typed, as config.json is (its human note aside)."""
    path = Path(bundle) / PREPROCESS_FILE
    values = json.loads(path.read_text())
    values.pop("note", None)
    return from_jsonable(PreprocessConfig, values, origin=str(path))


def bundle_probabilities(bundle: Path, volumes: np.ndarray, *, metadata: dict | None = None, batch_size: int = 4,
                         threads: int = 0) -> np.ndarray:
    """(N, D, H, W) preprocessed volumes -> (N, K) probabilities, averaged over the bundle's members."""
    import onnxruntime as ort

    metadata = metadata or read_bundle(bundle)
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    layout = metadata["input"]["layout"]
    x = volumes.astype(np.float32)[:, None] if layout == "NCDHW" else volumes.astype(np.float32)[..., None]
    total = None
    for member in metadata["members"]:
        session = ort.InferenceSession(str(Path(bundle) / member["file"]), options,
                                       providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        probabilities = np.concatenate([softmax(session.run(None, {name: x[i:i + batch_size]})[0])
                                        for i in range(0, len(x), batch_size)])
        total = probabilities if total is None else total + probabilities
    return total / len(metadata["members"])


def predict_with_bundle(bundle: Path, inputs: list[Path] | None, manifest: Path | None, out: Path, *,
                        batch_size: int = 4, workers: int = 1) -> Path:
    metadata = read_bundle(bundle)  # checked before any scan is read
    classes = json.loads((Path(bundle) / CLASSES_FILE).read_text())
    sample_ids, volumes = load_inputs(inputs, manifest, preprocess_of(bundle), workers=workers)
    probabilities = bundle_probabilities(bundle, volumes, metadata=metadata, batch_size=batch_size)
    if probabilities.shape[1] != len(classes):
        raise DataError(f"{bundle}: the graphs give {probabilities.shape[1]} outputs for {len(classes)} classes")
    print(f"bundle: {metadata['model']['label']} ({metadata['ensemble']}, {len(metadata['members'])} member(s))")
    decision = metadata["output"].get("decision", {"rule": "argmax"})  # bundles before the rule: argmax
    threshold = decision["threshold"] if decision["rule"] == "threshold" else None
    return write_probabilities(out, sample_ids, classes, probabilities, decide(probabilities, threshold))
