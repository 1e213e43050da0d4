"""The built-in demo: SYNTHETIC NIfTI volumes, generated deterministically on first use.

Nothing here is real anatomy. Each volume is a noisy ellipsoid "head" of 40x48x40 voxels at 2 mm
(stored in LAS orientation as int16 with a scale factor, so the loader's reorientation and
scaling are exercised). Class `lesion` carries one bright sphere at a random place inside the head;
class `control` has none. 80 subjects x 2 scans = 160 volumes, labels balanced; a small model
learns the task in a few minutes on a CPU. It exists so every make target works offline.
"""

from __future__ import annotations

import csv
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from common.atomic import current_umask
from common.data.cache import default_cache_root
from common.data.sources import read_manifest

# v2: 80 subjects (was 60) and larger, brighter lesions (radius 5-7 voxels, +90; v1: 3-5, +70): with v1
# the demo's small models learned on some CPUs and seeds and not on others.
DEMO_VERSION = "v2"
DEMO_SHAPE = (40, 48, 40)
DEMO_CLASSES = ("control", "lesion")
N_SUBJECTS = 80
LESION_RADIUS = (5.0, 7.0)  # voxels of 2 mm: 3.3-4.7 voxels once conformed to 32^3
LESION_CONTRAST = 90.0  # added to the head's 100 +- 12 (noise sd): 7.5 sd
SCANS_PER_SUBJECT = 2
SEED = 20261128


def synthetic_volume(rng: np.random.Generator, *, lesion: bool) -> np.ndarray:
    """One (40, 48, 40) float32 volume in voxel order i, j, k."""
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in DEMO_SHAPE], indexing="ij"))
    centre = np.array(DEMO_SHAPE, dtype=np.float32)[:, None, None, None] / 2 + rng.normal(0, 1, (3, 1, 1, 1))
    radii = np.array([15, 19, 15], dtype=np.float32)[:, None, None, None] * rng.uniform(0.9, 1.05)
    head = (((grid - centre) / radii) ** 2).sum(0) <= 1.0
    volume = np.where(head, 100.0, 5.0) + rng.normal(0, 12, DEMO_SHAPE)
    if lesion:
        offset = rng.uniform(-0.5, 0.5, 3) * np.array([15, 19, 15])
        where = centre[:, 0, 0, 0] + offset
        radius = rng.uniform(*LESION_RADIUS)
        sphere = ((grid - where[:, None, None, None]) ** 2).sum(0) <= radius**2
        volume = np.where(sphere, volume + LESION_CONTRAST, volume)
    return volume.astype(np.float32)


def _las_affine() -> np.ndarray:
    # x flipped (L), 2 mm voxels: nibabel's as_closest_canonical must flip axis 0 back to RAS.
    affine = np.diag([-2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [40.0, -48.0, -40.0]
    return affine


def write_demo(folder: Path) -> None:
    rng = np.random.default_rng(SEED)
    rows = []
    for subject in range(N_SUBJECTS):
        label = DEMO_CLASSES[subject % 2]
        subject_id = f"demo-sub{subject:03d}"
        for scan in range(SCANS_PER_SUBJECT):
            data = synthetic_volume(rng, lesion=label == "lesion")
            image = nib.Nifti1Image(np.round(data * 2).astype(np.int16), _las_affine())
            image.header.set_slope_inter(0.5, 0.0)
            name = f"{subject_id}_scan{scan}.nii.gz"
            nib.save(image, folder / name)
            rows.append({"path": name, "subject_id": subject_id, "label": label})
    with (folder / "labels.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "subject_id", "label"])
        writer.writeheader()
        writer.writerows(rows)


def ensure_demo(cache_root: Path | None = None) -> Path:
    """Path of the demo manifest, generating the files once (atomically: temp folder, then rename)."""
    folder = Path(cache_root or default_cache_root()) / "demo" / DEMO_VERSION
    manifest = folder / "labels.csv"
    if manifest.is_file():
        return manifest
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".demo-", dir=folder.parent))
    os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700: others sharing the cache could not read it
    try:
        write_demo(tmp)
        try:
            tmp.rename(folder)
        except OSError:  # another process finished first: its copy is identical
            if not manifest.is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def demo_source(*, cache_root: Path | None = None, classes: Sequence[str] | None = None):
    source = read_manifest(ensure_demo(cache_root), label_column="label", classes=classes)
    source.kind = "demo"
    return source
