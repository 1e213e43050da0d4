"""`python -m common keep` / `restore`: finished runs' records copied whole into a committed folder, or not
at all, and a kept cross-validation put back so that cv trains only what is not kept."""

import json
import shutil
from dataclasses import asdict

import pytest
from conftest import fake_record
from test_report import fake_run

from common.cli import main
from common.errors import DataError
from common.evaluation.report import build_report
from common.runs.cv import PLAN_FILE, CVPlan, is_finished
from common.runs.keep import RECORD_FILES, keep_record
from common.runs.record import read_record, write_record
from common.runs.rundir import read_predictions


@pytest.fixture
def finished_run(tmp_path):
    run = tmp_path / "runs" / "resnet-s0"
    fake_run(run, model="torch_resnet", seed=0, skill=1.5)
    assert main(["score", str(run), "--no-plots", "--bootstrap", "20"]) == 0
    (run / "model.pt").write_bytes(b"weights" * 1000)  # what keep leaves behind
    (run / "state-4").mkdir()
    return run


def test_keep_copies_the_record_and_nothing_else(finished_run, tmp_path, capsys):
    into = tmp_path / "results" / "records"
    assert main(["keep", str(finished_run), "--into", str(into)]) == 0
    kept = into / "resnet-s0"
    assert f"kept: {finished_run} -> {kept} (1 finished run)" in capsys.readouterr().out
    assert sorted(p.name for p in kept.iterdir()) == sorted(RECORD_FILES)
    for name in RECORD_FILES:
        assert (kept / name).read_bytes() == (finished_run / name).read_bytes()
    assert [p.name for p in into.iterdir()] == ["resnet-s0"]  # no hidden partial folder left
    # what the results' tables read comes back the same from the kept record
    assert read_record(kept) == read_record(finished_run)
    assert (read_predictions(kept).probabilities == read_predictions(finished_run).probabilities).all()
    report = build_report([kept], tmp_path / "reports" / "kept")
    assert "balanced accuracy" in report.read_text().lower()


def test_keeping_the_same_run_again_is_a_no_op_and_another_is_refused(finished_run, tmp_path):
    into = tmp_path / "records"
    kept = keep_record(finished_run, into)
    assert keep_record(finished_run, into) == kept
    other = tmp_path / "elsewhere" / "resnet-s0"  # the same name, trained again with another result
    fake_run(other, model="torch_resnet", seed=7, skill=0.2)
    shutil.copy2(finished_run / "metrics.json", other / "metrics.json")
    before = (kept / "predictions.csv").read_bytes()
    with pytest.raises(DataError, match=r"resnet-s0: already holds another record .*predictions\.csv"):
        keep_record(other, into)
    assert (kept / "predictions.csv").read_bytes() == before


def test_an_unfinished_run_is_refused_naming_what_it_lacks(tmp_path, capsys):
    run = tmp_path / "runs" / "vit-s1"
    fake_run(run, model="tf_transformer", seed=1, skill=1.0)  # trained, never scored: no metrics.json
    into = tmp_path / "records"
    assert main(["keep", str(run), "--into", str(into)]) == 2
    err = capsys.readouterr().err
    assert "vit-s1: not a finished run (no metrics.json)" in err
    assert not into.exists()


def test_an_interrupted_copy_leaves_no_folder(finished_run, tmp_path, monkeypatch):
    copied = []

    def copy_then_fail(src, dst):
        if len(copied) == 2:
            raise OSError("disk gone")
        copied.append(dst)
        return shutil.copyfile(src, dst)

    monkeypatch.setattr("common.runs.keep.shutil.copy2", copy_then_fail)
    into = tmp_path / "records"
    with pytest.raises(OSError, match="disk gone"):
        keep_record(finished_run, into)
    assert list(into.iterdir()) == []


def _cv_folder(root, finished):
    """A cross-validation of 2 folds x 2 seeds of the ResNet with the runs `finished` done, one more begun."""
    plan = CVPlan(models=("resnet",), folds=2, seeds=(0, 1), common_args=("--data", "demo"), model_args={})
    root.mkdir(parents=True)
    (root / PLAN_FILE).write_text(json.dumps(asdict(plan), indent=1))
    jobs = plan.jobs(root)
    for index, (_, fold, seed, run_dir) in enumerate(jobs):
        if index in finished:
            fake_run(run_dir, model="torch_resnet", seed=10 * fold + seed, skill=1.0)
            assert main(["score", str(run_dir), "--no-plots", "--bootstrap", "10"]) == 0
        elif index == max(finished) + 1:  # a training under way: its record has no outcome yet
            write_record(run_dir, fake_record(outcome=False))
    return jobs


