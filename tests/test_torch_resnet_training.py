import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from common.errors import DataError
from common.runs.record import read_record
from common.runs.rundir import read_history, read_predictions
from torch_resnet import checkpoints
from torch_resnet.cli import main

ROOT = Path(__file__).resolve().parents[1]


def train_args(manifest, cache_root, run_dir, *extra):
    return ["train", "--data", str(manifest), "--label-column", "label", "--shape", "16", "16", "16",
            "--preset", "tiny", "--batch-size", "4", "--epochs", "3", "--cache-dir", str(cache_root),
            "--run-dir", str(run_dir), "--workers", "1", "--quiet", "--precision", "fp32", *extra]


def test_training_writes_the_run_directory(make_manifest, cache_root, tmp_path):
    manifest = make_manifest(n_subjects=20)
    run_dir = tmp_path / "run"
    assert main(train_args(manifest, cache_root, run_dir, "--class-weights")) == 0
    for name in ("config.json", "history.csv", "predictions.csv", "metrics.json", "model.pt", "resume.json"):
        assert (run_dir / name).is_file(), name
    assert any((run_dir / "tb").iterdir())
    history = read_history(run_dir)
    assert [r["epoch"] for r in history] == [1, 2, 3]
    predictions = read_predictions(run_dir)
    assert set(predictions.split) == {"val", "test"}
    record = read_record(run_dir)
    assert record.model == "torch_resnet" and record.parameters > 0 and record.data.split_hash
    assert record.flops_per_sample > 0 and record.training.class_weights
    assert record.precision.resolved == "fp32" and record.outcome.epochs_run == 3
    # older generations removed; the one before is kept to fall back to
    assert sorted(p.name for p in run_dir.glob("state-*")) == ["state-0002.pt", "state-0003.pt"]
    torch.load(run_dir / "model.pt", weights_only=True)
    # A torn latest state (a disk error or a bad copy) falls back one epoch, with a warning.
    state = run_dir / "state-0003.pt"
    state.write_bytes(state.read_bytes()[:100])
    assert main(train_args(manifest, cache_root, run_dir, "--class-weights", "--epochs", "4")) == 0
    assert [r["epoch"] for r in read_history(run_dir)] == [1, 2, 3, 4]
    assert read_record(run_dir).outcome.epochs_run == 4
    (run_dir / "state-0003.pt").write_bytes(b"")
    (run_dir / "state-0004.pt").write_bytes(b"torn")
    assert main(train_args(manifest, cache_root, run_dir, "--class-weights", "--epochs", "5")) == 2


def test_checkpoint_for_another_class_count_is_refused(make_manifest, cache_root, tmp_path):
    manifest = make_manifest(n_subjects=12)
    run_dir = tmp_path / "run"
    assert main(train_args(manifest, cache_root, run_dir, "--epochs", "1")) == 0
    stored = checkpoints.model_config_of(checkpoints.load(run_dir / "model.pt"))
    with pytest.raises(DataError, match="another architecture.*num_classes"):
        checkpoints.load(run_dir / "model.pt", expected=stored.with_data(input_shape=(16, 16, 16), num_classes=5))
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(DataError, match="junk.pt: not a loadable checkpoint"):
        checkpoints.load(tmp_path / "junk.pt")


def test_predict_new_files(make_manifest, cache_root, tmp_path):
    manifest = make_manifest(n_subjects=12)
    run_dir = tmp_path / "run"
    assert main(train_args(manifest, cache_root, run_dir, "--epochs", "1")) == 0
    out = tmp_path / "new.csv"
    assert main(["predict", "--run-dir", str(run_dir), "--manifest", str(manifest), "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "sample_id,y_pred,prob_a,prob_b" and len(lines) == 13
    probs = np.array([[float(v) for v in line.split(",")[2:]] for line in lines[1:]])
    assert np.allclose(probs.sum(1), 1, atol=1e-4)
    assert main(["predict", "--run-dir", str(run_dir), str(tmp_path / "missing.nii.gz")]) == 2


def _run_cli(args, env_extra=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "torch_resnet", *args], env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights(make_manifest, cache_root, tmp_path):
    manifest = make_manifest(n_subjects=20)
    args_a = train_args(manifest, cache_root, tmp_path / "straight", "--epochs", "3")
    args_b = train_args(manifest, cache_root, tmp_path / "killed", "--epochs", "3")
    assert _run_cli(args_a).returncode == 0
    # 14 train samples / batch 4 = 4 steps per epoch: step 6 is mid-epoch 2
    killed = _run_cli(args_b, {"VOLCLS_KILL_AFTER_STEPS": "6"})
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert [r["epoch"] for r in read_history(tmp_path / "killed")] == [1]
    resumed = _run_cli(args_b)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming" in resumed.stdout
    a = torch.load(tmp_path / "straight" / "state-0003.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "killed" / "state-0003.pt", weights_only=True)["model"]
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert read_history(tmp_path / "killed")[-1]["val_loss"] == read_history(tmp_path / "straight")[-1]["val_loss"]


@pytest.mark.slow
def test_two_process_ddp_with_gloo(make_manifest, cache_root, tmp_path):
    manifest = make_manifest(n_subjects=16)
    run_dir = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
         "-m", "torch_resnet", *train_args(manifest, cache_root, run_dir, "--epochs", "2")],
        env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert read_record(run_dir).world_size == 2
    assert [r["epoch"] for r in read_history(run_dir)] == [1, 2]
    assert (run_dir / "metrics.json").is_file()
