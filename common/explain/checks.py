"""Are the maps right, not just drawn? The pointing game against known lesions, and the model-randomisation
sanity check (Adebayo et al. 2018, "Sanity checks for saliency maps")."""

from __future__ import annotations

import csv
import warnings
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage, stats

from common.errors import DataError
from common.explain.run import read_table

# Spearman rank correlation between trained and randomised maps above which a method fails the check:
# its maps then depend on the input more than on what the model learned.
SANITY_THRESHOLD = 0.5


@dataclass(frozen=True)
class Proportion:
    hits: int
    total: int
    low: float  # 95 % Wilson interval
    high: float

    @property
    def value(self) -> float:
        return self.hits / self.total if self.total else float("nan")


def proportion(hits: int, total: int) -> Proportion:
    if total == 0:
        return Proportion(0, 0, float("nan"), float("nan"))
    interval = stats.binomtest(hits, total).proportion_ci(confidence_level=0.95, method="wilson")
    return Proportion(hits, total, float(interval.low), float(interval.high))


def read_masks(lesions_csv: Path) -> dict[str, Path]:
    """sample_id -> mask file, from a CSV with columns sample_id, path (relative to the CSV)."""
    lesions_csv = Path(lesions_csv)
    if not lesions_csv.is_file():
        raise DataError(f"{lesions_csv}: file not found")
    with lesions_csv.open(newline="") as f:
        reader = csv.DictReader(f)
        if not {"sample_id", "path"} <= set(reader.fieldnames or []):
            raise DataError(f"{lesions_csv}: needs columns sample_id, path (found {reader.fieldnames})")
        return {row["sample_id"]: lesions_csv.parent / row["path"] for row in reader}


def peak_in_mask(peak: tuple[int, int, int], mask: np.ndarray, *, dilation: int = 1) -> bool:
    """Is the peak voxel inside the mask grown by `dilation` voxels (6-connected steps)?"""
    grown = ndimage.binary_dilation(mask > 0, structure=ndimage.generate_binary_structure(3, 1),
                                    iterations=dilation) if dilation else mask > 0
    return bool(grown[tuple(peak)])


def pointing_game(explain_dir: Path, masks: dict[str, Path], *, dilation: int = 1) -> Proportion:
    """Share of the maps with a mask (the lesion-class inputs) whose peak lies in the lesion. The peak is
    the one saliency.csv records, on the scan's own grid, so the check covers the resampling back too."""
    hits = total = 0
    rows = read_table(explain_dir)
    if masks and not any(row["sample_id"] in masks for row in rows):  # else a silent NaN in the table
        raise DataError(f"{explain_dir}: none of its {len(rows)} maps has a lesion mask: the masks' sample ids "
                        f"(e.g. {sorted(masks)[:3]}) match no map's (e.g. {[r['sample_id'] for r in rows[:3]]})")
    for row in rows:
        if row["sample_id"] not in masks:
            continue
        mask_path = masks[row["sample_id"]]
        try:
            mask_image = nib.load(str(mask_path))
            mask = np.asarray(mask_image.dataobj)  # read here: a truncated file fails now, by name
        except FileNotFoundError:
            raise DataError(f"{mask_path}: lesion mask not found (sample {row['sample_id']})") from None
        except Exception as exc:  # a truncated or corrupt NIfTI
            raise DataError(f"{mask_path}: not a readable lesion mask ({type(exc).__name__}: {exc})") from None
        map_image = nib.load(str(Path(explain_dir) / row["map"]))
        if mask_image.shape != map_image.shape or not np.allclose(mask_image.affine, map_image.affine, atol=1e-4):
            raise DataError(f"{masks[row['sample_id']]}: mask grid {mask_image.shape} differs from the map's "
                            f"{map_image.shape} (or its affine): masks must be on the input scan's grid")
        peak = tuple(int(row[f"peak_{a}"]) for a in "ijk")
        hits += peak_in_mask(peak, mask, dilation=dilation)
        total += 1
    return proportion(hits, total)


@dataclass(frozen=True)
class Similarity:
    mean: float  # mean Spearman rank correlation over the inputs
    low: float  # 95 % bootstrap interval of the mean
    high: float
    n: int

    @property
    def passes(self) -> bool:
        return self.mean < SANITY_THRESHOLD


