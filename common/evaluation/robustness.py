"""The demo robustness matrix (issue 25): does a preset learn the demo at once, on every fold, seed and
precision? For each run of the given cross-validation folders: test accuracy, and the first epoch whose
val accuracy reached 1.0 ("epochs to learn"; never: none).

    python -m common.evaluation.robustness CV_FOLDER... [--out matrix.md]

The folders are made by `python -m common cv` on the demo, one per precision
(results/demo_robustness/commands.sh); a run still training is listed as missing, not guessed.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import binomtest, quantile_test

from common.atomic import write_or_print
from common.errors import DataError
from common.models import by_name
from common.runs.cv import option_groups, read_plan
from common.runs.record import is_run_dir, read_record
from common.runs.rundir import read_history
from common.runs.typed import to_jsonable

GOAL_ACCURACY = 0.95  # every cell
GOAL_MEDIAN_EPOCHS = 5  # median epochs to learn, per model
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Cell:
    model: str  # the report label
    preset: str
    precision: str  # as resolved by the run
    fold: int
    seed: int
    test_accuracy: float | None  # None: the run is missing or unfinished
    epochs_to_learn: int | None  # None: val accuracy never reached 1.0 (or missing)


def first_perfect_epoch(history: list[dict]) -> int | None:
    return first_epoch_reaching(history, "val_accuracy", 1.0)


def first_epoch_reaching(history: list[dict], column: str, value: float) -> int | None:
    return next((int(row["epoch"]) for row in history if float(row[column]) >= value), None)


def ablation_table(run_dirs: list[Path]) -> str:
    """One row per single run (the ablation of results/demo_robustness/commands.sh): the first epoch with
    training accuracy >= 0.9, the first with val accuracy 1.0, and the selected model's test accuracy."""
    lines = ["| run | preset | model config and training (vs the first row) | train acc >= 0.9 at epoch "
             "| val acc 1.0 at epoch | test accuracy |", "|---|---|---|---|---|---|"]
    base = None
    for run_dir in run_dirs:
        record = read_record(run_dir)
        settings = {**record.model_config, **{f"--{k.replace('_', '-')}": v
                                              for k, v in to_jsonable(record.training).items()}}
        base = base or settings
        changed = ", ".join(f"{k}={v}" for k, v in settings.items() if base.get(k) != v)
        if record.outcome is None:
            raise DataError(f"{run_dir}: unfinished run")
        history = read_history(run_dir)
        test = json.loads((Path(run_dir) / "metrics.json").read_text())["test"]["accuracy"]
        train = first_epoch_reaching(history, "train_accuracy", 0.9)
        val = first_epoch_reaching(history, "val_accuracy", 1.0)
        lines.append(f"| {Path(run_dir).name} | {record.preset} | {changed or '(same)'} "
                     f"| {train or 'never'} | {val or 'never'} | {test:.3f} |")
    return "\n".join(lines) + "\n"


def planned_value(args: tuple[str, ...], flag: str, default: str) -> str:
    """The value a plan's trainer options give `flag` (the last one wins, as in argparse), for a run that
    has not written its record yet: ("--preset", "small", "--precision=bf16") -> "small", "bf16"."""
    return (option_groups(args).get(flag) or [default])[-1]


def cells_of(cv_folder: Path) -> list[Cell]:
    plan = read_plan(cv_folder)
    cells = []
    for model in plan.models:
        for fold in range(plan.folds):
            for seed in plan.seeds:
                run_dir = plan.run_dir(Path(cv_folder), model, fold, seed)
                record = read_record(run_dir) if is_run_dir(run_dir) else None
                if record is None or record.outcome is None or not (run_dir / "metrics.json").is_file():
                    planned = (*plan.common_args, *plan.model_args.get(model, ()))
                    cells.append(Cell(by_name(model).label, planned_value(planned, "--preset", "?"),
                                      planned_value(planned, "--precision", "?"), fold, seed, None, None))
                    continue
                metrics = json.loads((run_dir / "metrics.json").read_text())
                cells.append(Cell(by_name(model).label, record.preset, record.precision.resolved, fold, seed,
                                  metrics["test"]["accuracy"], first_perfect_epoch(read_history(run_dir))))
    return cells


