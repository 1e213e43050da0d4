"""Which runs `predict --run-dir` averages: one run, or a cross-validation's model folder read through its
plan (cv/<name>/<model>: every fold x seed present and finished, or a refusal naming what is missing).
A plain folder of runs is never an ensemble: what happened to lie below it must not be averaged."""

from __future__ import annotations

import json
from pathlib import Path

from common.atomic import atomic_write_text
from common.errors import ConfigError
from common.models import by_package
from common.runs.cv import PLAN_FILE, read_plan
from common.runs.record import RunRecord, is_run_dir, read_record


def ensemble_members(path: Path, model: str) -> list[tuple[Path, RunRecord]]:
    """[(run directory, record)] for `predict --run-dir path` of `model` (a package name)."""
    path = Path(path)
    if is_run_dir(path):
        record = read_record(path)
        if record.model != model:
            raise ConfigError(f"--run-dir {path}: this run was trained by {record.model}; "
                              f"use python -m {record.model} predict")
        return [(path, record)]
    entry = by_package(model)
    if not (path.parent / PLAN_FILE).is_file() or path.name != entry.name:
        raise ConfigError(f"--run-dir {path}: neither a run directory nor a cross-validation's {entry.name} folder "
                          f"(cv/<name>/{entry.name}, beside its {PLAN_FILE}); a plain folder of runs is not averaged")
    plan = read_plan(path.parent)
    if entry.name not in plan.models:
        raise ConfigError(f"--run-dir {path}: the cross-validation {path.parent} has no {entry.name} runs "
                          f"(models {list(plan.models)})")
    members, missing = [], []
    for fold in range(plan.folds):
        for seed in plan.seeds:
            run_dir = plan.run_dir(path.parent, entry.name, fold, seed)
            record = read_record(run_dir) if is_run_dir(run_dir) else None
            if record is None or record.outcome is None or not (run_dir / "predictions.csv").is_file():
                missing.append(f"fold {fold} seed {seed}")
            else:
                members.append((run_dir, record))
    if missing:
        raise ConfigError(f"--run-dir {path}: the fold ensemble needs all {plan.folds * len(plan.seeds)} runs of "
                          f"its plan; missing or unfinished: {', '.join(missing)} (finish them with the same "
                          "`cv` command)")
    first = members[0][1]
    for run_dir, record in members[1:]:
        if record.data.preprocess != first.data.preprocess or record.data.classes != first.data.classes:
            raise ConfigError(f"{run_dir}: other preprocessing or classes than {members[0][0]}; "
                              "an ensemble needs the same inputs and outputs")
    return members


def ensemble_threshold(members: list[tuple[Path, RunRecord]]) -> float | None:
    """The decision threshold of these runs together (common.runs.decision): None for argmax runs."""
    from common.runs.decision import mean_threshold

    return mean_threshold([record.outcome.threshold if record.outcome else None for _, record in members],
                          where=str(members[0][0].parent))


def record_members(out: Path, members: list[tuple[Path, RunRecord]]) -> None:
    """Print the runs a prediction used, and write them beside it (<out>.members.json)."""
    names = [str(run_dir) for run_dir, _ in members]
    print(f"{'ensemble of ' + str(len(names)) + ' runs' if len(names) > 1 else 'run'}: {', '.join(names)}")
    atomic_write_text(Path(f"{out}.members.json"), json.dumps({"members": names}, indent=1) + "\n")
