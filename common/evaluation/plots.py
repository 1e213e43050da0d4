"""Figures (headless matplotlib + seaborn). Each function draws into a given Axes or writes a PNG."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402


def _cell_font_size(n_classes: int) -> float:
    """Annotation size that fits a cell: 11 pt up to 4 classes, shrinking to 7 pt at 12 and more."""
    return float(np.clip(13 - n_classes / 2, 7, 11))


def confusion_matrix_axes(ax, matrix: np.ndarray, classes: Sequence[str], *, normalise: bool, title: str) -> None:
    matrix = np.asarray(matrix, dtype=float)
    k = len(classes)
    if normalise:
        totals = matrix.sum(axis=1, keepdims=True)
        matrix = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
    fmt = (".2f" if k <= 6 else ".1f") if normalise else ".0f"
    sns.heatmap(matrix, annot=True, fmt=fmt, cmap="Blues", cbar=False, annot_kws={"fontsize": _cell_font_size(k)},
                xticklabels=classes, yticklabels=classes, vmin=0, vmax=1 if normalise else None, ax=ax, square=True)
    long_names = max(len(str(c)) for c in classes) * k > 40
    ax.tick_params(axis="x", labelrotation=45 if long_names else 0, labelsize=_cell_font_size(k))
    ax.tick_params(axis="y", labelrotation=0, labelsize=_cell_font_size(k))
    if long_names:
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)


def save_confusion_matrices(path: Path, matrices: dict[str, np.ndarray], classes: Sequence[str]) -> Path:
    return _save(confusion_figure(matrices, classes), path)


def confusion_figure(matrices: dict[str, np.ndarray], classes: Sequence[str]):
    """One row per named matrix (e.g. per model): counts and row-normalised side by side.

    Each panel is a square whose side grows with the number of classes (0.45 in per class, at least
    3.5 in), so cells keep a legible size from 2 to 20+ classes.
    """
    side = max(3.5, 0.45 * len(classes) + 1.5)
    fig, axes = plt.subplots(len(matrices), 2, figsize=(2 * side + 0.5, side * len(matrices)), squeeze=False)
    for row, (name, matrix) in enumerate(matrices.items()):
        confusion_matrix_axes(axes[row, 0], matrix, classes, normalise=False, title=f"{name}: counts")
        confusion_matrix_axes(axes[row, 1], matrix, classes, normalise=True, title=f"{name}: row-normalised")
    fig.tight_layout()
    return fig


def save_training_curves(path: Path, histories: dict[str, list[dict]]) -> Path:
    """Loss and accuracy per epoch, train dashed and val solid, all runs on shared axes."""
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for (name, rows), colour in zip(histories.items(), sns.color_palette(n_colors=max(len(histories), 1))):
        epochs = [r["epoch"] for r in rows]
        for ax, metric in ((loss_ax, "loss"), (acc_ax, "accuracy")):
            ax.plot(epochs, [r[f"train_{metric}"] for r in rows], "--", color=colour, label=f"{name} train")
            ax.plot(epochs, [r[f"val_{metric}"] for r in rows], "-", color=colour, label=f"{name} val")
    for ax, metric in ((loss_ax, "loss"), (acc_ax, "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)


def save_roc_curves(path: Path, curves: dict[str, tuple[np.ndarray, np.ndarray]], classes: Sequence[str]) -> Path:
    """curves: name -> (y_true, probabilities). Binary: positive class; multiclass: one curve per class."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, (y_true, probabilities) in curves.items():
        targets = [1] if len(classes) == 2 else range(len(classes))
        for k in targets:
            if len(np.unique(y_true == k)) < 2:
                continue
            fpr, tpr, _ = roc_curve(y_true == k, probabilities[:, k])
            label = name if len(classes) == 2 else f"{name}: {classes[k]}"
            ax.plot(fpr, tpr, label=label)
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC (test)" if len(classes) == 2 else "ROC one-vs-rest (test)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def save_reliability_diagram(path: Path, bins: dict[str, dict]) -> Path:
    """bins: name -> common.calibration.reliability_bins output."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, b in bins.items():
        filled = b["count"] > 0
        ax.plot(b["confidence"][filled], b["accuracy"][filled], "o-", label=f"{name} (ECE {b['ece']:.3f})")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set_xlabel("confidence (max probability)")
    ax.set_ylabel("accuracy")
    ax.set_title("reliability (test)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
