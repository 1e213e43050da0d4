"""`python -m common report`: its options, and which report (runs or cross-validation folders) they ask for.
Kept apart from report.py so that the single-run report and the cross-validation report import each
other in one direction only (cv_report -> report)."""

from __future__ import annotations

import argparse
from pathlib import Path

from common.evaluation.cv_report import build_cv_report, cv_folders_among
from common.evaluation.report import build_report, find_latest_runs


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dirs", nargs="*", type=Path,
                        help="run directories (default: the latest transformer and ResNet runs under --runs-root)")
    parser.add_argument("--runs-root", type=Path, default=Path("runs"))
    parser.add_argument("--name", default="latest", help="reports/<name>/ (default: latest)")
    parser.add_argument("--out-root", type=Path, default=Path("reports"))
    parser.add_argument("--title", default="Model comparison")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default: 1000)")


def report_from_args(args: argparse.Namespace) -> Path:
    cv_folders = cv_folders_among(args.run_dirs)
    if cv_folders:
        out_dir = cv_folders[0] / "report" if args.name == "latest" and len(cv_folders) == 1 \
            else args.out_root / args.name
        return build_cv_report(cv_folders, out_dir, n_resamples=args.bootstrap,
                               title=args.title if args.title != "Model comparison" else "Cross-validation")
    run_dirs = args.run_dirs or find_latest_runs(args.runs_root)
    return build_report(run_dirs, args.out_root / args.name, title=args.title, n_resamples=args.bootstrap)