def median_epochs_to_learn(epochs: list[int | None]) -> tuple[float, float, float]:
    """Median epochs to learn of finished runs with its distribution-free 95 % CI (order statistics,
    scipy's quantile_test). A run that never learned counts as later than every epoch (inf), not as
    absent: leaving it out would make a preset that fails often look fast. CI bounds are nan where
    the runs are too few for one (n < 6)."""
    values = np.array([math.inf if e is None else float(e) for e in epochs])
    interval = quantile_test(values, q=0, p=0.5).confidence_interval(CONFIDENCE)
    return float(np.median(values)), float(interval.low), float(interval.high)


def failure_rate_interval(failures: int, runs: int) -> tuple[float, float]:
    """Exact (Clopper-Pearson) 95 % CI of the share of runs that never learned."""
    interval = binomtest(failures, runs).proportion_ci(CONFIDENCE, method="exact")
    return interval.low, interval.high


def _epochs(value: float) -> str:
    return "never" if math.isinf(value) else f"{value:g}"


def _summary_row(model: str, precision: str, group: list[Cell]) -> str:
    done = [c for c in group if c.test_accuracy is not None]
    if not done:
        return f"| {model} | {group[0].preset} | {precision} | {len(group)} | {len(group)} | n/a | 0 / 0 | n/a | n/a |"
    median, low, high = median_epochs_to_learn([c.epochs_to_learn for c in done])
    interval = "" if math.isnan(low) else f" ({_epochs(low)}–{_epochs(high)})"
    never = sum(c.epochs_to_learn is None for c in done)
    rate_low, rate_high = failure_rate_interval(never, len(done))
    return (f"| {model} | {done[0].preset} | {precision} | {len(group)} | {len(group) - len(done)} "
            f"| {min(c.test_accuracy for c in done):.3f} | {sum(c.test_accuracy >= GOAL_ACCURACY for c in done)} "
            f"/ {len(done)} | {_epochs(median)}{interval} | {never} ({100 * rate_low:.0f}–{100 * rate_high:.0f} %) |")


def _grouped(cells: list[Cell], key) -> list[tuple[tuple, list[Cell]]]:
    groups: dict[tuple, list[Cell]] = {}
    for cell in cells:
        groups.setdefault(key(cell), []).append(cell)
    return sorted(groups.items())


def render(cells: list[Cell]) -> str:
    if not cells:
        raise DataError("no runs in the given cross-validation folders")
    lines = ["## Summary", "",
             f"Goal: every cell test accuracy >= {GOAL_ACCURACY}; median epochs to learn <= {GOAL_MEDIAN_EPOCHS} "
             "per model (first epoch with val accuracy 1.0).", "",
             "Median epochs to learn over the finished runs, a run that never learned counted as later than "
             "every epoch, with its distribution-free 95 % CI (order statistics; none under 6 runs); never "
             "learned: runs, and the exact (Clopper-Pearson) 95 % CI of their share.", "",
             "| model | preset | precision | runs | missing | min test acc | cells >= goal "
             "| median epochs to learn (95 % CI) | never learned (95 % CI) |", "|---|---|---|---|---|---|---|---|---|"]
    by_precision = _grouped(cells, lambda c: (c.model, c.preset, c.precision))  # a model may have several presets
    lines += [_summary_row(model, precision, group) for (model, _, precision), group in by_precision]
    for (model, _), group in _grouped(cells, lambda c: (c.model, c.preset)):  # the goal: every precision together
        if len({c.precision for c in group}) > 1:
            lines.append(_summary_row(model, "all", group))
    lines += ["", "## Every run", "", "| model | preset | precision | fold | seed | test accuracy | epochs to learn |",
              "|---|---|---|---|---|---|---|"]
    for c in sorted(cells, key=lambda c: (c.model, c.preset, c.precision, c.fold, c.seed)):
        accuracy = "missing" if c.test_accuracy is None else f"{c.test_accuracy:.3f}"
        epochs = "never" if c.test_accuracy is not None and c.epochs_to_learn is None else (c.epochs_to_learn or "")
        lines.append(f"| {c.model} | {c.preset} | {c.precision} | {c.fold} | {c.seed} | {accuracy} | {epochs} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.evaluation.robustness", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path, help="cv/<name> folders of the demo (or, with "
                                                                      "--ablation, single run directories)")
    parser.add_argument("--ablation", action="store_true", help="a table of single runs instead of the matrix")
    parser.add_argument("--out", type=Path, help="write the Markdown here (default: print it)")
    args = parser.parse_args(argv)
    try:
        text = (ablation_table(args.folders) if args.ablation
                else render([cell for folder in args.folders for cell in cells_of(folder)]))
    except (DataError, ValueError) as exc:
        print(f"error: {exc}")
        return 2
    write_or_print(text, args.out, "matrix")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
