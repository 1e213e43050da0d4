"""Run directories that cannot be silently wrong: identity on resume, ownership, the lock, bad options."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from common.runs.lock import RunLock
from common.runs.record import read_record
from common.runs.rundir import read_history
from torch_resnet.cli import main as resnet_main

ROOT = Path(__file__).resolve().parents[1]


def resnet_args(manifest, cache_root, run_dir, *extra):
    return ["train", "--data", str(manifest), "--label-column", "label", "--shape", "16", "16", "16",
            "--preset", "tiny", "--batch-size", "4", "--epochs", "1", "--cache-dir", str(cache_root),
            "--run-dir", str(run_dir), "--workers", "1", "--quiet", "--precision", "fp32", *extra]


def snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture
def trained(make_manifest, cache_root, tmp_path):
    """A finished one-epoch ResNet run on 20 subjects; returns (manifest, run_dir)."""
    manifest = make_manifest(n_subjects=20)
    run_dir = tmp_path / "run"
    assert resnet_main(resnet_args(manifest, cache_root, run_dir)) == 0
    return manifest, run_dir


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.mark.parametrize("extra, field", [
    (("--split-seed", "7"), "split_hash"),
    (("--classes", "b", "a"), "classes: ['a', 'b'] -> ['b', 'a']"),
    (("--lr", "0.01"), "training.lr: 0.001 -> 0.01"),
    (("--no-augment",), "training.augment: True -> False"),
    (("--class-weights",), "training.class_weights"),
    (("--preset", "small"), "preset: tiny -> small"),
    (("--epochs", "1", "--seed", "3"), "training.seed: 0 -> 3"),
])
def test_resume_with_other_settings_is_refused_and_writes_nothing(trained, cache_root, capsys, extra, field):
    manifest, run_dir = trained
    before = snapshot(run_dir)
    capsys.readouterr()
    assert resnet_main(resnet_args(manifest, cache_root, run_dir, *extra)) == 2
    line = one_error_line(capsys)
    assert "cannot resume" in line and field in line
    assert snapshot(run_dir) == before


def test_resume_on_other_data_is_refused(trained, make_manifest, cache_root, tmp_path, capsys):
    _, run_dir = trained
    manifest = make_manifest(n_subjects=24)  # rewrites the same folder: other files, other data hash
    capsys.readouterr()
    assert resnet_main(resnet_args(manifest, cache_root, run_dir)) == 2
    assert "data: " in one_error_line(capsys)


def test_lowering_epochs_is_refused_raising_them_continues(trained, cache_root, capsys):
    manifest, run_dir = trained
    assert resnet_main(resnet_args(manifest, cache_root, run_dir, "--epochs", "3")) == 0
    out = capsys.readouterr().out
    assert "resuming" in out and "after epoch 1" in out
    assert [r["epoch"] for r in read_history(run_dir)] == [1, 2, 3]
    assert read_record(run_dir).training.epochs == 3 and read_record(run_dir).outcome.epochs_run == 3
    assert resnet_main(resnet_args(manifest, cache_root, run_dir, "--epochs", "2")) == 2
    assert "training.epochs: 3 -> 2 (may only be raised)" in one_error_line(capsys)


def test_same_command_on_a_finished_run_only_repeats_the_final_predictions(trained, cache_root):
    manifest, run_dir = trained
    weights = (run_dir / "model.pt").read_bytes()
    assert resnet_main(resnet_args(manifest, cache_root, run_dir)) == 0
    assert (run_dir / "model.pt").read_bytes() == weights
    assert [r["epoch"] for r in read_history(run_dir)] == [1]


def test_the_other_trainer_refuses_the_run_dir(trained, cache_root, capsys):
    from tf_transformer.cli import main as vit_main

    manifest, run_dir = trained
    before = snapshot(run_dir)
    capsys.readouterr()
    assert vit_main(resnet_args(manifest, cache_root, run_dir)) == 2
    assert "trained by torch_resnet, not tf_transformer" in one_error_line(capsys)
    assert vit_main(["predict", "--run-dir", str(run_dir), "--manifest", str(manifest),
                     "--out", str(run_dir.parent / "p.csv")]) == 2
    assert "trained by torch_resnet" in one_error_line(capsys)
    assert snapshot(run_dir) == before


def test_a_folder_that_is_not_a_run_is_refused(make_manifest, cache_root, tmp_path, capsys):
    manifest = make_manifest(n_subjects=12)
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("my own files")
    assert resnet_main(resnet_args(manifest, cache_root, folder)) == 2
    assert "not a run directory" in one_error_line(capsys)
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]


def test_a_run_dir_in_use_is_refused(make_manifest, cache_root, tmp_path, capsys):
    manifest = make_manifest(n_subjects=12)
    run_dir = tmp_path / "busy"
    run_dir.mkdir()
    with RunLock(run_dir):
        assert resnet_main(resnet_args(manifest, cache_root, run_dir)) == 2
        line = one_error_line(capsys)
        assert "in use" in line and f"PID {os.getpid()}" in line
    assert resnet_main(resnet_args(manifest, cache_root, run_dir)) == 0  # free again once released


def test_a_lock_planted_as_a_symbolic_link_is_never_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / ".lock").symlink_to(victim)
    with pytest.raises(Exception, match=r"\.lock: is a symbolic link"):
        RunLock(run_dir).acquire()
    assert victim.read_text() == "precious"  # not truncated, no PID written
    (run_dir / ".lock").unlink()
    os.mkfifo(run_dir / ".lock")
    with pytest.raises(Exception, match="not a regular file"):
        RunLock(run_dir).acquire()


def test_two_trainings_on_one_new_run_dir_cannot_both_start(make_manifest, cache_root, tmp_path, capsys,
                                                             monkeypatch):
    """The lock is taken before new-or-resume is decided: a second training started on the same new
    --run-dir while the first is deciding (here: its precision) is refused, and the first trains on."""
    import common.runs.driver as driver

    manifest = make_manifest(n_subjects=12)
    run_dir = tmp_path / "new" / "run"
    decide = driver.decide_precision
    second = []

    def decide_while_another_starts(*args, **kwargs):
        if not second:
            second.append(resnet_main(resnet_args(manifest, cache_root, run_dir, "--lr", "0.05")))
        return decide(*args, **kwargs)

    monkeypatch.setattr(driver, "decide_precision", decide_while_another_starts)
    assert resnet_main(resnet_args(manifest, cache_root, run_dir)) == 0
    assert second == [2]
    assert "in use by a training still running" in capsys.readouterr().err
    assert read_record(run_dir).training.lr == 0.001


def test_a_refused_new_run_dir_is_removed_again(make_manifest, cache_root, tmp_path, capsys, monkeypatch):
    import common.runs.driver as driver
    from common.errors import ConfigError

    def refuse(*args, **kwargs):
        raise ConfigError("no precision here")

    monkeypatch.setattr(driver, "decide_precision", refuse)
    run_dir = tmp_path / "fresh"
    assert resnet_main(resnet_args(make_manifest(n_subjects=12), cache_root, run_dir)) == 2
    assert "no precision here" in one_error_line(capsys)
    assert not run_dir.exists()


def test_a_lock_of_a_killed_process_is_not_stale(tmp_path):
    code = ("import sys, time; from common.runs.lock import RunLock; RunLock(sys.argv[1]).acquire(); "
            "print('locked', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(Exception, match="in use"):
        RunLock(tmp_path).acquire()
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    lock = RunLock(tmp_path).acquire()  # the kernel dropped the dead owner's lock
    lock.release()
    assert not (tmp_path / ".lock").exists()


@pytest.mark.parametrize("extra, message", [
    (("--epochs", "0"), "--epochs 0: must be >= 1"),
    (("--batch-size", "0"), "--batch-size 0: must be >= 1"),
    (("--lr", "-1"), "--lr -1.0: must be > 0"),
    (("--shape", "4", "4", "4"), "input_shape (4, 4, 4): too small"),
    (("--flip-axes", "3"), "flip_axes (3,)"),
    (("--split-ratios", "0.5", "0.5", "0.5"), "split ratios"),
    (("--threads", "-2"), "--threads -2: must be >= 0"),
    (("--model", "input_shape=[64, 64, 64]"), "input_shape comes from the data (--shape"),
    (("--model", "num_classes=3"), "num_classes comes from the data"),
])
def test_bad_values_end_with_one_error_line_before_any_output(make_manifest, cache_root, tmp_path, capsys,
                                                              extra, message):
    manifest = make_manifest(n_subjects=12)
    run_dir = tmp_path / "never"
    assert resnet_main(resnet_args(manifest, cache_root, run_dir, *extra)) == 2
    line = one_error_line(capsys)
    assert message in line
    assert not run_dir.exists() and not cache_root.exists()


def test_argparse_errors_exit_2(make_manifest, cache_root, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        resnet_main(["train", "--precision", "fp64"])
    assert info.value.code == 2
    assert one_error_line(capsys).startswith("error: argument --precision")


@pytest.mark.parametrize("extra, message", [
    (["--seed", "-1"], "--seed -1: must be >= 0"),
    (["--lr", "inf"], "--lr inf: must be a finite number"),
    (["--rotate-degrees", "nan"], "--rotate-degrees nan: must be a finite number"),
    (["--split-seed", "-3"], "split seed -3"),
    (["--batch-size", "100000"], "--batch-size 100000: more than the"),
])
def test_bad_numbers_are_one_line_before_any_run_directory(make_manifest, cache_root, tmp_path, capsys, extra,
                                                          message):
    run_dir = tmp_path / "run"
    assert resnet_main(resnet_args(make_manifest(n_subjects=12), cache_root, run_dir, *extra)) == 2
    assert message in one_error_line(capsys)
    assert not run_dir.exists()


def test_a_bad_voxel_limit_is_one_line(make_manifest, cache_root, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("VOLCLS_MAX_VOXELS", "abc")
    assert resnet_main(resnet_args(make_manifest(n_subjects=12), cache_root, tmp_path / "run")) == 2
    assert "VOLCLS_MAX_VOXELS='abc': not a whole number" in one_error_line(capsys)
