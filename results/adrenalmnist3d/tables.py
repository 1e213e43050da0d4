"""Tuning and ablation tables of the AdrenalMNIST3D runs, from each run's metrics.json (val, and test
for the record) and config.json: `python results/adrenalmnist3d/tables.py runs/adrenal > tables.md`."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def row(run: Path, selected: Path) -> str:
    metrics = json.loads((run / "metrics.json").read_text())
    record = json.loads((run / "config.json").read_text())
    seconds = record.get("outcome", {}).get("train_seconds", float("nan"))
    val, test = metrics["val"], metrics["test"]
    name = f"**{run.name}** (selected)" if run == selected else run.name
    return (f"| {name} | {val['roc_auc']:.4f} | {val['balanced_accuracy']:.3f} | {val['log_loss']:.4f} | "
            f"{test['roc_auc']:.3f} | {test['accuracy']:.3f} | {test['balanced_accuracy']:.3f} | {seconds / 60:.1f} |")


def selection_key(run: Path) -> tuple[float, float]:
    """Highest val AUC; a tie goes to the lower val loss. Only val is read."""
    val = json.loads((run / "metrics.json").read_text())["val"]
    return (-val["roc_auc"], val["log_loss"])


def main(root: Path) -> None:
    header = ["| run | val AUC | val bal. acc | val loss | test AUC | test ACC | test bal. acc | train min |",
              "|---|---|---|---|---|---|---|---|"]
    runs = sorted(p for p in root.iterdir() if (p / "metrics.json").is_file())
    for title, prefix in (("Transformer", "vit-"), ("ResNet", "resnet-")):
        tuned = [r for r in runs if r.name.startswith(prefix) and r.name.endswith("-s0")]
        selected = min(tuned, key=selection_key)
        print(f"## {title}: the {len(tuned)} configurations tuned (seed 0; selected on val AUC, a tie on val loss)\n")
        print("\n".join(header + [row(r, selected) for r in tuned]) + "\n")
    print("## Seeds 0, 1, 2 of the configurations run three times (test: mean ± sd over seeds)\n")
    configs = sorted({r.name.rsplit("-s", 1)[0] for r in runs if not r.name.endswith("-s0")})
    print("| configuration | seeds | test AUC | test ACC | test bal. acc |\n|---|---|---|---|---|")
    for config in configs:
        tests = [json.loads((r / "metrics.json").read_text())["test"] for r in runs if r.name.rsplit("-s", 1)[0] == config]
        cells = []
        for key in ("roc_auc", "accuracy", "balanced_accuracy"):
            values = [t[key] for t in tests]
            spread = statistics.stdev(values) if len(values) > 1 else float("nan")
            cells.append(f"{statistics.mean(values):.3f} ± {spread:.3f} ({', '.join(f'{v:.3f}' for v in values)})")
        print(f"| {config} | {len(tests)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
