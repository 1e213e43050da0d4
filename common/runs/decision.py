"""The decision rule: which class a vector of class probabilities predicts.

`argmax` (the default): the most probable class. `youden` (binary tasks): the operating point chosen on
val, as a clinical classifier's is: predict the second class when its probability reaches the threshold
that maximises Youden's J = sensitivity + specificity - 1 on the val split, which is the threshold of
the highest val balanced accuracy. On imbalanced data (AdrenalMNIST3D: 77 % one class) argmax of a model
trained on the plain loss mostly predicts the majority; the threshold moves the operating point without
retraining, and the probabilities (so AUC and log loss) stay what the model said.

The threshold is chosen once, at the end of training, from val only, and kept in the run record
(`outcome.threshold`), so predictions.csv, `predict`, cross-validation reports and ONNX bundles all
decide the same way. A fold ensemble (several runs) uses the mean of its members' thresholds.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from common.errors import ConfigError

DECISIONS = ("argmax", "youden")


def check_decision(decision: str, classes: Sequence[str], val_labels: np.ndarray) -> None:
    """Before training: `youden` is a binary task's rule, and val must hold both classes to choose it."""
    if decision != "youden":
        return
    if len(classes) != 2:
        raise ConfigError(f"--decision youden: a threshold on one class's probability decides a binary task; "
                          f"this dataset has {len(classes)} classes ({', '.join(classes)}); use --decision argmax")
    if len(np.unique(val_labels)) != 2:
        raise ConfigError("--decision youden: the val split needs volumes of both classes to choose a threshold")


def youden_threshold(y_true: np.ndarray, probabilities: np.ndarray) -> float:
    """The probability of class 1 at which val's Youden's J (so its balanced accuracy) is highest; the
    highest such threshold on a tie. y_true: (N,) class indices 0/1, probabilities: (N, 2)."""
    from sklearn.metrics import roc_curve

    y_true = np.asarray(y_true)
    if len(np.unique(y_true)) != 2:
        raise ConfigError("--decision youden: the val split needs volumes of both classes to choose a threshold")
    fpr, tpr, thresholds = roc_curve(y_true == 1, np.asarray(probabilities)[:, 1])
    best = int(np.argmax(tpr - fpr))  # the first maximum: thresholds are decreasing
    return float(min(thresholds[best], 1.0))  # roc_curve's first threshold is +inf (predict no positive)


def decide(probabilities: np.ndarray, threshold: float | None) -> np.ndarray:
    """(N, K) probabilities -> (N,) predicted class indices: argmax, or class 1 iff p1 >= threshold."""
    probabilities = np.asarray(probabilities)
    if threshold is None:
        return probabilities.argmax(axis=1)
    return (probabilities[:, 1] >= threshold).astype(np.int64)


def mean_threshold(thresholds: Sequence[float | None], where: str) -> float | None:
    """The decision threshold of an ensemble of runs: None if none has one, the mean if all have one."""
    given = [t for t in thresholds if t is not None]
    if not given:
        return None
    if len(given) != len(thresholds):
        raise ConfigError(f"{where}: some runs decide by a val threshold (--decision youden) and some by argmax; "
                          "an ensemble needs one rule")
    return float(np.mean(given))
