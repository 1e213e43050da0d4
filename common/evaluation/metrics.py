"""Metrics computed from predictions.csv alone. scikit-learn computes every point estimate; the bootstrap
resamples are computed all at once with numpy/scipy (the same values as scikit-learn's on each resample,
tests/test_rundir_metrics.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from scipy.stats import rankdata
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


RESAMPLE_CHUNK = 200  # resamples computed at once: bounds the (chunk, n, k) arrays of a large test set


def resampled_metric(name: str, y_true, y_pred, probabilities, rows: np.ndarray, *, n_classes: int) -> np.ndarray:
    """point_metric of every resample `rows` ((R, n) indices) at once: (R,) values, NaN where undefined.

    The same values as scikit-learn's on each resample (tests/test_rundir_metrics.py), vectorised: one
    scikit-learn call per resample (3 metrics x 1000 resamples x 2 splits) took ~10 s at the end of every run.
    """
    return np.concatenate([_resampled(name, y_true[chunk], y_pred[chunk], probabilities[chunk], n_classes)
                           for chunk in np.array_split(rows, max(1, -(-len(rows) // RESAMPLE_CHUNK)))])


def _resampled(name: str, y: np.ndarray, y_hat: np.ndarray, p: np.ndarray, k: int) -> np.ndarray:
    # y, y_hat: (R, n) labels of each resample; p: (R, n, k) probabilities
    if name == "accuracy":
        return (y_hat == y).mean(axis=1)
    if name == "balanced_accuracy":  # mean recall over the classes present (scikit-learn drops absent ones)
        members = y[..., None] == np.arange(k)  # (R, n, k)
        support = members.sum(axis=1)
        hits = (members & (y_hat == y)[..., None]).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.nanmean(np.where(support > 0, hits / support, np.nan), axis=1)
    if name == "roc_auc":  # binary: of the positive class; multiclass: one-vs-rest macro, every class present
        columns = [1] if k == 2 else range(k)
        aucs = np.stack([_mann_whitney_auc(y == c, p[..., c]) for c in columns], axis=1)  # (R, classes)
        return aucs.mean(axis=1)  # NaN where a class is missing: as roc_auc()
    raise KeyError(name)


def _mann_whitney_auc(positive: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """ROC AUC of each row ((R, n)): the rank-sum statistic with ties counted half, which is the area
    under the ROC curve's trapezoids; NaN for a row with one class only."""
    n_pos = positive.sum(axis=1)
    n_neg = positive.shape[1] - n_pos
    rank_sum = (rankdata(scores, axis=1) * positive).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_pos * n_neg > 0, (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg), np.nan)


def percentile_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The central `level` interval of the finite `values` (NaN, NaN if none is)."""
    values = values[np.isfinite(values)]
    if not len(values):
        return (float("nan"), float("nan"))
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_ci(name: str, y_true, y_pred, probabilities, *, n_classes: int, n_resamples: int = 1000,
                 seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    rows = bootstrap_indices(len(y_true), n_resamples=n_resamples, seed=seed)
    return percentile_interval(resampled_metric(name, y_true, y_pred, probabilities, rows, n_classes=n_classes),
                               level)


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
