"""`summary.json`: the results of a `results/<dataset>/` folder in one schema a program can check.

    python -m common.evaluation.summary RUN_DIR... | CV_FOLDER... --out results/<dataset>/summary.json

The schema is summary.schema.json (JSON Schema), checked before the file is written. Per model
configuration: its package, preset, model config and training options (all but the seed), whether the
folder's selection on val chose it (`selected`, from --selected),
every run's test metrics (fold, seed, accuracy, balanced accuracy, ROC AUC with bootstrap 95 % CIs), their
mean and sd, and for a cross-validation its folder and the pooled out-of-fold metrics (an entry named
after its model, plus its folder's name when the model is in several folders). Runs are grouped by that whole
configuration, so seeds of one configuration are aggregated and two configurations of one model never
are; an entry is named after its model ("Transformer") when the model has one configuration, else after
model and preset, or, if those still collide, after the model and its runs' directory name without the
seed suffix ("ResNet (resnet-lr2e-3)"), or the short configuration id. Everything is recomputed from
the runs' predictions.csv and config.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
from pathlib import Path

import numpy as np

from common.atomic import atomic_write_text
from common.errors import DataError
from common.evaluation.metrics import compute_metrics
from common.evaluation.report import check_true_classes_agree
from common.models import by_package
from common.runs.record import data_identity, read_record
from common.runs.rundir import read_predictions
from common.runs.typed import to_jsonable

SCHEMA = "volume-classifiers/summary/2"  # common/evaluation/summary.schema.json
SCHEMA_FILE = Path(__file__).with_name("summary.schema.json")
METRICS = ("accuracy", "balanced_accuracy", "roc_auc")


def _test_metrics(predictions, n_resamples: int) -> dict:
    m = compute_metrics(predictions, n_resamples=n_resamples)
    return {**{k: m[k] for k in METRICS}, "n": m["n"], "ci95": {k: list(m["ci95"][k]) for k in METRICS}}


def _aggregate(runs: list[dict]) -> tuple[dict, dict]:
    mean = {k: float(np.mean([r["test"][k] for r in runs])) for k in METRICS}
    sd = {k: float(np.std([r["test"][k] for r in runs], ddof=1)) if len(runs) > 1 else 0.0 for k in METRICS}
    return mean, sd


def _run_name(entry: dict) -> str | None:
    """The name the entry's run directories share once their seed suffix is dropped (`lr2e-3-s0`, `lr2e-3-s1`
    -> `lr2e-3`), or None when they do not share one."""
    names = {re.sub(rf"[-_]?(s|seed){run['seed']}$", "", Path(run["run_dir"]).name) for run in entry.get("runs", ())}
    return names.pop() if len(names) == 1 else None


def _label(entry: dict, entries) -> str:
    """The model's name; with its preset when the model has several configurations; when the preset does
    not tell them apart either, with the runs' shared name (`ResNet (resnet-lr2e-3)`, as a cross-validation
    entry carries its folder) if every such configuration has a distinct one, else the configuration id."""
    same_model = [e for e in entries if e["package"] == entry["package"]]
    label = by_package(entry["package"]).label
    if len(same_model) == 1:
        return label
    same_preset = [e for e in same_model if e["preset"] == entry["preset"]]
    if len(same_preset) == 1:
        return f"{label} {entry['preset']}"
    names = [_run_name(e) for e in same_preset]
    if None not in names and len(set(names)) == len(names):
        return f"{label} ({_run_name(entry)})"
    return f"{label} {entry['preset']} {entry['configuration_id']}"


def validate(summary: dict, *, origin: str = "summary.json") -> None:
    """Refuse a summary that does not follow summary.schema.json, naming the first field that does not."""
    import jsonschema

    schema = json.loads(SCHEMA_FILE.read_text())
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(summary), key=lambda e: list(e.path))
    if errors:
        where = "/".join(str(p) for p in errors[0].path) or "(top)"
        raise DataError(f"{origin}: does not follow {SCHEMA_FILE.name} at {where}: {errors[0].message}")


def mark_selected(summary: dict, selected: list[str]) -> dict:
    """`selected: true` on the entries named (by label, by cv folder name or by a run directory's name):
    the configurations the folder's selection on val chose; every other entry false."""
    wanted, found = set(selected), set()
    for label, entry in summary["models"].items():
        names = {label, Path(entry.get("cv_folder", "")).name} | {Path(r["run_dir"]).name for r in entry["runs"]}
        hits = names & wanted
        entry["selected"] = bool(hits)
        found |= hits
    missing = sorted(wanted - found)
    if missing:
        raise DataError(f"--selected {', '.join(missing)}: no such entry (entries: {', '.join(summary['models'])})")
    return summary


def summary_location(data, out_dir: Path | None) -> str:
    """The data's location without any machine's absolute path: "demo", or a path relative to the summary's
    folder (as recorded when it was relative: relative to where the run started)."""
    if data.source == "demo":
        return "demo"
    location = Path(data.location)
    if location.is_absolute():
        return os.path.relpath(location, Path(out_dir).resolve()) if out_dir is not None else location.name
    return str(location)


def summarise(paths: list[Path], *, n_resamples: int = 1000, out_dir: Path | None = None) -> dict:
    from common.evaluation.cv_report import cv_folders_among, load_cv_models

    models: dict[str, dict] = {}
    dataset = None
    cv_folders = cv_folders_among(paths)
    if cv_folders:
        plan, cv_models = load_cv_models(cv_folders)
        protocol = f"{plan.folds}-fold cross-validation, seeds {list(plan.seeds)}"
        for cv in cv_models:
            record = next(iter(cv.runs.values()))[0]
            dataset = dataset or record.data
            runs = [{"fold": fold, "seed": seed, "run_dir": str(plan.run_dir(cv.root, cv.name, fold, seed)),
                     "test": _test_metrics(pred, n_resamples)} for (fold, seed), (_, pred) in sorted(cv.runs.items())]
            mean, sd = _aggregate(runs)
            training = {k: v for k, v in to_jsonable(record.training).items() if k != "seed"}
            models[cv.label] = {"package": record.model, "preset": record.preset, "model_config": record.model_config,
                                "training": training, "cv_folder": str(cv.root), "runs": runs, "mean": mean, "sd": sd,
                                "pooled_out_of_fold": _test_metrics(cv.pooled, n_resamples)}
    else:
        protocol = "single split"
        groups: dict[str, dict] = {}
        check_true_classes_agree([(path, read_predictions(path).select("test")) for path in paths])
        for path in paths:
            record = read_record(path)
            if record.outcome is None:
                raise DataError(f"{path}: unfinished run")
            if dataset is None:
                dataset, content = record.data, data_identity(record.data)
            if (other := data_identity(record.data)) != content:
                raise DataError(f"{path}: other data than {paths[0]} (content hash {other} vs {content})")
            training = {k: v for k, v in to_jsonable(record.training).items() if k != "seed"}
            configuration = {"model_config": record.model_config, "training": training}
            key = hashlib.sha256(json.dumps([record.model, record.preset, configuration], sort_keys=True,
                                            default=str).encode()).hexdigest()[:10]
            entry = groups.setdefault(key, {"package": record.model, "preset": record.preset,
                                            "configuration_id": key, **configuration, "runs": []})
            entry["runs"].append({"fold": record.data.split.fold if record.data.split.folds else None,
                                  "seed": record.training.seed, "run_dir": str(path),
                                  "test": _test_metrics(read_predictions(path).select("test"), n_resamples)})
        for entry in groups.values():
            entry["mean"], entry["sd"] = _aggregate(entry["runs"])
            models[_label(entry, groups.values())] = entry
    if dataset is None:
        raise DataError("no runs to summarise")
    for entry in models.values():
        entry.setdefault("selected", False)  # mark_selected names the chosen ones
    return {"schema": SCHEMA, "protocol": protocol,
            "dataset": {"source": dataset.source, "location": summary_location(dataset, out_dir), "name": dataset.name,
                        "classes": list(dataset.classes), "shape": list(dataset.preprocess.shape),
                        "data_hash": dataset.data_hash, "content_hash": data_identity(dataset)},
            "models": models}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.evaluation.summary", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path, help="run directories, or cv/<name> folders (same folds, seeds and data)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--selected", nargs="+", default=[],
                        help="the entries the selection on val chose (entry label, cv folder or run directory name)")
    args = parser.parse_args(argv)
    try:
        summary = mark_selected(summarise(args.paths, n_resamples=args.bootstrap, out_dir=args.out.parent),
                                args.selected)
        validate(summary, origin=str(args.out))
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    atomic_write_text(args.out, json.dumps(summary, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
