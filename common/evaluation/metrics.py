"""Metrics computed from predictions.csv alone; scikit-learn does the arithmetic."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
from sklearn import metrics as skm

from common.atomic import atomic_write_text
from common.runs.rundir import Predictions, read_predictions

BOOTSTRAP_METRICS = ("accuracy", "balanced_accuracy", "roc_auc")


def roc_auc(y_true: np.ndarray, probabilities: np.ndarray, *, n_classes: int) -> float:
    """Binary: AUC of the positive-class probability; multiclass: one-vs-rest macro. NaN if undefined."""
    if len(np.unique(y_true)) < 2:
        return float("nan")
    if n_classes == 2:
        return float(skm.roc_auc_score(y_true, probabilities[:, 1]))
    if len(np.unique(y_true)) < n_classes:
        return float("nan")  # one-vs-rest needs every class present
    return float(skm.roc_auc_score(y_true, probabilities, multi_class="ovr", average="macro",
                                   labels=np.arange(n_classes)))


def point_metric(name: str, y_true, y_pred, probabilities, n_classes: int) -> float:
    if name == "accuracy":
        return float(skm.accuracy_score(y_true, y_pred))
    if name == "balanced_accuracy":
        return float(skm.balanced_accuracy_score(y_true, y_pred))
    if name == "roc_auc":
        return roc_auc(y_true, probabilities, n_classes=n_classes)
    raise KeyError(name)


def bootstrap_indices(n: int, *, n_resamples: int, seed: int) -> np.ndarray:
    """(n_resamples, n) resampled row indices; shared by paired comparisons of two models."""
    return np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))


def bootstrap_ci(name: str, y_true, y_pred, probabilities, *, n_classes: int, n_resamples: int = 1000,
                 seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    values = []
    with warnings.catch_warnings():  # a resample may miss a class: sklearn warns, the value is still defined
        warnings.simplefilter("ignore", UserWarning)
        for rows in bootstrap_indices(len(y_true), n_resamples=n_resamples, seed=seed):
            value = point_metric(name, y_true[rows], y_pred[rows], probabilities[rows], n_classes)
            if np.isfinite(value):
                values.append(value)
    if not values:
        return (float("nan"), float("nan"))
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def compute_metrics(predictions: Predictions, *, n_resamples: int = 1000, seed: int = 0) -> dict:
    """All metrics of one split's predictions."""
    y, y_hat, p = predictions.y_true, predictions.y_pred, predictions.probabilities
    classes = predictions.classes
    k = len(classes)
    labels = np.arange(k)
    precision, recall, f1, support = skm.precision_recall_fscore_support(y, y_hat, labels=labels, zero_division=0)
    result = {
        "n": int(len(y)),
        "accuracy": point_metric("accuracy", y, y_hat, p, k),
        "balanced_accuracy": point_metric("balanced_accuracy", y, y_hat, p, k),
        "macro_f1": float(skm.f1_score(y, y_hat, labels=labels, average="macro", zero_division=0)),
        "roc_auc": roc_auc(y, p, n_classes=k),
        "log_loss": float(skm.log_loss(y, _renormalised(p), labels=labels)),
        "per_class": {
            c: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                "support": int(support[i])}
            for i, c in enumerate(classes)
        },
        "confusion_matrix": skm.confusion_matrix(y, y_hat, labels=labels).tolist(),
        "ci95": {
            name: bootstrap_ci(name, y, y_hat, p, n_classes=k, n_resamples=n_resamples, seed=seed)
            for name in BOOTSTRAP_METRICS
        },
    }
    return result


def learning_failure(metrics: dict) -> str | None:
    """Why a split's predictions show no learning, or None: every prediction one class, or a balanced
    accuracy whose 95 % CI reaches chance (1 / number of classes)."""
    matrix = np.asarray(metrics["confusion_matrix"])
    k = len(matrix)
    predicted = np.flatnonzero(matrix.sum(axis=0))
    if len(predicted) == 1:
        return f"every prediction is class #{predicted[0]} (a single class)"
    low = metrics["ci95"]["balanced_accuracy"][0]
    if np.isfinite(low) and low <= 1 / k:
        return (f"balanced accuracy {metrics['balanced_accuracy']:.3f} has a 95 % CI down to {low:.3f}, "
                f"which includes chance ({1 / k:.3f})")
    return None


def _renormalised(probabilities: np.ndarray) -> np.ndarray:
    """Clip away exact zeros and undo the rounding of predictions.csv, so log loss stays finite."""
    clipped = np.clip(probabilities, 1e-7, 1.0)
    return clipped / clipped.sum(axis=1, keepdims=True)


def report_finished_run(run_dir: Path) -> dict:
    """Score a finished run (metrics.json) and print its val/test line, and a warning if it did not learn."""
    metrics = score_run(run_dir)
    for name in ("val", "test"):
        if name in metrics:
            m = metrics[name]
            print(f"{name}: accuracy {m['accuracy']:.3f}  balanced {m['balanced_accuracy']:.3f}  "
                  f"AUC {m['roc_auc']:.3f}  log loss {m['log_loss']:.3f}  (n={m['n']})")
    failure = learning_failure(metrics["test"]) if "test" in metrics else None
    if failure:
        print(f"warning: this run shows no learning on test: {failure}; see the history "
              "(lower --lr, more --epochs?)", file=sys.stderr)
    print(f"run directory: {run_dir}")
    return metrics


def score_run(run_dir: Path, *, n_resamples: int = 1000, seed: int = 0) -> dict:
    """metrics.json of a run directory: per split present in predictions.csv (val, test)."""
    predictions = read_predictions(Path(run_dir) / "predictions.csv")
    out = {"classes": predictions.classes, "bootstrap": {"n_resamples": n_resamples, "seed": seed, "level": 0.95}}
    for split in ("val", "test"):
        subset = predictions.select(split)
        if len(subset):
            out[split] = compute_metrics(subset, n_resamples=n_resamples, seed=seed)
    atomic_write_text(Path(run_dir) / "metrics.json", json.dumps(_nan_to_none(out), indent=1))
    return out


def _nan_to_none(value):
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(v) for v in value]
    return value
