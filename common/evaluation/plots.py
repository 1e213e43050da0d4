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

# One colour, line style and marker per model in every figure (the label starts with the model's name:
# "ResNet", "ResNet (t-lr)"); Okabe-Ito colours, distinguishable with colour blindness and in grey.
MODEL_STYLES = {"Transformer": ("#0072B2", "-", "o"), "ResNet": ("#D55E00", "--", "s")}
OTHER_STYLES = [("#009E73", "-.", "^"), ("#CC79A7", ":", "D"), ("#E69F00", (0, (5, 1)), "v")]


def model_style(label: str, labels: Sequence[str] = ()) -> dict:
    """matplotlib keywords of `label`'s model; a second configuration of one model keeps its colour and
    line style and takes the next marker; an unknown model takes the next free style."""
    base = next((style for name, style in MODEL_STYLES.items() if label.split(" (")[0] == name), None)
    if base is None:
        unknown = [x for x in labels if x.split(" (")[0] not in MODEL_STYLES] or [label]
        base = OTHER_STYLES[unknown.index(label) % len(OTHER_STYLES)] if label in unknown else OTHER_STYLES[0]
    same_model = [x for x in labels if x.split(" (")[0] == label.split(" (")[0]]
    markers = [base[2], "^", "D", "v", "P"]
    marker = markers[same_model.index(label) % len(markers)] if label in same_model else base[2]
    return {"color": base[0], "linestyle": base[1], "marker": marker}


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
    for name, rows in histories.items():
        colour = model_style(name, list(histories))["color"]
        epochs = [r["epoch"] for r in rows]
        for ax, metric in ((loss_ax, "loss"), (acc_ax, "accuracy")):
            ax.plot(epochs, [r[f"train_{metric}"] for r in rows], "--", color=colour, alpha=0.6, label=f"{name} train")
            ax.plot(epochs, [r[f"val_{metric}"] for r in rows], "-", color=colour, label=f"{name} val")
    for ax, metric in ((loss_ax, "loss"), (acc_ax, "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)


def save_roc_curves(path: Path, curves: dict[str, tuple[np.ndarray, np.ndarray]], classes: Sequence[str], *,
                    folds: dict[str, list[tuple[np.ndarray, np.ndarray]]] | None = None) -> Path:
    """curves: name -> (y_true, probabilities), drawn bold in the model's style; `folds`: name -> per-fold
    (y_true, probabilities), drawn as thin lines of the same colour. Binary: the positive class; several
    classes: one panel per class (one-vs-rest), so models keep their style and classes their panel."""
    targets = [1] if len(classes) == 2 else list(range(len(classes)))
    fig, axes = plt.subplots(1, len(targets), figsize=(5.5 * len(targets), 5), squeeze=False)
    labels = list(curves)
    for ax, k in zip(axes[0], targets):
        for name, (y_true, probabilities) in curves.items():
            style = model_style(name, labels)
            for fold_y, fold_p in (folds or {}).get(name, []):
                if len(np.unique(fold_y == k)) == 2:
                    fpr, tpr, _ = roc_curve(fold_y == k, fold_p[:, k])
                    ax.plot(fpr, tpr, color=style["color"], linestyle=style["linestyle"], linewidth=0.7, alpha=0.35)
            if len(np.unique(y_true == k)) < 2:
                continue
            fpr, tpr, _ = roc_curve(y_true == k, probabilities[:, k])
            ax.plot(fpr, tpr, color=style["color"], linestyle=style["linestyle"], linewidth=2.2,
                    label=name + (" (pooled; folds thin)" if folds else ""))
        ax.plot([0, 1], [0, 1], ":", color="grey")
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.set_title("ROC (test)" if len(classes) == 2 else f"ROC (test): {classes[k]} vs rest")
        ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def save_reliability_diagram(path: Path, bins: dict[str, dict]) -> Path:
    """bins: name -> common.calibration.reliability_bins output."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, b in bins.items():
        filled = b["count"] > 0
        ax.plot(b["confidence"][filled], b["accuracy"][filled], **model_style(name, list(bins)),
                label=f"{name} (ECE {b['ece']:.3f})")
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
