"""`explain`: maps for a trained run, written as NIfTI on each scan's own grid, PNGs and one CSV.

Both models call `explain_run` with their `ModelHooks`: a batched predict function and (for gradcam) a
gradient map on the model grid. Everything else, occlusion included, is framework-free and shared.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from common.data.sources import strip_nifti_suffix
from common.errors import ConfigError
from common.explain.figures import slice_figure
from common.explain.geometry import save_map, to_canonical_grid, to_scan_grid
from common.explain.inputs import ExplainInput
from common.explain.maps import peak_voxel
from common.explain.occlusion import OcclusionConfig, forward_passes, occlusion_map
from common.runs.decision import decide

METHODS = ("gradcam", "occlusion")
TABLE = "saliency.csv"
SETTINGS = "explain.json"
TABLE_COLUMNS = ("sample_id", "y_true", "y_pred", "target", "probability", "peak_i", "peak_j", "peak_k",
                 "peak_x", "peak_y", "peak_z", "map", "figure")


@dataclass(frozen=True)
class ModelHooks:
    model: str  # torch_resnet | tf_transformer
    classes: Sequence[str]
    predict: Callable[[np.ndarray], np.ndarray]  # (B, D, H, W) float32 -> (B, K) probabilities
    gradient_map: Callable[[np.ndarray, np.ndarray], np.ndarray]  # volumes (B, D, H, W), targets (B,) -> maps
    gradient_layer: str  # what the gradient method reads, for explain.json and the README


@dataclass(frozen=True)
class ExplainConfig:
    method: str = "gradcam"
    target: str | None = None  # a class name; None: each input's predicted class
    occlusion: OcclusionConfig = field(default_factory=OcclusionConfig)
    random_weights: bool = False  # the sanity check's model: same architecture, re-initialised weights
    batch_size: int = 4  # inputs per gradient / predict call
    gradcam_layer: str | None = None  # the layer the gradient method reads; None: the model's default

    def __post_init__(self):
        if self.method not in METHODS:
            raise ConfigError(f"--method {self.method}: not one of {list(METHODS)}")
        if self.gradcam_layer is not None and self.method != "gradcam":
            raise ConfigError(f"--gradcam-layer {self.gradcam_layer}: only --method gradcam reads a layer")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size {self.batch_size}: must be >= 1")

    def target_index(self, classes: Sequence[str]) -> int | None:
        if self.target is None:
            return None
        if self.target not in classes:
            raise ConfigError(f"--target {self.target}: not one of the run's classes {list(classes)}")
        return list(classes).index(self.target)


def default_out(run_dir: Path, config: ExplainConfig) -> Path:
    return Path(run_dir) / "explain" / (config.method + ("-random" if config.random_weights else ""))


def compute_maps(volumes: np.ndarray, targets: np.ndarray, hooks: ModelHooks, config: ExplainConfig) -> np.ndarray:
    """(N, D, H, W) maps on the model grid, larger = more evidence for the target class."""
    if config.method == "occlusion":
        return np.stack([occlusion_map(v, hooks.predict, int(t), config.occlusion) for v, t in zip(volumes, targets)])
    return np.concatenate([hooks.gradient_map(volumes[i:i + config.batch_size], targets[i:i + config.batch_size])
                           for i in range(0, len(volumes), config.batch_size)])


def predict_all(volumes: np.ndarray, hooks: ModelHooks, batch_size: int) -> np.ndarray:
    return np.concatenate([hooks.predict(volumes[i:i + batch_size]) for i in range(0, len(volumes), batch_size)])


def file_stem(sample_id: str) -> str:
    return strip_nifti_suffix(sample_id).replace("/", "__")


def explain_run(items: list[ExplainInput], hooks: ModelHooks, config: ExplainConfig, out: Path, *,
                run_dir: Path, progress: bool = True, lesions: dict[str, Path] | None = None,
                threshold: float | None = None) -> Path:
    """Write out/{maps/<id>.nii.gz, figures/<id>.png, saliency.csv, explain.json}; all or nothing: built in a
    temporary folder beside `out`, then swapped in. `lesions` (sample id -> mask on the scan's grid): their
    outline is drawn on the figures."""
    check_out(Path(out))
    volumes = np.stack([item.volume for item in items])
    probabilities = predict_all(volumes, hooks, config.batch_size)
    chosen = config.target_index(hooks.classes)
    predicted = decide(probabilities, threshold)  # the run's decision rule (outcome.threshold), as predict applies it
    targets = predicted if chosen is None else np.full(len(items), chosen)
    start = time.perf_counter()
    maps = compute_maps(volumes, targets, hooks, config)
    seconds = time.perf_counter() - start
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        rows = [_write_one(tmp, item, model_map, int(target), probabilities[n], int(predicted[n]), hooks.classes,
                           lesion=(lesions or {}).get(item.sample_id))
                for n, (item, model_map, target) in enumerate(zip(items, maps, targets))]
        _write_table(tmp / TABLE, rows)
        settings = {"model": hooks.model, "run_dir": str(run_dir), "method": config.method,
                    "gradient_layer": hooks.gradient_layer if config.method == "gradcam" else None,
                    "config": asdict(config), "classes": list(hooks.classes), "inputs": len(items),
                    "model_grid": list(volumes.shape[1:]), "seconds_per_volume": seconds / len(items),
                    "forward_passes_per_volume": (forward_passes(volumes.shape[1:], config.occlusion)
                                                  if config.method == "occlusion" else 1)}
        (tmp / SETTINGS).write_text(json.dumps(settings, indent=2) + "\n")
        os.chmod(tmp, 0o755)
        _swap_in(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if progress:
        print(f"{config.method}: {len(items)} map(s), {seconds / len(items):.2f} s per volume -> {out}")
    return out


def _write_one(folder: Path, item: ExplainInput, model_map: np.ndarray, target: int, probabilities: np.ndarray,
               predicted_index: int, classes: Sequence[str], *, lesion: Path | None = None) -> dict:
    stem = file_stem(item.sample_id)
    scan_map = to_scan_grid(model_map, item.geometry)
    (folder / "maps").mkdir(exist_ok=True)
    (folder / "figures").mkdir(exist_ok=True)
    save_map(scan_map, item.geometry, folder / "maps" / f"{stem}.nii.gz")
    predicted = classes[predicted_index]
    title = (f"{item.sample_id}: map for '{classes[target]}' (p={probabilities[target]:.2f}), predicted "
             f"'{predicted}'" + (f", true '{item.y_true}'" if item.y_true else ""))
    mask = None
    if lesion is not None:
        from common.data.preprocess import load_nifti

        mask = load_nifti(lesion)[0] > 0.5
        if mask.shape != item.scan.shape:
            mask = None  # a mask of another grid: no outline rather than a wrong one
    slice_figure(item.scan, to_canonical_grid(model_map, item.geometry), item.zooms, title,
                 folder / "figures" / f"{stem}.png", lesion=mask)
    voxel = peak_voxel(scan_map)
    world = item.geometry.world(voxel)
    return {"sample_id": item.sample_id, "y_true": item.y_true or "", "y_pred": predicted, "target": classes[target],
            "probability": f"{probabilities[target]:.6g}",
            **{f"peak_{a}": v for a, v in zip("ijk", voxel)},
            **{f"peak_{a}": f"{v:.3f}" for a, v in zip("xyz", world)},
            "map": f"maps/{stem}.nii.gz", "figure": f"figures/{stem}.png"}


def _write_table(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=TABLE_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def check_out(out: Path) -> None:
    """An existing --out is replaced only if it is an earlier explain output (or empty)."""
    if out.exists() and (not out.is_dir() or (not (out / SETTINGS).is_file() and any(out.iterdir()))):
        raise ConfigError(f"--out {out}: exists and is not an explain output; choose another folder")


def _swap_in(new: Path, out: Path) -> None:
    """Replace `out` by `new` so that a reader sees the old or the new folder, never a mix."""
    if not out.exists():
        os.replace(new, out)
        return
    check_out(out)
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    os.replace(out, old)
    os.replace(new, out)
    shutil.rmtree(old, ignore_errors=True)


def read_table(folder: Path) -> list[dict]:
    path = Path(folder) / TABLE
    if not path.is_file():
        raise ConfigError(f"{folder}: no {TABLE} (run `explain` first)")
    with path.open(newline="") as f:
        return list(csv.DictReader(f))
