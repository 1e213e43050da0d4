"""Data sources: each turns what the user named into a list of `Sample`s.

Supported: a NIfTI manifest CSV, a class-per-folder NIfTI tree, a MedMNIST-3D `.npz` file and
the built-in synthetic demo. Every source yields the same record, so the rest of the pipeline
never asks where a sample came from.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from common.errors import DataError

SPLIT_NAMES = ("train", "val", "test")
NIFTI_SUFFIXES = (".nii", ".nii.gz")


@dataclass(frozen=True)
class Sample:
    sample_id: str
    subject_id: str
    label: str
    path: Path | None = None  # NIfTI file, or None when the volume is in memory (MedMNIST)
    split: str | None = None  # a split fixed by the source (manifest column, MedMNIST official split)
    origin: str = ""  # where the sample was declared, for error messages ("labels.csv row 7")


@dataclass
class Source:
    """What a data source produced: samples plus what is needed to read their volumes."""

    kind: str  # "manifest" | "folder" | "medmnist" | "demo" | "bids"
    location: str  # the path the user named, for reports
    samples: list[Sample]
    classes: list[str]
    label_column: str
    arrays: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # sample_id -> volume (MedMNIST)

    @property
    def is_nifti(self) -> bool:
        return self.kind in ("manifest", "folder", "demo", "bids")


def is_nifti_path(path: Path) -> bool:
    return str(path).endswith(NIFTI_SUFFIXES)


def strip_nifti_suffix(name: str) -> str:
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def resolve_classes(labels: Sequence[str], classes: Sequence[str] | None, *, origin: str) -> list[str]:
    """The class list: the user's (checked against the labels) or the sorted distinct labels."""
    if classes:
        classes = list(classes)
        if len(set(classes)) != len(classes):
            raise DataError(f"--classes {classes}: a class is listed twice")
    else:
        classes = sorted(set(labels))
    if len(classes) < 2:
        raise DataError(f"{origin}: found {len(classes)} class(es) {classes}; classification needs at least 2")
    return classes


def check_unique_ids(samples: Sequence[Sample]) -> None:
    seen: dict[str, str] = {}
    for s in samples:
        if s.sample_id in seen:
            raise DataError(f"duplicate sample id '{s.sample_id}': {seen[s.sample_id]} and {s.origin}")
        seen[s.sample_id] = s.origin


def read_csv_rows(csv_path: Path, *, required: Sequence[str], hint: str = "") -> list[tuple[int, dict]]:
    """(line number, row) of a CSV, header checked; blank rows skipped; a BOM (Excel's UTF-8) accepted."""
    if not csv_path.is_file():
        raise DataError(f"{csv_path}: manifest not found")
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = [c.strip() for c in reader.fieldnames or []]
            reader.fieldnames = columns
            missing = [c for c in required if c not in columns]
            if missing:
                raise DataError(f"{csv_path}: missing required column(s) {missing}; found {columns}"
                                + ("" if "path" in missing else hint))
            rows = [(reader.line_num, row) for row in reader
                    if any((v or "").strip() for v in row.values() if isinstance(v, str))]
    except UnicodeDecodeError as exc:
        raise DataError(f"{csv_path}: not UTF-8 text ({exc})") from exc
    if not rows:
        raise DataError(f"{csv_path}: the manifest has no rows")
    return rows


def resolve_path(path: Path, *, origin: str) -> Path:
    """The absolute, resolved path; a link loop stays unresolved (absolute) so that the check of every
    file lists it with the others (and --drop-invalid can drop it)."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # RuntimeError: a symbolic link loop (Python < 3.13)
        return path.absolute()


def read_manifest(csv_path: Path, *, label_column: str, classes: Sequence[str] | None = None) -> Source:
    """A CSV with `path` and a label column (required), `subject_id` and `split` (optional).

    Paths are relative to the CSV's folder. The sample id is the file name without its NIfTI suffix.
    """
    csv_path = Path(csv_path)
    rows = read_csv_rows(csv_path, required=("path", label_column),
                         hint=" (choose one with --label-column)")
    samples = []
    for row_number, row in rows:
        origin = f"{csv_path.name} row {row_number}"
        rel = (row.get("path") or "").strip()
        if not rel:
            raise DataError(f"{origin}: empty 'path'")
        path = resolve_path(csv_path.parent / rel, origin=origin)
        if not is_nifti_path(path):
            raise DataError(f"{origin}: '{rel}' is not a .nii or .nii.gz file")
        label = (row.get(label_column) or "").strip()
        if not label:
            raise DataError(f"{origin} ({rel}): missing label in column '{label_column}'")
        split = (row.get("split") or "").strip() or None
        if split is not None and split not in SPLIT_NAMES:
            raise DataError(f"{origin} ({rel}): split '{split}' is not one of {list(SPLIT_NAMES)}")
        sample_id = strip_nifti_suffix(path.name)
        subject_id = (row.get("subject_id") or "").strip() or sample_id
        samples.append(Sample(sample_id, subject_id, label, path=path, split=split, origin=origin))
    _check_split_column_all_or_none(samples, csv_path)
    check_unique_ids(samples)
    class_list = resolve_classes([s.label for s in samples], classes, origin=str(csv_path))
    check_labels_in_classes(samples, class_list)
    return Source("manifest", str(csv_path), samples, class_list, label_column)


def _check_split_column_all_or_none(samples: Sequence[Sample], csv_path: Path) -> None:
    given = [s.split is not None for s in samples]
    if any(given) and not all(given):
        first_missing = next(s for s in samples if s.split is None)
        raise DataError(f"{first_missing.origin}: empty 'split' while other rows set one ({csv_path})")


def check_labels_in_classes(samples: Sequence[Sample], classes: Sequence[str]) -> None:
    allowed = set(classes)
    for s in samples:
        if s.label not in allowed:
            raise DataError(f"{s.origin}: label '{s.label}' is not in the class list {list(classes)}")


def read_folder(root: Path, *, classes: Sequence[str] | None = None) -> Source:
    """`root/<class>/*.nii[.gz]`; the subject id is the sample id (one scan per subject assumed)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    samples = []
    # Hidden folders (.ipynb_checkpoints, .git, .DS_Store's kin) are never classes.
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for path in sorted(class_dir.iterdir()):
            if is_nifti_path(path):
                sample_id = strip_nifti_suffix(path.name)
                samples.append(
                    Sample(sample_id, sample_id, class_dir.name, path=path.resolve(), origin=str(path))
                )
    if not samples:
        raise DataError(f"{root}: no NIfTI files found in class folders (expected root/<class>/*.nii.gz)")
    check_unique_ids(samples)
    class_list = resolve_classes([s.label for s in samples], classes, origin=str(root))
    check_labels_in_classes(samples, class_list)
    return Source("folder", str(root), samples, class_list, "folder")


