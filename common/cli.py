"""`python -m common prepare | score | report`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common.errors import DataError
from common.runs.config import DataConfig
from common.runs.options import Parser, add_data_arguments, dataset_for, run_command
from common.runs.typed import from_namespace


def _print_counts(dataset) -> None:
    counts = dataset.class_counts()
    width = max(6, *(len(c) for c in dataset.classes)) + 2
    print(f"cache:  {dataset.folder}")
    print(f"splits: {dataset.splits_path} ({dataset.splits['method']}, hash {dataset.split_hash})")
    print("split  " + "".join(c.rjust(width) for c in dataset.classes) + "  total".rjust(width))
    for split, per_class in counts.items():
        print(f"{split:<7}" + "".join(str(per_class[c]).rjust(width) for c in dataset.classes)
              + str(sum(per_class.values())).rjust(width))


def main(argv=None) -> int:
    parser = Parser(prog="python -m common", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    prepare = sub.add_parser("prepare", help="preprocess and cache a dataset, write splits.json, print class counts")
    add_data_arguments(prepare)
    score = sub.add_parser("score", help="compute metrics.json (and figures) for run directories")
    score.add_argument("run_dirs", nargs="+", type=Path)
    score.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% CIs")
    score.add_argument("--no-plots", action="store_true")
    cv = sub.add_parser("cv", help="cross-validation: every (model, fold, seed) as a run, under cv/<name>/; "
                                   "other options (data, training) are passed to both trainers")
    from common.runs.cv import add_cv_arguments

    add_cv_arguments(cv)
    report = sub.add_parser("report", help="compare run directories (or report a cv/<name> folder) in "
                                           "reports/<name>/report.md and report.html")
    from common.evaluation.report import add_report_arguments

    add_report_arguments(report)
    args, passthrough = parser.parse_known_args(argv)
    if passthrough and args.command != "cv":
        parser.error(f"unrecognized arguments: {' '.join(passthrough)}")
    return run_command(lambda: _run(args, passthrough))


def _run(args: argparse.Namespace, passthrough: list[str]) -> None:
    if args.command == "cv":
        from common.runs.cv import plan_from_args, run_cv

        root = args.cv_root / args.name
        run_cv(root, plan_from_args(args, passthrough), parallel=args.parallel)
        from common.evaluation.cv_report import build_cv_report

        path = build_cv_report(root, root / "report")
        print(f"report: {path}  (and {path.with_suffix('.html')})")
    elif args.command == "prepare":
        _print_counts(dataset_for(from_namespace(DataConfig, args)))
    elif args.command == "score":
        if args.bootstrap < 1:
            raise DataError(f"--bootstrap {args.bootstrap}: must be >= 1")
        for run_dir in args.run_dirs:
            _score(run_dir, args)
    else:
        from common.evaluation.report import report_from_args

        path = report_from_args(args)
        print(f"report: {path}  (and {path.with_suffix('.html')})")


def _score(run_dir: Path, args) -> None:
    from common.evaluation.metrics import score_run
    from common.evaluation.plots import save_confusion_matrices, save_training_curves
    from common.runs.rundir import read_history

    result = score_run(run_dir, n_resamples=args.bootstrap)
    summary = {split: {k: result[split][k] for k in ("n", "accuracy", "balanced_accuracy", "roc_auc", "log_loss")}
               for split in ("val", "test") if split in result}
    print(f"{run_dir}: {json.dumps(summary)}")
    if not args.no_plots:
        if "test" in result:
            save_confusion_matrices(Path(run_dir) / "confusion_test.png",
                                    {"test": result["test"]["confusion_matrix"]}, result["classes"])
        if (Path(run_dir) / "history.csv").is_file():
            save_training_curves(Path(run_dir) / "curves.png", {Path(run_dir).name: read_history(run_dir)})
