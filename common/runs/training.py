"""Framework-free parts of a training run that both trainers share: the run directory, history,
TensorBoard scalars, the one-line epoch summary, and the final predictions + metrics."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from common.data.dataset import PreparedDataset
from common.evaluation.metrics import score_run
from common.runs.rundir import (
    HISTORY_COLUMNS,
    read_config,
    read_history,
    write_config,
    write_history,
    write_predictions,
)


def is_better(metric: str, value: float, best: float | None) -> bool:
    """val_loss: lower is better; val_accuracy: higher is better."""
    if best is None:
        return True
    return value < best if metric == "val_loss" else value > best


def best_history_row(rows: list[dict], metric: str) -> dict | None:
    """The history row that `is_better` would have selected (first of equals), or None for no rows."""
    best = None
    for row in rows:
        if best is None or is_better(metric, row[metric], best[metric]):
            best = row
    return best


class RunRecorder:
    """Writes history.csv, TensorBoard scalars and config.json of one run (rank 0 only: `enabled`)."""

    def __init__(self, run_dir: Path, *, enabled: bool = True):
        self.run_dir, self.enabled = Path(run_dir), enabled
        self.rows: list[dict] = []
        self._tb = None
        if enabled:
            self.run_dir.mkdir(parents=True, exist_ok=True)

    def resume_history(self, completed_epochs: int) -> None:
        """Keep the history rows of the epochs a resumed run has already done."""
        if self.enabled and (self.run_dir / "history.csv").is_file():
            self.rows = [r for r in read_history(self.run_dir) if r["epoch"] <= completed_epochs]

    def start(self, config: dict) -> None:
        if self.enabled:
            write_config(self.run_dir, config)

    def epoch(self, row: dict) -> None:
        """row: the HISTORY_COLUMNS of one finished epoch (1-based `epoch`)."""
        if not self.enabled:
            return
        row = {k: row[k] for k in HISTORY_COLUMNS}
        self.rows = [r for r in self.rows if r["epoch"] < row["epoch"]] + [row]
        write_history(self.run_dir, self.rows)
        if self._tb is None:
            from common.runs.tensorboard import ScalarWriter

            self._tb = ScalarWriter(self.run_dir / "tb")
        self._tb.epoch(row)
        print(f"epoch {row['epoch']:>3}  train loss {row['train_loss']:.4f} acc {row['train_accuracy']:.3f}  "
              f"val loss {row['val_loss']:.4f} acc {row['val_accuracy']:.3f}  lr {row['lr']:.2e}  "
              f"{row['seconds']:.1f}s", flush=True)

    def finish(self, dataset: PreparedDataset, predict: Callable[[np.ndarray], np.ndarray], *, facts: dict) -> dict:
        """Predict val and test with the selected model, write predictions.csv and metrics.json.

        predict: (N, D, H, W) float32 array -> (N, n_classes) probabilities.
        """
        if self._tb is not None:
            self._tb.close()
        if not self.enabled:
            return {}
        parts = {k: [] for k in ("split", "sample_ids", "subject_ids", "y_true", "probabilities")}
        started = time.perf_counter()
        for name in ("val", "test"):
            split = dataset.split(name)
            if not len(split):
                continue
            parts["probabilities"].append(predict(split.x))
            parts["split"] += [name] * len(split)
            parts["sample_ids"] += split.sample_ids
            parts["subject_ids"] += split.subject_ids
            parts["y_true"].append(split.y)
        write_predictions(self.run_dir, classes=dataset.classes, split=parts["split"], sample_ids=parts["sample_ids"],
                          subject_ids=parts["subject_ids"], y_true=np.concatenate(parts["y_true"]),
                          probabilities=np.concatenate(parts["probabilities"]))
        facts = {**facts, "predict_seconds": time.perf_counter() - started}
        config = read_config(self.run_dir)
        config["facts"] = {**config.get("facts", {}), **facts}
        write_config(self.run_dir, {k: v for k, v in config.items() if k not in ("written", "python", "machine")})
        metrics = score_run(self.run_dir)
        for name in ("val", "test"):
            if name in metrics:
                m = metrics[name]
                print(f"{name}: accuracy {m['accuracy']:.3f}  balanced {m['balanced_accuracy']:.3f}  "
                      f"AUC {m['roc_auc']:.3f}  log loss {m['log_loss']:.3f}  (n={m['n']})")
        print(f"run directory: {self.run_dir}")
        return metrics