MEDMNIST_KEYS = tuple(f"{split}_{kind}" for split in SPLIT_NAMES for kind in ("images", "labels"))


MEDMNIST_3D = ("organmnist3d", "nodulemnist3d", "adrenalmnist3d", "fracturemnist3d", "vesselmnist3d",
               "synapsemnist3d")


def is_medmnist_file(path: str | Path) -> bool:
    """One of the MedMNIST v2 3D files by its published name (e.g. adrenalmnist3d.npz, nodulemnist3d_64.npz)."""
    stem = Path(path).stem.lower()
    return any(stem == name or stem.startswith(name + "_") for name in MEDMNIST_3D)


def check_integer_labels(labels: np.ndarray, origin: str) -> None:
    """Class labels are whole numbers >= 0: a NaN or 0.5 must not be truncated into some class."""
    if not (np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.floating)
            or labels.dtype == bool):
        raise DataError(f"{origin}: dtype {labels.dtype}; expected integer class labels")
    values = labels.astype(np.float64, copy=False)
    bad = ~np.isfinite(values) | (values < 0) | (values != np.round(values))
    if bad.any():
        raise DataError(f"{origin}: {int(bad.sum())} label(s) are not whole numbers >= 0 "
                        f"(e.g. {values[bad].ravel()[:3].tolist()})")


def read_medmnist(npz_path: Path, *, classes: Sequence[str] | None = None,
                  class_names: Sequence[str] | None = None) -> Source:
    """A MedMNIST-3D `.npz` file; its official split is kept. Sample ids are `<split>_<index>`.

    MedMNIST's splits are patient-level but carry no patient id, so each sample is its own subject.
    """
    npz_path = Path(npz_path)
    if not npz_path.is_file():
        raise DataError(f"{npz_path}: file not found")
    try:
        archive = np.load(npz_path)  # allow_pickle stays off: object arrays are refused below
    except Exception as exc:  # zipfile / pickle errors: not an npz file
        raise DataError(f"{npz_path}: not a readable .npz file ({exc})") from exc
    with archive:
        missing = [k for k in MEDMNIST_KEYS if k not in archive.files]
        if missing:
            raise DataError(f"{npz_path}: missing MedMNIST arrays {missing}; found {archive.files}")
        samples, arrays = [], {}
        for split in SPLIT_NAMES:
            try:
                images, labels = archive[f"{split}_images"], archive[f"{split}_labels"]
            except ValueError as exc:  # "Object arrays cannot be loaded when allow_pickle=False"
                raise DataError(f"{npz_path}: {split}_images / {split}_labels are object arrays ({exc}); "
                                "expected numeric arrays") from None
            check_integer_labels(labels, f"{npz_path}: {split}_labels")
            if len(images) == 0 and split != "test":
                raise DataError(f"{npz_path}: {split}_images is empty; train and val need samples")
            if images.ndim != 4:
                raise DataError(f"{npz_path}: {split}_images has shape {images.shape}; expected (N, D, H, W)")
            labels = labels.reshape(len(labels), -1)
            if labels.shape[1] != 1 or len(labels) != len(images):
                raise DataError(
                    f"{npz_path}: {split}_labels has shape {labels.shape}; expected ({len(images)}, 1) "
                    "(multi-label MedMNIST sets are not supported)"
                )
            for i, (image, label) in enumerate(zip(images, labels[:, 0])):
                sample_id = f"{split}_{i:05d}"
                samples.append(
                    Sample(sample_id, sample_id, str(int(label)), split=split, origin=f"{npz_path.name} {split}[{i}]")
                )
                arrays[sample_id] = image
    label_set = sorted({s.label for s in samples}, key=int)
    if class_names:  # names for the integer labels, in label order
        if len(class_names) != len(label_set) or len(set(class_names)) != len(class_names):
            raise DataError(f"--class-names {list(class_names)}: {npz_path} has {len(label_set)} distinct labels "
                            f"{label_set}; give one distinct name per label, in label order")
        name_of = dict(zip(label_set, class_names))
        samples = [replace(s, label=name_of[s.label]) for s in samples]
        label_set = list(class_names)
    class_list = resolve_classes(label_set, classes or label_set, origin=str(npz_path))
    check_labels_in_classes(samples, class_list)
    return Source("medmnist", str(npz_path), samples, class_list, "label", arrays=arrays)
