"""The tuning table of the IXI cross-validations, from each fold's metrics.json (val; test for the record):
`python results/ixi_age_cv/tables.py runs/cv > results/ixi_age_cv/tables.md` (32^3), and
`python results/ixi_age_cv/tables.py runs/cv64 ixi_age_cv64 > results/ixi_age_cv64/tables.md` (64^3).

A configuration is one model in one cross-validation folder (`ixi_age_cv` holds both baselines,
`ixi_age_cv-<config>` one tuned configuration each). Selection as in results/adrenalmnist3d: the highest
val AUC, here averaged over the five folds' val sets; a tie goes to the lower mean val loss. Only val
is read to select."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from common.runs.cv import read_plan

TITLES = {"transformer": "Transformer", "resnet": "ResNet"}


def configurations(cv_root: Path, prefix: str = "ixi_age_cv") -> dict[str, list[tuple[str, list[dict]]]]:
    """model -> [(configuration name, [each fold's metrics.json])], baseline first."""
    found: dict[str, list] = {model: [] for model in TITLES}
    folders = sorted([*cv_root.glob(f"{prefix}/plan.json"), *cv_root.glob(f"{prefix}-*/plan.json")],
                     key=lambda p: (p.parent.name != prefix, p))
    for plan_file in folders:
        root, plan = plan_file.parent, read_plan(plan_file.parent)
        for model in plan.models:
            runs = [plan.run_dir(root, model, fold, seed) / "metrics.json" for fold in range(plan.folds)
                    for seed in plan.seeds]
            if all(r.is_file() for r in runs):
                name = "baseline" if root.name == prefix else root.name.removeprefix(f"{prefix}-")
                found[model].append((name, [json.loads(r.read_text()) for r in runs]))
    return found


def mean(metrics: list[dict], split: str, key: str) -> float:
    return statistics.mean(m[split][key] for m in metrics)


def mean_sd(metrics: list[dict], key: str) -> str:
    values = [m["test"][key] for m in metrics]
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def selection_key(entry: tuple[str, list[dict]]) -> tuple[float, float]:
    """Highest mean val AUC; a tie goes to the lower mean val loss. Only val is read."""
    return (-mean(entry[1], "val", "roc_auc"), mean(entry[1], "val", "log_loss"))


def main(cv_root: Path, prefix: str = "ixi_age_cv") -> None:
    for model, entries in configurations(cv_root, prefix).items():
        if not entries:
            continue
        selected = min(entries, key=selection_key)
        folds = len(entries[0][1])
        print(f"## {TITLES[model]}: the {len(entries)} configurations tuned ({folds}-fold CV, seed 0; selected on the "
              "mean val AUC, a tie on val loss)\n")
        print("| configuration | val AUC | val bal. acc | val loss | test bal. acc (mean ± sd) | test AUC (mean ± sd) "
              "| train min / fold |\n|---|---|---|---|---|---|---|")
        for entry in entries:
            name, metrics = entry
            label = f"**{name}** (selected)" if entry is selected else name
            print(f"| {label} | {mean(metrics, 'val', 'roc_auc'):.4f} | {mean(metrics, 'val', 'balanced_accuracy'):.3f} "
                  f"| {mean(metrics, 'val', 'log_loss'):.4f} | {mean_sd(metrics, 'balanced_accuracy')} "
                  f"| {mean_sd(metrics, 'roc_auc')} | {train_minutes(cv_root, prefix, name, model)} |")
        print()


def train_minutes(cv_root: Path, prefix: str, name: str, model: str) -> str:
    root = cv_root / (prefix if name == "baseline" else f"{prefix}-{name}") / model
    seconds = [json.loads(p.read_text()).get("outcome", {}).get("train_seconds") for p in root.glob("fold*/config.json")]
    seconds = [s for s in seconds if s is not None]
    return f"{statistics.mean(seconds) / 60:.1f}" if seconds else "n/a"


if __name__ == "__main__":
    main(Path(sys.argv[1]), *sys.argv[2:3])
