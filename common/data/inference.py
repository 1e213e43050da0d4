"""Inputs and outputs of `predict`, shared by both models: same preprocessing as training."""

from __future__ import annotations

import csv
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from common.atomic import atomic_write
from common.data.cache import MAX_LISTED
from common.data.preprocess import PreprocessConfig, preprocess_file
from common.data.sources import is_nifti_path, read_csv_rows, resolve_path, strip_nifti_suffix
from common.errors import DataError


def input_paths(inputs: list[Path] | None, manifest: Path | None) -> list[Path]:
    if manifest is not None:
        manifest = Path(manifest)
        paths = []
        for line, row in read_csv_rows(manifest, required=("path",)):
            rel = (row.get("path") or "").strip()
            if not rel:
                raise DataError(f"{manifest.name} row {line}: empty 'path'")
            paths.append(resolve_path(manifest.parent / rel, origin=f"{manifest.name} row {line}"))
    else:
        paths = [Path(p) for p in inputs or []]
    if not paths:
        raise DataError("no input files: name NIfTI files or --manifest")
    for path in paths:
        if not is_nifti_path(path):
            raise DataError(f"{path}: not a .nii or .nii.gz file")
    missing = [path for path in paths if not path.is_file()]
    if missing:  # all of them at once, not the first of 10,000
        shown = "\n".join(f"  {p}" for p in missing[:MAX_LISTED])
        more = f"\n  ... and {len(missing) - MAX_LISTED} more" if len(missing) > MAX_LISTED else ""
        raise DataError(f"{len(missing)} of {len(paths)} input files not found:\n{shown}{more}")
    return paths


def sample_ids_of(paths: list[Path]) -> list[str]:
    """File names without the NIfTI suffix; where two coincide, enough parent folders to tell them apart."""
    for depth in range(1, max(len(p.parts) for p in paths) + 1):
        ids = ["/".join([*p.parts[-depth:-1], strip_nifti_suffix(p.name)]) for p in paths]
        if len(set(ids)) == len(ids):
            return ids
    raise DataError(f"the same file is named twice: {[p for p in paths if paths.count(p) > 1][:3]}")


def _preprocess(job):
    return preprocess_file(*job)


def load_inputs(inputs: list[Path] | None, manifest: Path | None, preprocess: PreprocessConfig, *,
                workers: int = 1) -> tuple[list[str], np.ndarray]:
    """(sample ids, (N, D, H, W) volumes) preprocessed exactly as the training cache was."""
    paths = input_paths(inputs, manifest)
    jobs = [(p, preprocess) for p in paths]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            volumes = list(pool.map(_preprocess, jobs))
    else:
        volumes = [_preprocess(job) for job in jobs]
    return sample_ids_of(paths), np.stack(volumes)


def write_probabilities(out: Path, sample_ids: list[str], classes: list[str], probabilities: np.ndarray,
                        y_pred: np.ndarray) -> Path:
    """CSV of sample_id, y_pred (class indices, by the run's decision rule: common.runs.decision), prob_<class>..."""

    def write(tmp: Path):
        with tmp.open("w", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(["sample_id", "y_pred", *(f"prob_{c}" for c in classes)])
            for sample_id, p, k in zip(sample_ids, probabilities, y_pred):
                writer.writerow([sample_id, classes[int(k)], *(f"{v:.6g}" for v in p)])

    atomic_write(Path(out), write)
    return Path(out)
