"""`python -m common tune`: equal-budget Optuna studies whose trials run as Ray jobs."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common.errors import ConfigError
from common.tune.space import Param
from common.tune.study import TunePlan, claim_tune, run_study

ROOT = Path(__file__).resolve().parents[1]


def _plan(space=(Param("lr", "log_float", 1e-4, 3e-3),), folds=3) -> TunePlan:
    return TunePlan(models=("resnet",), folds=folds, seed=0, objective="auc", sampler_seed=0, common_args=(),
                    model_args={"resnet": []}, spaces={"resnet": [p.to_dict() for p in space]})


def test_a_param_becomes_trainer_options_and_bad_spaces_are_refused():
    assert Param("lr", "log_float", 1e-4, 1e-2).arguments(0.001) == ["--lr", "0.001"]
    assert Param("model.drop_path", "float", 0.0, 0.3).arguments(0.1) == ["--model", "drop_path=0.1"]
    assert Param("batch_size", "categorical", choices=(4, 8)).arguments(8) == ["--batch-size", "8"]
    with pytest.raises(ConfigError, match="low < high"):
        Param("lr", "log_float", 0.0, 1e-2)
    with pytest.raises(ConfigError, match="needs choices"):
        Param("x", "categorical")


def test_a_changed_search_space_is_refused_by_name(tmp_path):
    claim_tune(tmp_path, _plan())
    claim_tune(tmp_path, _plan())  # the same settings: continues
    with pytest.raises(ConfigError, match=r"search space of resnet, lr: log_float \[0.0001, 0.003\] -> "
                                          r"log_float \[0.0001, 0.01\]"):
        claim_tune(tmp_path, _plan((Param("lr", "log_float", 1e-4, 1e-2),)))
    with pytest.raises(ConfigError, match="folds: 3 -> 2"):
        claim_tune(tmp_path, _plan(folds=2))


def test_searched_options_cannot_also_be_given(monkeypatch):
    from common.tune import study

    monkeypatch.setattr(study, "space_of", lambda model: (Param("lr", "log_float", 1e-4, 3e-3),))
    with pytest.raises(ConfigError, match="--lr: searched by tune for resnet"):
        study.make_plan(("resnet",), 3, 0, "auc", 0, ("--lr", "0.01"), {})


def test_median_pruning_stops_a_trial_worse_than_the_median(tmp_path, monkeypatch):
    """Trials 0 and 1 score 0.9 on every fold; trial 2 scores 0.5 on its first fold: below the median of the
    trials before it at that fold, so it is stopped after one fold and recorded as pruned."""
    import optuna

    from common.runs.jobs import Resources
    from common.tune import study

    scripted = {0: [0.9, 0.9, 0.9], 1: [0.9, 0.9, 0.9], 2: [0.5, 0.95, 0.95]}
    trials: list[Path] = []  # each trial's folder, in the order the trials ran
    calls: list[tuple[int, int]] = []
    monkeypatch.setattr(study, "run_jobs", lambda jobs, resources: [])  # no training: the metric is scripted
    monkeypatch.setattr(study, "is_finished", lambda run_dir: False)

    def metric(run_dir, key):
        if run_dir.parent not in trials:
            trials.append(run_dir.parent)
        trial, fold = trials.index(run_dir.parent), int(run_dir.name.removeprefix("fold"))
        calls.append((trial, fold))
        return scripted[trial][fold]

    monkeypatch.setattr(study, "fold_metric", metric)
    claim_tune(tmp_path, _plan())
    result = run_study(tmp_path, _plan(), "resnet", 3, Resources(cpus=1))
    states = [t.state for t in result.trials]
    assert states == [optuna.trial.TrialState.COMPLETE] * 2 + [optuna.trial.TrialState.PRUNED]
    assert result.trials[2].user_attrs["pruned_after_folds"] == 1 and calls[-1] == (2, 0)  # one fold, then stopped
    assert result.best_value == pytest.approx(0.9)
    again = run_study(tmp_path, _plan(), "resnet", 3, Resources(cpus=1))  # the budget is spent: nothing runs
    assert len(again.trials) == 3


def _tune_command(tmp_path, cache, *extra, data=("--data", "demo")) -> list[str]:
    return [sys.executable, "-m", "common", "tune", "--name", "t", "--tune-root", str(tmp_path / "tune"),
            "--folds", "2", *data, "--shape", "16", "16", "16", "--preset", "tiny", "--epochs", "2",
            "--cache-dir", str(cache), "--precision", "fp32", "--workers", "1", *extra]


def _trials(root: Path, model: str) -> list[dict]:
    import optuna

    study = optuna.load_study(study_name=model, storage=f"sqlite:///{root / 'study.db'}")
    return [{"state": t.state.name, "params": t.params, "folder": t.user_attrs.get("folder")} for t in study.trials]


@pytest.mark.slow(minutes=7)
def test_a_tiny_study_end_to_end_continues_after_a_kill(make_manifest, tmp_path):
    """2 models x 2 folds x 2 trials on 48 tiny volumes. The first command is killed during the transformer's
    study; the same command again finishes it: every model has 2 finished trials, each parameter set trained
    once."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    manifest = make_manifest(n_subjects=48)  # 20 training volumes a fold: every batch size of the space fits
    command = _tune_command(tmp_path, tmp_path / "cache", "--models", "resnet", "transformer", "--trials", "2",
                            "--parallel", "2", data=("--data", str(manifest), "--label-column", "label"))
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)
    seen = []
    for line in first.stdout:  # kill as soon as the transformer's first trial is reported
        seen.append(line)
        if line.startswith("  transformer trial"):
            break
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert any("resnet trial" in line for line in seen), "".join(seen)[-2000:]
    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1200)
    assert second.returncode == 0, (second.stdout + second.stderr)[-3000:]
    root = tmp_path / "tune" / "t"
    for model in ("resnet", "transformer"):
        trials = _trials(root, model)
        finished = [t for t in trials if t["state"] in ("COMPLETE", "PRUNED")]
        assert len(finished) == 2, trials
        params = [json.dumps(t["params"], sort_keys=True) for t in finished]
        assert len(set(params)) == 2  # no trial twice
        folders = {p.name for p in (root / model).glob("t-*")}
        assert folders == {Path(t["folder"]).name for t in trials if t["folder"]}  # a retried trial kept its folder
    tuning = (root / "tuning.md").read_text()
    assert "## ResNet" in tuning and "## Transformer" in tuning and "Budget:" in tuning
    assert (root / "history_resnet.png").stat().st_size > 1000
    selected = json.loads((root / "selected.json").read_text())
    assert set(selected) == {"resnet", "transformer"} and "--lr" in selected["resnet"]
    report = (root / "cv" / "report" / "report.md").read_text()
    assert "corrected resampled t-test" in report
    import optuna

    for model in ("resnet", "transformer"):  # the best trial's fold runs are the cv's seed-0 runs: not retrained
        best = optuna.load_study(study_name=model, storage=f"sqlite:///{root / 'study.db'}").best_trial
        for fold in range(2):
            trial_run, cv_run = root / best.user_attrs["folder"] / f"fold{fold}", root / "cv" / model / f"fold{fold}-seed0"
            assert (cv_run / "predictions.csv").read_bytes() == (trial_run / "predictions.csv").read_bytes()
            assert not (cv_run.parent / f"{cv_run.name}.log").exists()  # no cv job ran for it
    assert second.stdout.count("not trained again") == 4
    changed = subprocess.run([*command[:-2], "--parallel", "1", "--transformer-args", "--grad-clip 1"],
                             env=env, capture_output=True, text=True)
    assert changed.returncode == 2 and "model_args" in changed.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow(minutes=2.5)
