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

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


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


@pytest.fixture
def cache_root(tmp_path):
    return tmp_path / "cache"
