"""The run-directory contract (docs/design.md section 4): both trainers write these files through here.

    config.json      the run record (common.runs.record)
    history.csv      epoch,train_loss,train_accuracy,val_loss,val_accuracy,lr,seconds
    predictions.csv  sample_id,subject_id,split,y_true,y_pred,prob_<class>...   (val and test)
    metrics.json     written by common.evaluation.metrics only
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from common.atomic import atomic_write, atomic_write_text
from common.errors import DataError
from common.runs.decision import decide

HISTORY_COLUMNS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds")
PREDICTION_COLUMNS = ("sample_id", "subject_id", "split", "y_true", "y_pred")
TENSORBOARD_TAGS = {  # same tags on both sides, so one TensorBoard overlays the two models
    "train_loss": "loss/train", "val_loss": "loss/val",
    "train_accuracy": "accuracy/train", "val_accuracy": "accuracy/val", "lr": "lr",
}


def new_run_dir(root: Path, prefix: str) -> Path:
    """<root>/<prefix>-<UTC time>, with -2, -3... when that name is taken."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    path, n = Path(root) / f"{prefix}-{stamp}", 1
    while path.exists():
        n += 1
        path = Path(root) / f"{prefix}-{stamp}-{n}"
    return path


def write_history(run_dir: Path, rows: Sequence[dict]) -> None:
    """Rewrite history.csv with every epoch so far (atomic; the file is small)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row[k] for k in HISTORY_COLUMNS})
    atomic_write_text(Path(run_dir) / "history.csv", buffer.getvalue())


def read_history(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "history.csv"
    with _open_csv(path) as f:
        reader = csv.DictReader(f)
        _require_columns(path, reader.fieldnames, HISTORY_COLUMNS)
        return [{k: (int(r[k]) if k == "epoch" else float(r[k])) for k in HISTORY_COLUMNS} for r in reader]


def write_predictions(run_dir: Path, *, classes: Sequence[str], split: Sequence[str], sample_ids: Sequence[str],
                      subject_ids: Sequence[str], y_true: np.ndarray, probabilities: np.ndarray,
                      threshold: float | None = None) -> None:
    """probabilities: (N, n_classes) softmax outputs; y_pred by the run's decision rule (common.runs.decision:
    their argmax, or class 1 at a val-chosen threshold)."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    y_pred = decide(probabilities, threshold)
    if probabilities.shape != (len(sample_ids), len(classes)):
        raise ValueError(f"probabilities shape {probabilities.shape} != ({len(sample_ids)}, {len(classes)})")

    def write(tmp: Path):
        with tmp.open("w", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow([*PREDICTION_COLUMNS, *(f"prob_{c}" for c in classes)])
            for i in range(len(sample_ids)):
                writer.writerow([sample_ids[i], subject_ids[i], split[i], classes[int(y_true[i])],
                                 classes[int(y_pred[i])], *(f"{p:.6g}" for p in probabilities[i])])

    atomic_write(Path(run_dir) / "predictions.csv", write)


@dataclass
class Predictions:
    """predictions.csv, validated: class names, labels and a (N, K) probability matrix."""

    path: Path
    classes: list[str]
    sample_ids: list[str]
    subject_ids: list[str]
    split: np.ndarray  # (N,) split names
    y_true: np.ndarray  # (N,) class indices
    y_pred: np.ndarray  # (N,)
    probabilities: np.ndarray  # (N, K)

    @classmethod
    def from_rows(cls, path: Path, rows: list[dict], classes: list[str]) -> Predictions:
        return cls(path, classes, [r["sample_id"] for r in rows], [r["subject_id"] for r in rows],
                   np.array([r["split"] for r in rows]),
                   np.array([classes.index(r["y_true"]) for r in rows], dtype=np.int64),
                   np.array([classes.index(r["y_pred"]) for r in rows], dtype=np.int64),
                   np.array([[float(r[f"prob_{c}"]) for c in classes] for r in rows]))

    def take(self, rows: np.ndarray) -> Predictions:
        """The predictions of the given row indices (or boolean mask), in that order."""
        rows = np.flatnonzero(rows) if np.asarray(rows).dtype == bool else np.asarray(rows, dtype=np.int64)
        return Predictions(self.path, self.classes, [self.sample_ids[i] for i in rows],
                           [self.subject_ids[i] for i in rows], self.split[rows], self.y_true[rows],
                           self.y_pred[rows], self.probabilities[rows])

    def select(self, split: str) -> Predictions:
        return self.take(self.split == split)

    def __len__(self) -> int:
        return len(self.y_true)


def read_predictions(path: Path) -> Predictions:
    """Read and validate predictions.csv; every problem names the file and the row."""
    path = Path(path)
    if path.is_dir():
        path = path / "predictions.csv"
    with _open_csv(path) as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        _require_columns(path, columns, PREDICTION_COLUMNS)
        classes = [c[len("prob_"):] for c in columns if c.startswith("prob_")]
        if len(classes) < 2:
            raise DataError(f"{path}: needs at least two prob_<class> columns, found {classes}")
        rows = list(reader)
    if not rows:
        raise DataError(f"{path}: no predictions")
    seen = set()
    for n, row in enumerate(rows, start=2):
        where = f"{path} row {n}"
        key = (row["split"], row["sample_id"])
        if key in seen:
            raise DataError(f"{where}: duplicate sample id '{row['sample_id']}' in split '{row['split']}'")
        seen.add(key)
        for column in ("y_true", "y_pred"):
            if row[column] not in classes:
                raise DataError(f"{where}: {column} '{row[column]}' is not one of the classes {classes}")
        try:
            probs = np.array([float(row[f"prob_{c}"]) for c in classes])
        except ValueError as exc:
            raise DataError(f"{where}: a probability is not a number ({exc})") from exc
        if not np.isfinite(probs).all() or probs.min() < 0 or abs(probs.sum() - 1) > 1e-3:
            raise DataError(f"{where}: probabilities {probs.tolist()} are not a distribution (>= 0, sum 1)")
    return Predictions.from_rows(path, rows, classes)


def _open_csv(path: Path):
    try:
        return Path(path).open(newline="")
    except FileNotFoundError as exc:
        raise DataError(f"{path}: not found") from exc


def _require_columns(path: Path, found, required) -> None:
    missing = [c for c in required if c not in (found or [])]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; found {list(found or [])}")
