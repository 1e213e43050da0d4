"""The operating point chosen on val (`--decision youden`) against argmax, per run, from each run's
predictions.csv and config.json (kept records): `python results/adrenalmnist3d/decision.py records/64 > res64/decision.md`
(`commands.sh decision` with RES=28 or 64).

Both columns come from the same trained model (the same probabilities): "argmax" predicts hyperplasia when
its probability is above 0.5, "val threshold" when it reaches the threshold the run chose on val at the end
of training (Youden's J). Only runs trained with `--decision youden` are read.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import balanced_accuracy_score, recall_score, roc_auc_score

from common.runs.decision import decide
from common.runs.record import read_record
from common.runs.rundir import read_predictions

MINORITY = 1  # hyperplasia, 69 of the 298 test scans


def scores(run: Path) -> dict:
    record = read_record(run)
    threshold = record.outcome.threshold
    predictions = read_predictions(run)
    out = {"run": run.name, "shape": record.data.preprocess.shape[0], "threshold": threshold,
           "preset": record.preset,
           "majority_accuracy": float(np.bincount(predictions.y_true[predictions.split == "test"]).max()
                                      / np.sum(predictions.split == "test"))}
    for split in ("val", "test"):
        rows = predictions.split == split
        y, p = predictions.y_true[rows], predictions.probabilities[rows]
        out[split] = {"auc": roc_auc_score(y == MINORITY, p[:, MINORITY])}
        for rule, t in (("argmax", None), ("val threshold", threshold)):
            predicted = decide(p, t)
            out[split][rule] = {"accuracy": float(np.mean(predicted == y)),
                                "balanced_accuracy": balanced_accuracy_score(y, predicted),
                                "minority_recall": recall_score(y == MINORITY, predicted == MINORITY)}
    return out


def _cell(values: list[float]) -> str:
    spread = f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""
    return f"{statistics.mean(values):.3f}{spread}"


def main(roots: list[Path]) -> None:
    runs = sorted(run for root in roots for run in root.iterdir()
                  if (run / "metrics.json").is_file() and run.name.endswith(tuple(f"-youden-s{s}" for s in range(10))))
    if not runs:
        sys.exit(f"{', '.join(map(str, roots))}: no finished run trained with --decision youden (*-youden-s<seed>)")
    rows = [scores(run) for run in runs]
    print("## Every run (test; val AUC and the val-chosen threshold for the record)\n")
    print("| run | input | val AUC | threshold | test AUC | test ACC argmax / val threshold | "
          "test bal. acc argmax / val threshold | hyperplasia recall argmax / val threshold |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        t = r["test"]
        pair = {k: f"{t['argmax'][k]:.3f} / **{t['val threshold'][k]:.3f}**"
                for k in ("accuracy", "balanced_accuracy", "minority_recall")}
        print(f"| {r['run']} | {r['shape']}³ | {r['val']['auc']:.3f} | {r['threshold']:.3f} | {t['auc']:.3f} | "
              f"{pair['accuracy']} | {pair['balanced_accuracy']} | {pair['minority_recall']} |")
    print("\n## Per configuration (test: mean ± sd over its seeds, at the val threshold)\n")
    print("| configuration | input | seeds | test AUC | test ACC | test bal. acc | hyperplasia recall | "
          "bal. acc at argmax |")
    print("|---|---|---|---|---|---|---|---|")
    configs = sorted({(r["run"].rsplit("-s", 1)[0], r["shape"]) for r in rows}, key=lambda c: (c[1], c[0]))
    for name, shape in configs:
        mine = [r for r in rows if r["run"].rsplit("-s", 1)[0] == name and r["shape"] == shape]
        chosen = [r["test"]["val threshold"] for r in mine]
        print(f"| {name} | {shape}³ | {len(mine)} | {_cell([r['test']['auc'] for r in mine])} | "
              f"{_cell([c['accuracy'] for c in chosen])} | {_cell([c['balanced_accuracy'] for c in chosen])} | "
              f"{_cell([c['minority_recall'] for c in chosen])} | "
              f"{_cell([r['test']['argmax']['balanced_accuracy'] for r in mine])} |")
    majority = {r["majority_accuracy"] for r in rows}
    assert len(majority) == 1, "every run is scored on the same test set"
    print(f"| majority-class guess (every scan normal) | | | 0.5 | {majority.pop():.3f} | 0.500 | 0.000 | 0.500 |")


if __name__ == "__main__":
    main([Path(p) for p in sys.argv[1:]])