def test_a_cross_validation_is_kept_run_by_run_and_restored_where_it_stopped(tmp_path, capsys):
    cv = tmp_path / "cv" / "demo5"
    jobs = _cv_folder(cv, finished={0, 1})
    into = tmp_path / "records"
    assert main(["keep", str(cv), "--into", str(into)]) == 0
    assert "(2 finished runs)" in capsys.readouterr().out
    kept = into / "demo5"
    assert (kept / PLAN_FILE).read_bytes() == (cv / PLAN_FILE).read_bytes()
    assert sorted(p.name for p in (kept / "resnet").iterdir()) == ["fold0-seed0", "fold0-seed1"]  # unfinished left out

    # another session, another machine: runs/ is gone; the kept folder comes back and cv resumes from it
    fresh = tmp_path / "new-machine" / "cv"
    assert main(["restore", str(kept), "--cv-root", str(fresh)]) == 0
    assert "(2 runs)" in capsys.readouterr().out
    todo = [run.name for _, _, _, run in CVPlan(**json.loads((fresh / "demo5" / PLAN_FILE).read_text())).jobs(
        fresh / "demo5") if not is_finished(run)]
    assert todo == ["fold1-seed0", "fold1-seed1"]  # what cv would train
    for _, _, _, run in jobs[:2]:
        restored = fresh / "demo5" / "resnet" / run.name
        assert (restored / "predictions.csv").read_bytes() == (run / "predictions.csv").read_bytes()

    # a third run finishes there; keeping again adds it and leaves the kept ones as they were
    third = fresh / "demo5" / "resnet" / "fold1-seed0"
    fake_run(third, model="torch_resnet", seed=10, skill=1.0)
    assert main(["score", str(third), "--no-plots", "--bootstrap", "10"]) == 0
    assert main(["keep", str(fresh / "demo5"), "--into", str(into)]) == 0
    assert "(3 finished runs)" in capsys.readouterr().out
    assert (kept / "resnet" / "fold1-seed0" / "metrics.json").is_file()


def test_restore_refuses_to_replace_a_training_under_way(tmp_path, capsys):
    cv = tmp_path / "cv" / "demo5"
    _cv_folder(cv, finished={0, 1})
    keep_cv_dir = tmp_path / "records"
    assert main(["keep", str(cv), "--into", str(keep_cv_dir)]) == 0
    here = tmp_path / "here" / "demo5"
    _cv_folder(here, finished={0})  # fold0-seed1 is under way on this machine
    assert main(["restore", str(keep_cv_dir / "demo5"), "--cv-root", str(tmp_path / "here")]) == 2
    assert "fold0-seed1: an unfinished run is here" in capsys.readouterr().err
    assert not is_finished(here / "resnet" / "fold0-seed1")


def test_cv_keep_into_keeps_what_finished_before_a_failure_and_resumes_from_it(tmp_path, monkeypatch, capsys):
    from common.errors import ConfigError

    trained = []

    def fake_cv(root, plan, resources, *, address=None):  # trains one unfinished run per call, the 2nd call fails
        (root / PLAN_FILE).parent.mkdir(parents=True, exist_ok=True)
        (root / PLAN_FILE).write_text(json.dumps(asdict(plan), indent=1))
        todo = [run for _, _, _, run in plan.jobs(root) if not is_finished(run)]
        fake_run(todo[0], model="torch_resnet", seed=len(trained), skill=1.0)
        assert main(["score", str(todo[0]), "--no-plots", "--bootstrap", "10"]) == 0
        trained.append(todo[0].relative_to(root))
        if len(trained) == 2:
            raise ConfigError("1 of 2 runs failed")

    # report_cli binds build_cv_report when first imported: imported now, it keeps the real one. Imported
    # first under the patch below (by `score`), it kept the stand-in for this worker's later tests.
    import common.evaluation.report_cli  # noqa: F401

    monkeypatch.setattr("common.runs.cv.run_cv", fake_cv)
    monkeypatch.setattr("common.evaluation.cv_report.build_cv_report", lambda root, out: out / "report.md")
    into = tmp_path / "records"
    command = ["cv", "--name", "demo2", "--folds", "2", "--seeds", "0", "--models", "resnet", "--data", "demo",
               "--keep-into", str(into)]
    assert main([*command, "--cv-root", str(tmp_path / "machine1")]) == 0
    assert main([*command, "--cv-root", str(tmp_path / "machine1")]) == 2  # the second run fails
    assert "1 of 2 runs failed" in capsys.readouterr().err
    assert sorted(p.name for p in (into / "demo2" / "resnet").iterdir()) == ["fold0-seed0", "fold1-seed0"]
    # machine 1 is gone; on machine 2 the kept runs come back first, so cv has nothing left to train
    left_to_train = []
    monkeypatch.setattr("common.runs.cv.run_cv", lambda root, plan, resources, address=None: left_to_train.extend(
        run.name for _, _, _, run in plan.jobs(root) if not is_finished(run)))
    assert main([*command, "--cv-root", str(tmp_path / "machine2")]) == 0
    assert "restored 2 kept runs" in capsys.readouterr().out
    assert left_to_train == []
    assert is_finished(tmp_path / "machine2" / "demo2" / "resnet" / "fold1-seed0")