def test_tune_and_cv_on_a_two_node_ray_cluster_survive_a_stopped_node(tmp_path):
    """`ray start --head` and a second `ray start --address ...` on this machine (one CPU each). The worker
    node is killed (SIGKILL to its processes) while a job runs on each node: Ray runs the lost job again on
    the head, every job still ends, and no epoch is trained twice (the job resumes its run directory)."""
    ray = str(Path(sys.executable).with_name("ray"))
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3", "RAY_AUTH_MODE": "token"}
    env.pop("RAY_ADDRESS", None)
    # Both nodes in the foreground (--block) and in their own sessions, so that stopping them stops only
    # them (`ray stop` would stop every Ray process of the machine, other tests' local clusters too).
    head = subprocess.Popen([ray, "start", "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false",
                             "--disable-usage-stats", "--block"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    time.sleep(8)
    worker = subprocess.Popen([ray, "start", f"--address=127.0.0.1:{port}", "--num-cpus=1", "--block"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        time.sleep(8)
        command = _tune_command(tmp_path, tmp_path / "cache", "--models", "resnet", "--trials", "1", "--seeds", "0",
                                "1", "--cpus-per-job", "1", "--ray-address", f"127.0.0.1:{port}")
        command[command.index("--epochs") + 1] = "6"
        tune = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        root = tmp_path / "tune" / "t"
        deadline = time.monotonic() + 600

        def started() -> int:  # cv jobs of the best configuration (seed 1) that have finished an epoch
            return sum("epoch   1 " in log.read_text() for log in root.glob("cv/resnet/fold*-seed1.log"))

        while started() < 2 and time.monotonic() < deadline:
            time.sleep(0.5)  # one job on each node
        os.killpg(worker.pid, signal.SIGKILL)  # the worker node dies mid-run
        out, _ = tune.communicate(timeout=900)
        assert tune.returncode == 0, out[-3000:]
    finally:
        for node in (worker, head):
            node.terminate()
        for node in (worker, head):
            try:
                node.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(node.pid, signal.SIGKILL)
    from common.runs.record import read_record
    from common.runs.rundir import read_history

    runs = sorted(root.glob("cv/resnet/fold*-seed*/"))
    assert len(runs) == 4  # seed 0: the trial's runs, adopted; seed 1: two cv jobs, one on each node
    starts = 0
    for run in runs:
        assert read_record(run).outcome is not None
        assert [r["epoch"] for r in read_history(run)] == list(range(1, 7))  # each epoch once: resumed, not redone
        if run.name.endswith("seed1"):
            starts += (run.parent / f"{run.name}.log").read_text().count("(fp32: --precision fp32 given")
    assert starts == 3  # two jobs, one of them run again after its node died


def test_tune_options_reach_the_plan_and_the_study(tmp_path, monkeypatch):
    """--trials/--objective/--sampler-seed/--tune-root/--storage and the job resources, parsed by the real CLI."""
    import optuna

    from common.cli import build_parser
    from common.runs.jobs import resources_from_args
    from common.tune import study
    from common.tune.run import plan_from_args

    monkeypatch.setattr(study, "space_of", lambda model: (Param("lr", "log_float", 1e-4, 3e-3),))
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    args, passthrough = build_parser().parse_known_args([
        "tune", "--name", "x", "--tune-root", str(tmp_path / "studies"), "--models", "resnet", "--trials", "2",
        "--objective", "log_loss", "--sampler-seed", "7", "--storage", storage, "--folds", "2",
        "--cpus-per-job", "1.5", "--gpus-per-job", "0.5", "--data", "demo"])
    plan = plan_from_args(args, passthrough)
    assert (plan.objective, plan.sampler_seed, plan.folds, plan.common_args) == ("log_loss", 7, 2, ("--data", "demo"))
    resources = resources_from_args(args)
    assert (resources.cpus, resources.gpus) == (1.5, 0.5)
    monkeypatch.setattr(study, "run_jobs", lambda jobs, resources: [])
    monkeypatch.setattr(study, "is_finished", lambda run_dir: False)
    monkeypatch.setattr(study, "fold_metric", lambda run_dir, key: 0.5)
    root = args.tune_root / args.name
    claim_tune(root, plan)
    run_study(root, plan, "resnet", args.trials, resources, storage=args.storage)
    shared = optuna.load_study(study_name="resnet", storage=storage)  # the study lives where --storage says
    assert len(shared.trials) == 2 and shared.direction == optuna.study.StudyDirection.MINIMIZE
    assert not (root / "study.db").exists()


def test_the_tuning_report_lists_every_trial_with_its_state_value_and_folds():
    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial

    from common.tune.report import trials_table

    lr = {"lr": FloatDistribution(1e-4, 3e-3, log=True)}
    study = optuna.create_study(direction="maximize")
    study.add_trial(create_trial(state=TrialState.COMPLETE, value=0.91, params={"lr": 1e-3}, distributions=lr,
                                 intermediate_values={0: 0.95, 1: 0.93, 2: 0.91}))
    study.add_trial(create_trial(state=TrialState.PRUNED, params={"lr": 2e-3}, distributions=lr,
                                 intermediate_values={0: 0.88}))
    study.add_trial(create_trial(state=TrialState.FAIL, params={"lr": 5e-4}, distributions=lr))
    rows = trials_table(study, _plan())
    assert rows[0] == "| trial | state | mean val auc | folds | lr |"
    assert rows[2:5] == ["| 0 | complete | 0.9100 | 3 | 0.001 |", "| 1 | pruned | 0.8800 | 1 | 0.002 |",
                         "| 2 | fail |  | 0 | 0.0005 |"]


def test_a_finished_fold_without_metrics_is_scored_from_its_predictions(tmp_path):
    """A trainer stopped between recording its outcome and writing metrics.json (or another trial of the same
    parameters scoring the run at that moment) leaves predictions only: the study scores them, on val."""
    import numpy as np

    from common.runs.rundir import write_predictions
    from common.tune.study import fold_metric

    y = np.array([0, 1, 0, 1, 0, 1])
    right = np.eye(2)[y] * 0.8 + 0.1  # every val sample on the right side
    write_predictions(tmp_path, classes=["a", "b"], split=["val"] * 4 + ["test"] * 2, sample_ids=list("uvwxyz"),
                      subject_ids=list("uvwxyz"), y_true=y, probabilities=np.vstack([right[:4], right[4:, ::-1]]),
                      threshold=None)
    assert not (tmp_path / "metrics.json").exists()
    assert fold_metric(tmp_path, "accuracy") == 1.0  # val only: test is all wrong
    assert json.loads((tmp_path / "metrics.json").read_text())["test"]["accuracy"] == 0.0  # the trainer's file