def randomisation_similarity(trained_dir: Path, random_dir: Path, *, n_resamples: int = 2000,
                             seed: int = 0) -> Similarity:
    """Spearman correlation of each input's map from the trained model with its map from the same
    architecture with re-initialised weights. High: the map shows the input, not the model."""
    random_rows = {row["sample_id"]: row for row in read_table(random_dir)}
    rhos = []
    for row in read_table(trained_dir):
        if row["sample_id"] not in random_rows:
            continue
        a = np.asarray(nib.load(str(Path(trained_dir) / row["map"])).dataobj, dtype=np.float64).ravel()
        b = np.asarray(nib.load(str(Path(random_dir) / random_rows[row["sample_id"]]["map"])).dataobj,
                       dtype=np.float64).ravel()
        with warnings.catch_warnings():  # a constant map (a dead randomised network) is handled below
            warnings.simplefilter("ignore", stats.ConstantInputWarning)
            rho = stats.spearmanr(a, b).statistic
        rhos.append(0.0 if np.isnan(rho) else float(rho))  # a constant map carries no ranking
    if not rhos:
        raise DataError(f"{trained_dir} and {random_dir}: no input in common")
    rhos = np.array(rhos)
    rng = np.random.default_rng(seed)
    means = rng.choice(rhos, size=(n_resamples, len(rhos))).mean(axis=1)
    return Similarity(float(rhos.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5)),
                      len(rhos))


def check_runs(run_dirs: list[Path], *, lesions: Path | None, out: Path) -> Path:
    """checks.md + checks.json: every run x method that has maps under <run>/explain/<method>; the pointing
    game where lesion masks are known, the randomisation check where <method>-random exists."""
    from common.atomic import atomic_write_text
    from common.explain.run import METHODS, SETTINGS
    from common.runs.record import read_record

    if Path(out).exists() and not Path(out).is_dir():
        raise DataError(f"--out {out}: is a file; name a folder for checks.md and checks.json")
    rows = []
    for run_dir in run_dirs:
        record = read_record(run_dir)
        masks = lesion_masks(record, lesions)
        for method in METHODS:
            trained, randomised = Path(run_dir) / "explain" / method, Path(run_dir) / "explain" / f"{method}-random"
            if not (trained / SETTINGS).is_file():
                continue
            row = {"run": str(run_dir), "model": record.model, "preset": record.preset, "method": method}
            if masks:
                game = pointing_game(trained, masks)
                row.update(pointing=game.value, pointing_low=game.low, pointing_high=game.high,
                           pointing_hits=game.hits, pointing_total=game.total)
            if (randomised / SETTINGS).is_file():
                similarity = randomisation_similarity(trained, randomised)
                row.update(spearman=similarity.mean, spearman_low=similarity.low, spearman_high=similarity.high,
                           spearman_n=similarity.n, sanity_passes=similarity.passes)
            rows.append(row)
    if not rows:
        raise DataError(f"no maps under {[str(r) for r in run_dirs]}: run `explain --split test` first")
    out = Path(out)
    import json

    atomic_write_text(out / "checks.json", json.dumps(rows, indent=2) + "\n")
    atomic_write_text(out / "checks.md", checks_markdown(rows))
    return out / "checks.md"


def lesion_masks(record, lesions: Path | None) -> dict[str, Path]:
    """sample id -> mask file: from `lesions` (a CSV), else the demo's own planted lesions, else none."""
    if lesions is not None:
        return read_masks(lesions)
    if record.data.source == "demo":
        from common.data.demo import demo_lesions

        return read_masks(demo_lesions())
    return {}


def checks_markdown(rows: list[dict]) -> str:
    lines = [f"| model | method | pointing game (peak in lesion ±1 voxel) [95% CI] | Spearman trained vs "
             f"re-initialised [95% CI] (passes if < {SANITY_THRESHOLD}) |", "|---|---|---|---|"]
    for row in rows:
        game = (f"{row['pointing']:.3f} ({row['pointing_hits']}/{row['pointing_total']}) "
                f"[{row['pointing_low']:.2f}, {row['pointing_high']:.2f}]" if "pointing" in row else "—")
        sanity = (f"{row['spearman']:.3f} [{row['spearman_low']:.2f}, {row['spearman_high']:.2f}] "
                  f"{'passes' if row['sanity_passes'] else 'FAILS'}" if "spearman" in row else "—")
        lines.append(f"| {row['model']} ({row['preset']}) | {row['method']} | {game} | {sanity} |")
    return "\n".join(lines) + "\n"
