import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from common.runs.record import read_record
from common.runs.rundir import read_history, read_predictions
from tf_transformer.cli import main

ROOT = Path(__file__).resolve().parents[1]


def train_args(manifest, cache_root, run_dir, *extra):
    return ["train", "--data", str(manifest), "--label-column", "label", "--shape", "16", "16", "16",
            "--preset", "tiny", "--batch-size", "4", "--epochs", "3", "--cache-dir", str(cache_root),
            "--run-dir", str(run_dir), "--workers", "1", "--quiet", "--precision", "fp32", *extra]


def _run_cli(args, env_extra=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "tf_transformer", *args], env=env, capture_output=True, text=True, timeout=600)


def test_training_writes_the_run_directory_and_predicts(make_manifest, cache_root, tmp_path):
    manifest = make_manifest(n_subjects=20)
    run_dir = tmp_path / "run"
    assert main(train_args(manifest, cache_root, run_dir, "--class-weights")) == 0
    for name in ("config.json", "history.csv", "predictions.csv", "metrics.json", "model.keras"):
        assert (run_dir / name).is_file(), name
    assert [r["epoch"] for r in read_history(run_dir)] == [1, 2, 3]
    assert set(read_predictions(run_dir).split) == {"val", "test"}
    record = read_record(run_dir)
    assert record.model == "tf_transformer" and record.options["backend"] == keras.backend.backend()
    if keras.backend.backend() == "tensorflow":  # the kernels it ran on are recorded (conftest: as the CLI sets)
        assert record.options["kernels"] == "oneDNN"
    assert record.flops_per_sample > 0 and record.outcome.best_epoch >= 1
    out = tmp_path / "new.csv"
    assert main(["predict", "--run-dir", str(run_dir), "--manifest", str(manifest), "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "sample_id,y_pred,prob_a,prob_b" and len(lines) == 21
    probs = np.array([[float(v) for v in line.split(",")[2:]] for line in lines[1:]])
    assert np.allclose(probs.sum(1), 1, atol=1e-4)


def test_history_and_tensorboard_tags_match_the_resnet(make_manifest, cache_root, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from common.runs.rundir import TENSORBOARD_TAGS

    manifest = make_manifest(n_subjects=12)
    run_dir = tmp_path / "run"
    assert main(train_args(manifest, cache_root, run_dir, "--epochs", "1")) == 0
    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    assert sorted(events.Tags()["scalars"]) == sorted(TENSORBOARD_TAGS.values())


@pytest.mark.slow
def test_killed_run_resumes(make_manifest, cache_root, tmp_path):
    manifest = make_manifest(n_subjects=20)
    args = train_args(manifest, cache_root, tmp_path / "killed", "--epochs", "3")
    killed = _run_cli(args, {"VOLCLS_KILL_AFTER_STEPS": "6"})  # 4 steps per epoch: mid-epoch 2
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert [r["epoch"] for r in read_history(tmp_path / "killed")] == [1]
    resumed = _run_cli(args)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming" in resumed.stdout
    assert "oneDNN" not in resumed.stderr and "cuda" not in resumed.stderr.lower()  # TF start-up log hidden
    assert [r["epoch"] for r in read_history(tmp_path / "killed")] == [1, 2, 3]
    assert (tmp_path / "killed" / "metrics.json").is_file()


@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus(make_manifest, cache_root, tmp_path):
    manifest = make_manifest(n_subjects=12)
    result = _run_cli(train_args(manifest, cache_root, tmp_path / "mirrored", "--epochs", "2", "--distribute",
                                 "mirrored", "--logical-cpu-devices", "2"), {"KERAS_BACKEND": "tensorflow"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 replicas" in result.stdout
    assert [r["epoch"] for r in read_history(tmp_path / "mirrored")] == [1, 2]


def test_the_optimizer_is_built_before_the_first_step():
    """Slots made by the first step are variables created inside the traced train step, which TensorFlow
    then traces twice (about half of a transformer run's first epoch). Built with the adapter, the state
    that resume saves exists from the start: model and optimizer variables."""
    from common.runs.config import TrainConfig
    from common.runs.precision import PrecisionDecision
    from tf_transformer.config import preset
    from tf_transformer.options import KerasOptions
    from tf_transformer.train import KerasAdapter

    config = preset("tiny").with_data(input_shape=(16,) * 3, num_classes=2)
    adapter = KerasAdapter(config, TrainConfig(), KerasOptions(), PrecisionDecision("fp32", "fp32", "test"))
    optimizer = adapter.model.optimizer
    assert optimizer.built and int(optimizer.iterations) == 0
    # AdamW: a first and a second moment per weight, beside its step counter and learning rate
    assert len(optimizer.variables) >= 2 * len(adapter.model.trainable_variables) + 1
