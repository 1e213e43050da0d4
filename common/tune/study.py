"""One Optuna study per model: the same folds, the same trial budget, the mean val metric over the folds.

    tune/<name>/tune.json                      the command's settings; a rerun with other settings is refused
    tune/<name>/study.db                       Optuna's SQLite storage (or --storage URL): one study per model
    tune/<name>/<model>/t-<params hash>/fold<i>/   each trial's fold runs (ordinary run directories)
    tune/<name>/cv/                             the best configuration of each model through `cv` (test read once)

A trial's folds run one after another as Ray jobs (several trials at once with --parallel); after each
fold the running mean is reported to Optuna's MedianPruner, which stops a trial worse than the median of
the trials before it at the same fold. Only val is read while tuning. Run folders are named by the
trial's parameters, so a trial that Optuna retries after a kill continues its runs instead of training
them again, and a rerun of the same command continues the study: seeded TPE, no duplicate trials.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

from common.atomic import atomic_write_text
from common.errors import ConfigError
from common.evaluation.metrics import score_run
from common.models import ModelEntry, by_name
from common.runs.cv import is_finished
from common.runs.jobs import Job, Resources, run_jobs, trainer_threads
from common.runs.typed import flag
from common.tune.space import MODEL_PREFIX, Param, space_of

TUNE_FILE = "tune.json"
# objective name -> (metrics.json key of the val split, direction)
OBJECTIVES = {"auc": ("roc_auc", "maximize"), "balanced_accuracy": ("balanced_accuracy", "maximize"),
              "accuracy": ("accuracy", "maximize"), "log_loss": ("log_loss", "minimize")}
HEARTBEAT_SECONDS, GRACE_SECONDS = 10, 30  # a trial silent for GRACE is a killed one: retried with its params


@dataclass(frozen=True)
class TunePlan:
    models: tuple[str, ...]
    folds: int
    seed: int  # the training seed of every trial (cv then runs the best with all --seeds)
    objective: str
    sampler_seed: int
    common_args: tuple[str, ...]  # data and training options for every trainer
    model_args: dict  # model -> its own fixed extra options
    spaces: dict  # model -> [Param as dict]: what is searched

    def space(self, model: str) -> tuple[Param, ...]:
        return tuple(Param(**p) for p in self.spaces[model])


def make_plan(models, folds: int, seed: int, objective: str, sampler_seed: int, common_args, model_args) -> TunePlan:
    if folds < 2:
        raise ConfigError(f"--folds {folds}: the objective is the mean over at least 2 folds' val sets")
    if objective not in OBJECTIVES:
        raise ConfigError(f"--objective {objective}: one of {sorted(OBJECTIVES)}")
    spaces = {m: [p.to_dict() for p in space_of(by_name(m))] for m in models}
    for model, space in spaces.items():
        searched = {flag(p["name"]) for p in space if not p["name"].startswith(MODEL_PREFIX)}
        given = {a.split("=")[0] for a in (*common_args, *model_args.get(model, ())) if a.startswith("--")}
        clash = sorted(searched & given)
        if clash:
            raise ConfigError(f"{', '.join(clash)}: searched by tune for {model}; remove it from the command")
    return TunePlan(tuple(models), folds, seed, objective, sampler_seed, tuple(common_args),
                    {m: list(model_args.get(m, ())) for m in models}, spaces)


def claim_tune(root: Path, plan: TunePlan) -> None:
    """Write tune.json, or refuse a rerun whose settings differ (each named). The trial budget may grow."""
    path = root / TUNE_FILE
    new = json.loads(json.dumps(asdict(plan)))
    if path.is_file():
        stored = json.loads(path.read_text())
        differences = [f"{key}: {stored.get(key)} -> {new[key]}" for key in new
                       if key != "spaces" and stored.get(key) != new[key]]
        differences += space_differences(stored.get("spaces", {}), new["spaces"])
        if differences:
            raise ConfigError(f"{root}: this study was started with other settings (stored -> requested): "
                              f"{'; '.join(differences)}; use another --name")
        return
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(new, indent=1))


def space_differences(stored: dict, new: dict) -> list[str]:
    """Each searched parameter that was added, removed or changed, by model and name."""
    out = []
    for model in sorted(set(stored) | set(new)):
        old_params = {p["name"]: p for p in stored.get(model, [])}
        new_params = {p["name"]: p for p in new.get(model, [])}
        for name in sorted(set(old_params) | set(new_params)):
            a, b = old_params.get(name), new_params.get(name)
            if a != b:
                show = lambda p: "absent" if p is None else (  # noqa: E731
                    f"{p['kind']} {list(p['choices'])}" if p["kind"] == "categorical"
                    else f"{p['kind']} [{p['low']}, {p['high']}]")
                out.append(f"search space of {model}, {name}: {show(a)} -> {show(b)}")
    return out


def storage_for(root: Path, url: str | None):
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats: stable since 2.9
        storage = RDBStorage(url or f"sqlite:///{(root / 'study.db').absolute()}",
                             heartbeat_interval=HEARTBEAT_SECONDS, grace_period=GRACE_SECONDS,
                             heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=2))
    return storage, optuna


def trial_folder(root: Path, model: str, values: dict) -> Path:
    """The folder of a trial's runs, named by its parameters (a retried trial finds its runs)."""
    digest = hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:10]
    return root / model / f"t-{digest}"


