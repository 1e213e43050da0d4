"""Shared fixtures: tiny generated NIfTI files and the optional real data beside the checkout."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # as every CLI sets it (tf_transformer/keras_state.py)
if os.environ.get("PYTEST_XDIST_WORKER") and "OMP_NUM_THREADS" not in os.environ:
    # `make test` runs one worker per core (pytest-xdist): each worker, and every process it starts, computes
    # on one thread, so two workers do not oversubscribe the cores (OpenMP threads spin while they wait).
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def pytest_collection_modifyitems(config, items):
    """The longest tests first: slow tests by their `minutes` hint, then the rest in file order. pytest-xdist
    hands each worker a contiguous share and idle workers take from the end of another's queue, but the last
    two tests of a queue are never taken; a 9-minute test left there keeps one core busy while the other
    idles (on 2 cores: 400 s of a 35-minute run before this order)."""

    def cost(item) -> float:
        # a parametrized case's own mark (pytest.param(..., marks=...)) may raise its function's hint
        return max((m.kwargs.get("minutes", 0.5) for m in item.iter_markers("slow")), default=0.0)

    items.sort(key=cost, reverse=True)  # stable: equal costs keep their file order


def needs_shared_data(*parts: str):
    path = SHARED_DATA.joinpath(*parts)
    return pytest.mark.skipif(not path.exists(), reason=f"real data not present at {path}")


def write_nifti(path: Path, data: np.ndarray, affine=None) -> Path:
    nib.save(nib.Nifti1Image(np.asarray(data, dtype=np.float32), np.eye(4) if affine is None else affine), path)
    return path


def blob_volume(rng: np.random.Generator, label: int, shape=(12, 12, 12)) -> np.ndarray:
    """Noise plus a bright cube whose position depends on the label."""
    volume = rng.normal(0, 1, shape).astype(np.float32) + 2
    if label == 1:
        volume[2:6, 2:6, 2:6] += 6
    else:
        volume[6:10, 6:10, 6:10] += 6
    return volume


@pytest.fixture
def make_manifest(tmp_path):
    """Write n subjects x scans tiny NIfTI volumes and a manifest; returns the CSV path."""

    def make(n_subjects=12, scans=1, classes=("a", "b"), extra_rows=(), columns=("path", "subject_id", "label")):
        rng = np.random.default_rng(0)
        rows = []
        for subject in range(n_subjects):
            label_index = subject % len(classes)
            for scan in range(scans):
                name = f"s{subject:02d}_{scan}.nii.gz"
                write_nifti(tmp_path / name, blob_volume(rng, label_index % 2))
                rows.append({"path": name, "subject_id": f"sub{subject:02d}", "label": classes[label_index]})
        rows.extend(extra_rows)
        manifest = tmp_path / "labels.csv"
        with manifest.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        return manifest

    return make


def fake_record(*, model="torch_resnet", classes=("neg", "pos"), created="2026-01-01T00:00:00", data_hash="d" * 20,
                split_hash="abc", outcome=True, **training):
    """A complete, typed run record for tests that write run directories by hand."""
    from common.data.preprocess import PreprocessConfig
    from common.data.splits import SplitConfig
    from common.runs.config import TrainConfig
    from common.runs.record import DataRecord, Outcome, PrecisionDecision, RunRecord

    data = DataRecord(source="demo", location="demo", label_column="label", classes=tuple(classes),
                      preprocess=PreprocessConfig(shape=(16, 16, 16), normalize="zscore"), split=SplitConfig(),
                      split_method="stratified", data_hash=data_hash, split_hash=split_hash,
                      class_counts={"test": {c: 18 for c in classes}})
    done = Outcome(epochs_run=4, best_epoch=4, best_value=0.3, stopped_early=False, train_seconds=75.0,
                   samples_per_second=3.2, peak_memory_bytes=2**30, predict_seconds=1.0) if outcome else None
    return RunRecord(model=model, preset="tiny", model_config={"filters": 4}, data=data,
                     training=TrainConfig(**training), precision=PrecisionDecision("auto", "fp32", "test"),
                     device="CPU", options={}, parameters=1234, flops_per_sample=2_000_000_000, world_size=1,
                     versions={"lib": "1.0"}, machine="test", created=created, outcome=done)


@pytest.fixture
def cache_root(tmp_path):
    return tmp_path / "cache"
