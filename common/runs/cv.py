"""`python -m common cv`: every (model, fold, seed) as an ordinary run directory, then one report.

    cv/<name>/plan.json                       the command's settings; a rerun with other settings is refused
    cv/<name>/<model>/fold<i>-seed<s>/        an ordinary run directory (identity-checked by its trainer)

This module is the one place in `common` that starts the trainers: it runs `python -m torch_resnet
train` / `python -m tf_transformer train` as subprocesses (their packages are named in
common.models) and never imports them. Rerunning the same command skips finished
runs and resumes an interrupted one (the trainers resume by themselves).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from common.atomic import atomic_write_text
from common.errors import ConfigError
from common.models import MODELS, NAMES, by_name
from common.runs.config import RuntimeConfig
from common.runs.jobs import Job, Resources, add_cluster_arguments, cluster, run_jobs, trainer_threads
from common.runs.record import is_run_dir, read_record
from common.runs.typed import from_jsonable

PLAN_FILE = "plan.json"
# Trainer options that cv and tune set per job (passing them through would break the fold / seed / run-dir
# layout, or be overridden), each with the option of theirs that decides it.
RESERVED = {"--folds": "--folds", "--fold": "--folds", "--seed": "--seeds", "--run-dir": "--name",
            "--runs-root": "--cv-root", "--threads": "--cpus-per-job"}
# Options of where and how a process runs, never what it trains: a rerun may change them.
RUNTIME_OPTIONS = tuple(f"--{f.name.replace('_', '-')}" for f in fields(RuntimeConfig)) + ("--workers", "--cache-dir")


@dataclass(frozen=True)
class CVPlan:
    models: tuple[str, ...]
    folds: int
    seeds: tuple[int, ...]
    common_args: tuple[str, ...]  # data and training options for every trainer
    model_args: dict  # model -> its own extra options

    def run_dir(self, root: Path, model: str, fold: int, seed: int) -> Path:
        return root / model / f"fold{fold}-seed{seed}"

    def jobs(self, root: Path) -> list[tuple[str, int, int, Path]]:
        return [(m, f, s, self.run_dir(root, m, f, s)) for m in self.models for f in range(self.folds)
                for s in self.seeds]

    def command(self, model: str, fold: int, seed: int, run_dir: Path, *, threads: int = 0) -> list[str]:
        return by_name(model).command("train", *self.common_args, *self.model_args.get(model, ()),
                                      "--folds", str(self.folds), "--fold", str(fold), "--seed", str(seed),
                                      "--run-dir", str(run_dir), "--quiet",
                                      *(["--threads", str(threads)] if threads else []))


def add_cv_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", nargs="+", choices=sorted(NAMES), default=sorted(NAMES))
    parser.add_argument("--folds", type=int, default=5, help="subject-grouped stratified folds (default: 5)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (default: 0)")
    parser.add_argument("--name", required=True, help="cv/<name>/ holds the runs")
    parser.add_argument("--cv-root", type=Path, default=Path("cv"))
    add_cluster_arguments(parser)
    add_model_args_arguments(parser)


def add_model_args_arguments(parser: argparse.ArgumentParser) -> None:
    for model in MODELS:  # --resnet-args, --transformer-args
        parser.add_argument(f"--{model.name}-args", default="",
                            help=f"extra options for the {model.label} only (one quoted string)")


def model_args_from(args: argparse.Namespace, passthrough: list[str], *, command: str) -> dict[str, tuple[str, ...]]:
    """Each model's own options (`--<model>-args`, one quoted string), after checking that neither they nor
    the options for every trainer set what `command` (cv, tune) sets itself."""
    model_args = {}
    for model in MODELS:
        text = getattr(args, f"{model.name}_args")
        try:
            model_args[model.name] = tuple(shlex.split(text))
        except ValueError as exc:  # an unbalanced quote
            raise ConfigError(f"--{model.name}-args '{text}': {exc}") from None
    for option in (*passthrough, *(a for values in model_args.values() for a in values)):
        flag = option.split("=")[0]
        if flag in RESERVED:
            raise ConfigError(f"{option}: {command} sets it for every job from its own {RESERVED[flag]}; remove it")
    return model_args


def plan_from_args(args: argparse.Namespace, passthrough: list[str]) -> CVPlan:
    if args.folds < 2:
        raise ConfigError(f"--folds {args.folds}: cross-validation needs at least 2")
    if len(set(args.seeds)) != len(args.seeds):
        raise ConfigError(f"--seeds {args.seeds}: a seed is listed twice")
    model_args = model_args_from(args, passthrough, command="cv")
    return CVPlan(tuple(args.models), args.folds, tuple(args.seeds), tuple(passthrough),
                  {m: list(model_args[m]) for m in args.models})


def option_groups(args) -> dict[str, list[str]]:
    """["--lr", "1e-3", "--shape", "32", "32", "32", "--quiet"] -> {"--lr": ["1e-3"], "--shape": [...], "--quiet": []},
    leaving out the runtime options (RUNTIME_OPTIONS), which do not define a run."""
    groups: dict[str, list[str]] = {}
    current = None
    for token in args:
        if token.startswith("--"):
            flag, sep, value = token.partition("=")
            current = groups.setdefault(flag, [])
            if sep:
                current.append(value)
        elif current is not None:
            current.append(token)
    return {flag: values for flag, values in groups.items() if flag not in RUNTIME_OPTIONS}


def plan_differences(stored: dict, new: dict) -> list[str]:
    """What differs between two plans, option by option ("--lr: 0.001 -> 0.002"); runtime options never do."""
    out = [f"{key}: {stored.get(key)} -> {new[key]}" for key in ("models", "folds", "seeds") if stored.get(key) != new[key]]
    pairs = [("", stored.get("common_args", []), new["common_args"])]
    for model in sorted(set(stored.get("model_args", {})) | set(new["model_args"])):
        pairs.append((f" ({model} only)", stored.get("model_args", {}).get(model, []), new["model_args"].get(model, [])))
    for where, old_args, new_args in pairs:
        old, now = option_groups(old_args), option_groups(new_args)
        for flag in sorted(set(old) | set(now)):
            if old.get(flag) != now.get(flag):
                show = lambda v: "(absent)" if v is None else (" ".join(v) or "(set)")  # noqa: E731
                out.append(f"{flag}{where}: {show(old.get(flag))} -> {show(now.get(flag))}")
    return out


def check_plan(plan: CVPlan) -> None:
    """Run each model's trainer with --check-only on fold 0 (its own parser, model config and the data
    with this fold count) before anything is written: a typo or an impossible --folds fails here, once."""
    for model in plan.models:
        command = plan.command(model, 0, plan.seeds[0], Path("unused"), threads=0) + ["--check-only"]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise ConfigError(f"cv: the {by_name(model).label} trainer refuses these settings (nothing was "
                              f"written): {child_error(result.stderr)}")


def child_error(stderr: str) -> str:
    """What a failed child process said: its `error:` lines, else its last three lines."""
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    return " ".join(line.removeprefix("error: ") for line in lines if line.startswith("error:")) \
        or " | ".join(lines[-3:])


def claim_plan(root: Path, plan: CVPlan) -> None:
    """Write plan.json for a new cross-validation (after check_plan); refuse a rerun whose run-defining
    settings differ, naming each option."""
    path = root / PLAN_FILE
    new = json.loads(json.dumps(asdict(plan)))
    if path.is_file():
        stored = json.loads(path.read_text())
        differences = plan_differences(stored, new)
        if differences:
            raise ConfigError(f"{root}: this cross-validation was started with other settings "
                              f"(stored -> requested): {'; '.join(differences)}; use another --name")
        return
    check_plan(plan)
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(new, indent=1))


def read_plan(root: Path) -> CVPlan:
    """plan.json, read back typed (common.runs.typed) like a run record."""
    path = Path(root) / PLAN_FILE
    if not path.is_file():
        raise ConfigError(f"{path}: not found ({root} is not a cross-validation folder)")
    return from_jsonable(CVPlan, json.loads(path.read_text()), origin=str(path))


def is_finished(run_dir: Path) -> bool:
    return is_run_dir(run_dir) and read_record(run_dir).outcome is not None


def run_cv(root: Path, plan: CVPlan, resources: Resources, *, address: str | None = None) -> list[Path]:
    """Train every job not yet finished, as Ray tasks (common.runs.jobs), as many at once as `resources`
    allows; returns the run directories."""
    claim_plan(root, plan)
    jobs = plan.jobs(root)
    todo = [job for job in jobs if not is_finished(job[3])]
    print(f"cross-validation {root}: {len(jobs)} runs, {len(jobs) - len(todo)} already finished", flush=True)
    threads = trainer_threads(resources)
    ray_jobs = []
    for model, fold, seed, run_dir in todo:
        print(f"  {model} fold {fold} seed {seed} -> {run_dir}", flush=True)
        ray_jobs.append(Job(f"{model} fold {fold} seed {seed}", tuple(plan.command(model, fold, seed, run_dir,
                                                                                   threads=threads)),
                            run_dir.parent / f"{run_dir.name}.log"))
    with cluster(address):
        failures = run_jobs(ray_jobs, resources)
    if failures:
        raise ConfigError(f"{len(failures)} of {len(todo)} runs failed:\n  " + "\n  ".join(f.line() for f in failures)
                          + "\nfix the cause and rerun the same command: finished runs are kept")
    return [job[3] for job in jobs]