def fold_metric(run_dir: Path, key: str) -> float:
    """The val metric of a finished fold run (metrics.json; test is never read here). A finished run
    without metrics.json (its trainer stopped between recording the outcome and scoring, or another trial of
    the same parameters is scoring it right now) is scored here from its predictions: the same file."""
    path = run_dir / "metrics.json"
    metrics = json.loads(path.read_text()) if path.is_file() else score_run(run_dir)
    value = metrics["val"][key]
    if value is None:
        raise ConfigError(f"{run_dir}/metrics.json: val {key} is undefined (one class in val?)")
    return float(value)


class Objective:
    """One model's trials: suggest, run the folds as Ray jobs, report each fold's running mean, prune."""

    def __init__(self, root: Path, plan: TunePlan, model: ModelEntry, resources: Resources):
        self.root, self.plan, self.model, self.resources = root, plan, model, resources
        self.space = plan.space(model.name)
        self.key, _ = OBJECTIVES[plan.objective]

    def command(self, values: dict, fold: int, run_dir: Path) -> tuple[str, ...]:
        searched = [a for p in self.space for a in p.arguments(values[p.name])]
        return tuple(self.model.command("train", *self.plan.common_args, *self.plan.model_args[self.model.name],
                                        *searched, "--folds", str(self.plan.folds), "--fold", str(fold),
                                        "--seed", str(self.plan.seed), "--run-dir", str(run_dir), "--quiet",
                                        "--threads", str(trainer_threads(self.resources))))

    def __call__(self, trial) -> float:
        import optuna

        values = {p.name: p.suggest(trial) for p in self.space}
        folder = trial_folder(self.root, self.model.name, values)
        trial.set_user_attr("folder", str(folder.relative_to(self.root)))
        scores = []
        for fold in range(self.plan.folds):
            run_dir = folder / f"fold{fold}"
            if not is_finished(run_dir):
                job = Job(f"{self.model.name} trial {trial.number} fold {fold}", self.command(values, fold, run_dir),
                          folder / f"fold{fold}.log")
                failures = run_jobs([job], self.resources)
                if failures:
                    raise ConfigError(failures[0].line())
            scores.append(fold_metric(run_dir, self.key))
            mean = sum(scores) / len(scores)
            trial.report(mean, step=fold)
            if fold < self.plan.folds - 1 and trial.should_prune():
                trial.set_user_attr("pruned_after_folds", fold + 1)
                raise optuna.TrialPruned()
        return sum(scores) / len(scores)


def run_study(root: Path, plan: TunePlan, model_name: str, trials: int, resources: Resources, *,
              parallel: int = 1, storage: str | None = None):
    """Run `model_name`'s study until it has `trials` finished (complete or pruned) trials, its jobs on the
    Ray cluster the caller connected (common.runs.jobs.cluster); returns it."""
    store, optuna = storage_for(root, storage)
    _, direction = OBJECTIVES[plan.objective]
    sampler = optuna.samplers.TPESampler(seed=plan.sampler_seed + sum(map(ord, model_name)), constant_liar=True)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=model_name, storage=store, direction=direction, sampler=sampler,
                                pruner=pruner, load_if_exists=True)
    _wait_out_stale_trials(study, optuna)
    objective = Objective(root, plan, by_name(model_name), resources)
    while True:
        done = _finished(study, optuna)
        if done >= trials:
            return study
        # Failed trials (a run that failed) are listed, not retried forever: at most `trials` attempts more.
        study.optimize(objective, n_trials=trials - done, n_jobs=parallel, catch=(ConfigError,),
                       callbacks=[_progress(model_name, trials, optuna)])
        if _finished(study, optuna) == done:  # nothing finished in a whole round: every attempt failed
            failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
            raise ConfigError(f"{model_name}: every trial of this round failed; first: "
                              f"{failed[-1].system_attrs.get('fail_reason', '?') if failed else '?'}")


def _finished(study, optuna) -> int:
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return len(study.get_trials(deepcopy=False, states=states))


def _wait_out_stale_trials(study, optuna) -> None:
    """Trials left RUNNING by a killed tune stop beating their heartbeat; once the grace period has
    passed Optuna fails them and queues each again with its parameters (RetryFailedTrialCallback)."""
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    if not running:
        return
    print(f"{study.study_name}: {len(running)} trial(s) of an earlier process still marked running; "
          f"waiting up to {GRACE_SECONDS} s for their heartbeat", flush=True)
    deadline = time.monotonic() + GRACE_SECONDS + HEARTBEAT_SECONDS
    while time.monotonic() < deadline:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # stable since 2.9
            optuna.storages.fail_stale_trials(study)
        if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            return
        time.sleep(2)


def _progress(model_name: str, trials: int, optuna):
    def report(study, trial):
        state = trial.state.name.lower()
        value = "" if trial.value is None else f" {trial.value:.4f}"
        print(f"  {model_name} trial {trial.number}: {state}{value}  ({_finished(study, optuna)}/{trials})",
              flush=True)
    return report


def best_arguments(plan: TunePlan, study, model_name: str) -> list[str]:
    """The trainer options of the study's best trial."""
    values = study.best_trial.params
    return [a for p in plan.space(model_name) for a in p.arguments(values[p.name])]
