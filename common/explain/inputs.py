"""What `explain` looks at: NIfTI files, a manifest, or one split of the run's own data (from its cache)."""

from __future__ import annotations

import csv
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.data.cache import find_cache_with_content, open_volumes, source_stat, volumes_root
from common.data.inference import input_paths, sample_ids_of
from common.data.preprocess import PreprocessConfig, load_nifti, preprocess_array
from common.data.sources import SPLIT_NAMES
from common.errors import ConfigError, DataError
from common.explain.geometry import ScanGeometry, model_grid_geometry, scan_geometry, template_geometry
from common.runs.record import RunRecord
from common.runs.rundir import read_predictions


@dataclass(frozen=True)
class ExplainInput:
    sample_id: str
    volume: np.ndarray  # (D, H, W) float32 on the model grid: what the model sees
    geometry: ScanGeometry  # how to take a map back to the file's grid
    scan: np.ndarray  # what the figure shows under the map: the scan in RAS+ (or the model volume)
    zooms: tuple[float, float, float]  # voxel sizes of `scan`, for the figure's aspect ratio
    y_true: str | None = None  # known for a split of the run's data
    path: Path | None = None


def scan_view(path: Path, preprocess: PreprocessConfig) -> tuple[ScanGeometry, np.ndarray, tuple]:
    """(geometry, scan, voxel sizes): the grid maps go back to and the scan the figure shows — the scan in RAS+
    (or, for t1-linear, registered to MNI152: maps then go to template space)."""
    if preprocess.pipeline == "t1-linear":
        from common.data.t1_linear import SPACING, t1_linear

        registered = t1_linear(path, brain_mask=preprocess.brain_mask).volume
        return template_geometry(preprocess), registered, (SPACING,) * 3
    canonical, zooms = load_nifti(path)
    return scan_geometry(path, canonical.shape, zooms, preprocess), canonical, zooms


def file_input(path: Path, preprocess: PreprocessConfig, sample_id: str, y_true: str | None = None) -> ExplainInput:
    geometry, scan, zooms = scan_view(path, preprocess)
    volume = preprocess_array(scan, zooms, preprocess, origin=str(path)).astype(np.float32)
    return ExplainInput(sample_id, volume, geometry, scan, zooms, y_true, Path(path))


def files_inputs(inputs: list[Path] | None, manifest: Path | None, preprocess: PreprocessConfig) -> list[ExplainInput]:
    paths = input_paths(inputs, manifest)
    return [file_input(p, preprocess, i) for p, i in zip(paths, sample_ids_of(paths))]


def source_problem(path: Path | None, recorded_stat: str) -> str | None:
    """None if `path` is the file the cache was built from (same size and mtime), else why not. A cache
    built before sizes were recorded cannot tell: its file is trusted, as before."""
    if path is None:
        return None
    if not path.is_file():
        return "is gone"
    if recorded_stat and source_stat(path) != recorded_stat:
        return "has changed since the cache was built (another size or modification time)"
    return None


def split_inputs(run_dir: Path, record: RunRecord, split: str, cache_root: Path | None) -> list[ExplainInput]:
    """The split's samples as the run scored them: volumes from the preprocessed cache (the exact arrays),
    the source file (when there is one and it is still there) for the scan grid and the figure."""
    if split not in SPLIT_NAMES:
        raise ConfigError(f"--split {split}: not one of {list(SPLIT_NAMES)}")
    predictions = read_predictions(Path(run_dir) / "predictions.csv")
    rows = [(sid, predictions.classes[y]) for sid, y, s in
            zip(predictions.sample_ids, predictions.y_true, predictions.split) if s == split]
    if not rows:
        raise DataError(f"{run_dir}/predictions.csv: no '{split}' samples")
    folder = volumes_root(cache_root) / record.data.data_hash
    if not (folder / "index.csv").is_file() and record.data.content_hash:  # the data copied anew: same content
        folder = find_cache_with_content(cache_root, record.data.content_hash) or folder
    if not (folder / "index.csv").is_file():
        raise DataError(f"{folder}: the run's preprocessed cache is not there; pass --cache-dir as in training "
                        f"(or rebuild it with `python -m common prepare` and the run's data options)")
    with (folder / "index.csv").open(newline="") as f:
        index = {row["sample_id"]: row for row in csv.DictReader(f)}
    volumes = open_volumes(folder)
    out = []
    for sample_id, y_true in rows:
        if sample_id not in index:
            raise DataError(f"{folder}/index.csv: sample '{sample_id}' of {run_dir}/predictions.csv is missing")
        entry = index[sample_id]
        path = Path(entry["path"]) if entry.get("path") else None
        problem = source_problem(path, entry.get("source_stat", ""))
        if path is not None and problem is None:  # the cached volume; the file only for its grid and the figure
            geometry, scan, zooms = scan_view(path, record.data.preprocess)
            out.append(ExplainInput(sample_id, np.asarray(volumes[int(entry["row"])], dtype=np.float32),
                                    geometry, scan, zooms, y_true, path))
        else:  # an in-memory source (MedMNIST), or a file gone or replaced: maps stay on the model grid
            if path is not None:
                print(f"note: {sample_id}: {path} {problem}; its map stays on the model grid (identity affine)",
                      file=sys.stderr)
            volume = np.asarray(volumes[int(entry["row"])], dtype=np.float32)
            out.append(ExplainInput(sample_id, volume, model_grid_geometry(volume.shape), volume, (1.0, 1.0, 1.0),
                                    y_true, None))
    return out
