"""The `tune` command: its options, the studies, the tuning report, then `cv` of each model's best trial."""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from common.atomic import atomic_write_text
from common.errors import ConfigError
from common.models import NAMES, by_name
from common.runs.cv import (
    CVPlan,
    add_model_args_arguments,
    check_plan,
    claim_plan,
    is_finished,
    model_args_from,
    run_cv,
)
from common.runs.jobs import add_cluster_arguments, cluster, resources_from_args
from common.tune.study import OBJECTIVES, TunePlan, best_arguments, claim_tune, make_plan, run_study


def add_tune_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", required=True, help="tune/<name>/ holds the studies, trial runs and reports")
    parser.add_argument("--tune-root", type=Path, default=Path("tune"))
    parser.add_argument("--models", nargs="+", choices=sorted(NAMES), default=sorted(NAMES))
    parser.add_argument("--trials", type=int, default=20,
                        help="finished (complete or pruned) trials per model: the same budget for each (default: "
                             "20; a rerun with more continues the study)")
    parser.add_argument("--folds", type=int, default=3, help="folds whose val sets the objective averages (default: 3)")
    parser.add_argument("--objective", choices=sorted(OBJECTIVES), default="auc",
                        help="the val metric the search maximises (log_loss: minimises) (default: auc)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="training seeds of the best configuration's cv; trials train with the first "
                             "(default: 0)")
    parser.add_argument("--sampler-seed", type=int, default=0, help="seed of the TPE sampler (default: 0)")
    parser.add_argument("--storage", default=None,
                        help="Optuna storage URL (any SQLAlchemy URL, e.g. postgresql://...) shared by workers on "
                             "many machines (default: sqlite in tune/<name>/study.db)")
    add_cluster_arguments(parser)
    add_model_args_arguments(parser)


def plan_from_args(args: argparse.Namespace, passthrough: list[str]) -> TunePlan:
    if args.trials < 1:
        raise ConfigError(f"--trials {args.trials}: must be >= 1")
    model_args = model_args_from(args, passthrough, command="tune")
    return make_plan(args.models, args.folds, args.seeds[0], args.objective, args.sampler_seed, passthrough,
                     model_args)


def run_tune(args: argparse.Namespace, passthrough: list[str]) -> Path:
    """Both studies, the tuning report, then the best configurations through cv; returns the cv report."""
    plan = plan_from_args(args, passthrough)
    resources = resources_from_args(args)
    root = args.tune_root / args.name
    check_plan(CVPlan(plan.models, plan.folds, (plan.seed,), plan.common_args, plan.model_args))
    claim_tune(root, plan)
    with cluster(args.ray_address):
        studies = {}
        for model in plan.models:
            print(f"tune {root}: {by_name(model).label}, {args.trials} trials, {plan.folds} folds, "
                  f"objective val {plan.objective}", flush=True)
            studies[model] = run_study(root, plan, model, args.trials, resources, parallel=resources.at_once or 1,
                                       storage=args.storage)
        from common.tune.report import write_tuning_report

        tuning = write_tuning_report(root, plan, studies)
        print(f"tuning report: {tuning}")
        # The best trial of each model through cv, with every seed: only here is test read, once.
        best = {m: [*plan.model_args[m], *best_arguments(plan, studies[m], m)] for m in plan.models}
        cv_plan = CVPlan(plan.models, plan.folds, tuple(args.seeds), plan.common_args, best)
        claim_plan(root / "cv", cv_plan)
        adopt_best_trial_runs(root, plan, studies, cv_plan)
        run_cv(root / "cv", cv_plan, resources, address=args.ray_address)
    from common.evaluation.cv_report import build_cv_report

    report = build_cv_report(root / "cv", root / "cv" / "report")
    atomic_write_text(root / "selected.json", json.dumps(best, indent=1))
    return report


def adopt_best_trial_runs(root: Path, plan: TunePlan, studies: dict, cv_plan: CVPlan) -> list[Path]:
    """The best trial trained every fold with the trials' seed and exactly the options cv gives that seed's
    runs, so those runs are the cv's: copied in (whole, then renamed into place), not trained again. Test was
    written by each run but never read by the study; the cv report reads it once. Returns the runs adopted."""
    adopted = []
    if plan.seed not in cv_plan.seeds:
        return adopted
    for model in plan.models:
        trial_folder = root / studies[model].best_trial.user_attrs["folder"]
        for fold in range(plan.folds):
            source, target = trial_folder / f"fold{fold}", cv_plan.run_dir(root / "cv", model, fold, plan.seed)
            if target.exists() or not is_finished(source):
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
            try:
                shutil.copytree(source, staging, dirs_exist_ok=True)
                staging.rename(target)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            print(f"  {model} fold {fold} seed {plan.seed}: the best trial's run ({source.relative_to(root)}), "
                  "not trained again", flush=True)
            adopted.append(target)
    return adopted
