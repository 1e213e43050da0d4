"""The built-in demo: SYNTHETIC NIfTI volumes, generated deterministically on first use.

Nothing here is real anatomy. Each volume is a noisy ellipsoid "head" of 40x48x40 voxels at 2 mm
(stored in LAS orientation as int16 with a scale factor, so the loader's reorientation and
scaling are exercised). Class `lesion` carries one bright sphere at a random place inside the head;
class `control` has none; its mask and centre are recorded (lesions.csv) for the saliency checks. 80 subjects x 2 scans = 160 volumes, labels balanced; a small model
learns the task in a few minutes on a CPU. It exists so every make target works offline.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from common.atomic import atomic_write_text, current_umask
from common.data.cache import default_cache_root
from common.data.sources import read_manifest, strip_nifti_suffix

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
LESIONS_FILE = "lesions.csv"


@dataclass(frozen=True)
class Lesion:
    """Ground truth of one lesion, in the generated array's voxel order (i, j, k) before it is saved."""

    centre: tuple[float, float, float]
    radius: float  # voxels
    mask: np.ndarray  # (40, 48, 40) bool


def synthetic_scan(rng: np.random.Generator, *, lesion: bool) -> tuple[np.ndarray, Lesion | None]:
    """One (40, 48, 40) float32 volume in voxel order i, j, k, and its lesion (None for a control)."""
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in DEMO_SHAPE], indexing="ij"))
    centre = np.array(DEMO_SHAPE, dtype=np.float32)[:, None, None, None] / 2 + rng.normal(0, 1, (3, 1, 1, 1))
    radii = np.array([15, 19, 15], dtype=np.float32)[:, None, None, None] * rng.uniform(0.9, 1.05)
    head = (((grid - centre) / radii) ** 2).sum(0) <= 1.0
    volume = np.where(head, 100.0, 5.0) + rng.normal(0, 12, DEMO_SHAPE)
    found = None
    if lesion:
        offset = rng.uniform(-0.5, 0.5, 3) * np.array([15, 19, 15])
        where = centre[:, 0, 0, 0] + offset
        radius = rng.uniform(*LESION_RADIUS)
        sphere = ((grid - where[:, None, None, None]) ** 2).sum(0) <= radius**2
        volume = np.where(sphere, volume + LESION_CONTRAST, volume)
        found = Lesion(tuple(float(c) for c in where), float(radius), sphere)
    return volume.astype(np.float32), found


def _demo_scans():
    """(file name, subject id, label, volume, lesion) of every demo scan, in the one seeded order."""
    rng = np.random.default_rng(SEED)
    for subject in range(N_SUBJECTS):
        label = DEMO_CLASSES[subject % 2]
        subject_id = f"demo-sub{subject:03d}"
        for scan in range(SCANS_PER_SUBJECT):
            volume, lesion = synthetic_scan(rng, lesion=label == "lesion")
            yield f"{subject_id}_scan{scan}.nii.gz", subject_id, label, volume, lesion


def _las_affine() -> np.ndarray:
    # x flipped (L), 2 mm voxels: nibabel's as_closest_canonical must flip axis 0 back to RAS.
    affine = np.diag([-2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [40.0, -48.0, -40.0]
    return affine


def write_demo(folder: Path) -> None:
    rows = []
    for name, subject_id, label, data, _ in _demo_scans():
        image = nib.Nifti1Image(np.round(data * 2).astype(np.int16), _las_affine())
        image.header.set_slope_inter(0.5, 0.0)
        nib.save(image, folder / name)
        rows.append({"path": name, "subject_id": subject_id, "label": label})
    with (folder / "labels.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "subject_id", "label"])
        writer.writeheader()
        writer.writerows(rows)
    write_lesions(folder)


def write_lesions(folder: Path) -> None:
    """lesions/<scan>_lesion.nii.gz (uint8 mask on the scan's grid and affine) and lesions.csv (sample_id,
    path, centre in voxels of the file and in mm, radius in voxels) for every lesion scan: the ground truth
    the saliency checks score against. Replays the generator, so it can be added to an existing demo."""
    (folder / "lesions").mkdir(exist_ok=True)
    rows = []
    affine = _las_affine()
    for name, _, _, _, lesion in _demo_scans():
        if lesion is None:
            continue
        mask_name = f"lesions/{strip_nifti_suffix(name)}_lesion.nii.gz"
        nib.save(nib.Nifti1Image(lesion.mask.astype(np.uint8), affine), folder / mask_name)
        world = nib.affines.apply_affine(affine, lesion.centre)
        rows.append({"sample_id": strip_nifti_suffix(name), "path": mask_name,
                     **{f"centre_{a}": f"{c:.3f}" for a, c in zip("ijk", lesion.centre)},
                     **{f"centre_{a}": f"{c:.3f}" for a, c in zip("xyz", world)},
                     "radius_voxels": f"{lesion.radius:.3f}"})
    atomic_write_text(folder / LESIONS_FILE, _csv_text(rows))


def _csv_text(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def ensure_demo(cache_root: Path | None = None) -> Path:
    """Path of the demo manifest, generating the files once (atomically: temp folder, then rename)."""
    folder = Path(cache_root or default_cache_root()) / "demo" / DEMO_VERSION
    manifest = folder / "labels.csv"
    if manifest.is_file():
        if not (folder / LESIONS_FILE).is_file():  # a demo generated before the lesion records existed
            write_lesions(folder)
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


def demo_lesions(cache_root: Path | None = None) -> Path:
    """Path of the demo's lesions.csv (generating the demo if needed)."""
    return ensure_demo(cache_root).parent / LESIONS_FILE


def demo_source(*, cache_root: Path | None = None, classes: Sequence[str] | None = None):
    source = read_manifest(ensure_demo(cache_root), label_column="label", classes=classes)
    source.kind = "demo"
    return source
