"""`python -m common prepare | score | cv | report | explain | export | predict | check-maps`."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from common.errors import DataError
from common.runs.config import DataConfig
from common.runs.options import Parser, add_data_arguments, add_scan_arguments, dataset_for, run_command
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
    return run_command(lambda: _dispatch(argv))  # the parser's defaults read the environment too


def build_parser() -> argparse.ArgumentParser:
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
    cv.add_argument("--keep-into", type=Path, help="a committed folder of kept records (python -m common keep): "
                    "restore DIR/<name> from it first, keep every finished run into it at the end (also after a "
                    "failure), so the cross-validation can go on on another machine")
    report = sub.add_parser("report", help="compare run directories (or report a cv/<name> folder) in "
                                           "reports/<name>/report.md and report.html")
    from common.evaluation.report_cli import add_report_arguments

    add_report_arguments(report)
    explain = sub.add_parser("explain", help="saliency maps for a trained run: forwards to the package that "
                                             "trained it (python -m torch_resnet|tf_transformer explain)")
    from common.explain.options import add_explain_arguments

    add_explain_arguments(explain)
    explain.add_argument("--device", choices=("auto", "cpu", "cuda"), help="ResNet runs only (default: auto)")
    tune = sub.add_parser("tune", help="equal-budget Optuna search per model on the same folds (val only), then cv "
                                       "of each model's best configuration; other options go to both trainers")
    from common.tune.run import add_tune_arguments

    add_tune_arguments(tune)
    export = sub.add_parser("export", help="a run or a cross-validation's model folder as an ONNX bundle that "
                                           "predicts without torch or TensorFlow")
    export.add_argument("run_dir", type=Path, help="a finished run directory, or cv/<name>/<model> (a fold ensemble)")
    export.add_argument("--out", type=Path, required=True, help="the bundle folder to create")
    predict = sub.add_parser("predict", help="class probabilities for NIfTI files from a bundle (onnxruntime only)")
    predict.add_argument("--bundle", type=Path, required=True, help="a folder made by `export`")
    add_scan_arguments(predict)
    keep = sub.add_parser("keep", help="copy finished runs' records (config.json, history.csv, predictions.csv, "
                                       "metrics.json; no weights) into a folder that is committed, so that a "
                                       "result set made over several sessions outlives each machine's runs/")
    keep.add_argument("paths", nargs="+", type=Path,
                      help="finished run directories, or cv/<name> folders (plan.json and every finished run)")
    keep.add_argument("--into", type=Path, required=True, help="the folder that gets <run or cv name>/ for each")
    restore = sub.add_parser("restore", help="put a kept cross-validation back under a cv root: rerunning its cv "
                                             "command then trains only the runs that are not kept")
    restore.add_argument("kept", nargs="+", type=Path, help="kept cross-validation folders (made by keep)")
    restore.add_argument("--cv-root", type=Path, default=Path("cv"), help="where cv/<name> goes (default: cv)")
    checks = sub.add_parser("check-maps", help="score saliency maps: the pointing game against lesion masks and "
                                               "the weight-randomisation sanity check, per run x method")
    checks.add_argument("run_dirs", nargs="+", type=Path, help="runs with explain/<method>[-random] outputs")
    checks.add_argument("--lesions", type=Path, help="CSV sample_id,path of masks on the scans' grids "
                                                      "(default for demo runs: the demo's own lesions.csv)")
    checks.add_argument("--out", type=Path, required=True, help="folder for checks.md and checks.json")
    return parser


def _dispatch(argv):
    parser = build_parser()
    args, passthrough = parser.parse_known_args(argv)
    if passthrough and args.command not in ("cv", "tune"):
        parser.error(f"unrecognized arguments: {' '.join(passthrough)}")
    if args.command == "explain":
        return _forward_explain(args, list(sys.argv[1:] if argv is None else argv))
    return _run(args, passthrough)


def _forward_explain(args: argparse.Namespace, argv: list[str]) -> int:
    """Run the trainer's own `explain` (common imports no deep-learning framework) in a child process."""
    from common.errors import ConfigError
    from common.models import MODELS, by_package
    from common.runs.record import is_run_dir, read_record

    if not is_run_dir(args.run_dir):
        raise ConfigError(f"--run-dir {args.run_dir}: not a run directory (no config.json)")
    model = by_package(read_record(args.run_dir).model)
    if args.device and not model.explain_device:
        takes = [m.label for m in MODELS if m.explain_device]
        raise ConfigError(f"--device: only {', '.join(takes)} runs take it; {args.run_dir} was trained by {model.package}")
    forwarded = list(argv)
    forwarded.remove("explain")
    return subprocess.call(model.command("explain", *forwarded))


def _run(args: argparse.Namespace, passthrough: list[str]) -> None:
    if args.command == "cv":
        from common.runs.cv import plan_from_args, run_cv

        root = args.cv_root / args.name
        from common.runs.jobs import resources_from_args

        plan = plan_from_args(args, passthrough)
        if args.keep_into is None:
            run_cv(root, plan, resources_from_args(args), address=args.ray_address)
        else:
            from common.runs.keep import keeping

            with keeping(root, args.keep_into):
                run_cv(root, plan, resources_from_args(args), address=args.ray_address)
        from common.evaluation.cv_report import build_cv_report

        path = build_cv_report(root, root / "report")
        print(f"report: {path}  (and {path.with_suffix('.html')})")
    elif args.command == "tune":
        from common.tune.run import run_tune

        path = run_tune(args, passthrough)
        print(f"report: {path}  (and {path.with_suffix('.html')})")
    elif args.command == "check-maps":
        from common.explain.checks import check_runs

        path = check_runs(args.run_dirs, lesions=args.lesions, out=args.out)
        print(path.read_text(), end="")
    elif args.command == "keep":
        from common.runs.keep import keep

        for path in args.paths:
            kept = keep(path, args.into)
            print(f"kept: {path} -> {args.into / path.name} ({len(kept)} finished run{'s' * (len(kept) != 1)})")
    elif args.command == "restore":
        from common.runs.keep import restore_cv

        for kept in args.kept:
            restored = restore_cv(kept, args.cv_root)
            print(f"restored: {kept} -> {args.cv_root / kept.name} ({len(restored)} run{'s' * (len(restored) != 1)})")
    elif args.command == "export":
        from common.export.bundle import export_bundle

        print(f"bundle: {export_bundle(args.run_dir, args.out)}")
    elif args.command == "predict":
        from common.export.runner import predict_with_bundle
        from common.runs.options import check_predict_arguments

        check_predict_arguments(args)
        out = predict_with_bundle(args.bundle, args.inputs, args.manifest, args.out, batch_size=args.batch_size,
                                  workers=args.workers)
        print(f"probabilities: {out}")
    elif args.command == "prepare":
        _print_counts(dataset_for(from_namespace(DataConfig, args)))
    elif args.command == "score":
        if args.bootstrap < 1:
            raise DataError(f"--bootstrap {args.bootstrap}: must be >= 1")
        for run_dir in args.run_dirs:
            _score(run_dir, args)
    else:
        from common.evaluation.report_cli import report_from_args

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
