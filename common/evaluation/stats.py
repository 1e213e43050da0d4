"""Paired comparisons of two models on the same test samples, and calibration."""

from __future__ import annotations

import numpy as np
from scipy.stats import binomtest

from common.evaluation.metrics import bootstrap_indices, percentile_interval, point_metric, resampled_metric


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> dict:
    """Exact McNemar test on paired correctness: a two-sided binomial test of the discordant pairs.

    b = A right and B wrong, c = A wrong and B right; under H0 b ~ Binomial(b + c, 1/2).
    """
    correct_a, correct_b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    b = int((correct_a & ~correct_b).sum())
    c = int((~correct_a & correct_b).sum())
    p = 1.0 if b + c == 0 else float(binomtest(b, b + c, 0.5, alternative="two-sided").pvalue)
    return {"a_only": b, "b_only": c, "p_value": p}


def paired_bootstrap_difference(name: str, y_true: np.ndarray, a: tuple[np.ndarray, np.ndarray],
                                b: tuple[np.ndarray, np.ndarray], *, n_classes: int, n_resamples: int = 1000,
                                seed: int = 0) -> dict:
    """metric(B) - metric(A) with a 95 % CI from resampling the same rows for both models.

    a, b: (y_pred, probabilities) of each model on the same samples, in the same order.
    """
    point = point_metric(name, y_true, *b, n_classes) - point_metric(name, y_true, *a, n_classes)
    rows = bootstrap_indices(len(y_true), n_resamples=n_resamples, seed=seed)
    diffs = (resampled_metric(name, y_true, *b, rows, n_classes=n_classes)
             - resampled_metric(name, y_true, *a, rows, n_classes=n_classes))
    return {"difference": float(point), "ci95": percentile_interval(diffs)}


def reliability_bins(y_true: np.ndarray, probabilities: np.ndarray, *, n_bins: int = 10) -> dict:
    """Confidence (max probability) vs accuracy in equal-width bins, and the expected calibration error."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == y_true
    edges = np.linspace(0, 1, n_bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, n_bins - 1)
    count = np.bincount(which, minlength=n_bins)
    mean_conf = np.bincount(which, weights=confidence, minlength=n_bins) / np.maximum(count, 1)
    accuracy = np.bincount(which, weights=correct, minlength=n_bins) / np.maximum(count, 1)
    ece = float((count / max(len(y_true), 1) * np.abs(accuracy - mean_conf)).sum())
    return {"confidence": mean_conf, "accuracy": accuracy, "count": count, "ece": ece}
