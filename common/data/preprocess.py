"""Turn one NIfTI file (or an in-memory volume) into a normalised array of the target shape.

Order: load with nibabel (scale factors applied) -> canonical RAS orientation -> checks (3-D,
finite, not constant) -> intensity normalisation -> conform to the target shape -> storage dtype.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from common.errors import DataError

NORMALIZATIONS = ("zscore", "percentile", "minmax", "none")
DEFAULT_SHAPE = (32, 32, 32)  # the CPU presets' size; the seed trained at 192^3
RESIZE_MODES = ("fit", "stretch")
PIPELINES = ("basic", "t1-linear")  # basic: reorient + resample; t1-linear: + N4 + affine to MNI152
STORAGE_DTYPES = ("float32", "float16")


# Largest volume read (voxels): a header declaring more is refused before any allocation.
# 512^3 float32 is 512 MiB; raise it with VOLCLS_MAX_VOXELS for larger scans.
DEFAULT_MAX_VOXELS = 512**3


def max_voxels() -> int:
    text = os.environ.get("VOLCLS_MAX_VOXELS", str(DEFAULT_MAX_VOXELS))
    try:
        value = int(text)
    except ValueError:
        raise DataError(f"VOLCLS_MAX_VOXELS={text!r}: not a whole number of voxels") from None
    if value < 1:
        raise DataError(f"VOLCLS_MAX_VOXELS={text!r}: must be >= 1")
    return value


@dataclass(frozen=True)
class PreprocessConfig:
    shape: tuple[int, int, int] = DEFAULT_SHAPE  # (D, H, W) of every cached volume; non-cubic allowed
    # "fit": keep physical proportions (isotropic output voxels), centre and pad/crop;
    # "stretch": scale each axis independently to the target size.
    resize: str = "fit"
    # "zscore": mean/std of the foreground (voxels above the volume mean, a crude head mask);
    # "percentile": clip to the percentiles below, then scale to [0, 1]; "minmax": scale to [0, 1];
    # "auto": decided by the source in `resolved_for` (the cache always stores a resolved config).
    normalize: str = "auto"
    percentiles: tuple[float, float] = (0.5, 99.5)
    dtype: str = "float16"  # storage dtype of the cache; batches are cast to float32 when read
    # "t1-linear": N4 bias-field correction and affine registration to MNI152 first (common/data/t1_linear.py);
    # the scan then reaches `conform` on the template's 2 mm grid.
    pipeline: str = "basic"
    brain_mask: bool = False  # t1-linear only: zero outside the template's brain mask after registration

    def __post_init__(self):
        shape = tuple(int(s) for s in self.shape)
        if len(shape) != 3 or min(shape) < 2:
            raise DataError(f"shape {self.shape}: expected three sizes >= 2 (D H W)")
        if int(np.prod(shape, dtype=np.int64)) > max_voxels():
            raise DataError(f"shape {shape}: {int(np.prod(shape, dtype=np.int64)):,} voxels per volume, over the "
                            f"limit of {max_voxels():,} (set VOLCLS_MAX_VOXELS to allow it)")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "percentiles", tuple(float(p) for p in self.percentiles))
        for name, value, allowed in (
            ("resize", self.resize, RESIZE_MODES),
            ("normalize", self.normalize, ("auto", *NORMALIZATIONS)),
            ("dtype", self.dtype, STORAGE_DTYPES),
            ("preprocess", self.pipeline, PIPELINES),
        ):
            if value not in allowed:
                raise DataError(f"{name} '{value}' is not one of {list(allowed)}")
        if self.brain_mask and self.pipeline != "t1-linear":
            raise DataError("--brain-mask: only with --preprocess t1-linear (the mask is the template's)")
        low, high = self.percentiles
        if not 0 <= low < high <= 100:
            raise DataError(f"percentiles {self.percentiles}: expected 0 <= low < high <= 100")

    def to_dict(self) -> dict:
        return asdict(self)

    def resolved_for(self, source_kind: str) -> PreprocessConfig:
        """"auto" normalisation made concrete: MedMNIST arrays (often binary masks, no foreground
        variation) are min-max scaled to [0, 1]; NIfTI scans get the foreground z-score."""
        if self.normalize != "auto":
            return self
        return replace(self, normalize="minmax" if source_kind == "medmnist" else "zscore")


def _check_file_kind(path: Path) -> None:
    """Refuse, by name, what nibabel would misreport: directories, wrong compression for the suffix."""
    if path.is_dir():
        raise DataError(f"{path}: is a directory, not a NIfTI file")
    try:
        with path.open("rb") as f:
            head = f.read(348)
    except OSError as exc:
        raise DataError(f"{path}: cannot open ({exc.strerror or exc})") from exc
    gzipped = head[:2] == b"\x1f\x8b"
    plain_nifti = len(head) == 348 and head[344:347] in (b"n+1", b"ni1")  # NIfTI-1 magic
    if path.name.endswith(".nii") and gzipped:
        raise DataError(f"{path}: is gzip-compressed but named .nii; rename it to .nii.gz")
    if path.name.endswith(".nii.gz") and plain_nifti:
        raise DataError(f"{path}: is an uncompressed NIfTI file named .nii.gz; rename it to .nii")


def _check_declared_size(path: Path, image) -> None:
    """The header's shape against the voxel limit and the file's real size, before reading any voxel."""
    header = image.header
    voxels = int(np.prod(image.shape, dtype=np.int64))
    if voxels > max_voxels():
        raise DataError(f"{path}: header declares {image.shape} = {voxels:,} voxels, over the limit of "
                        f"{max_voxels():,} (set VOLCLS_MAX_VOXELS to allow larger volumes)")
    expected = int(header.get_data_offset()) + voxels * header.get_data_dtype().itemsize
    size = path.stat().st_size
    if path.name.endswith(".nii.gz"):
        with path.open("rb") as f:  # gzip's trailer: the uncompressed size modulo 2^32
            f.seek(-4, os.SEEK_END)
            size = int.from_bytes(f.read(4), "little")
        if expected >= 2**32:
            return  # the trailer cannot tell; nibabel's own read will fail on a short file
    if size < expected:
        raise DataError(f"{path}: header declares {image.shape} {header.get_data_dtype()} "
                        f"({expected:,} bytes with the header) but the file holds {size:,}: truncated or a corrupt header")


def load_nifti(path: Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    """(volume float32 in RAS+ voxel order, voxel sizes in mm). Raises DataError naming the file."""
    path = Path(path)
    try:
        os.stat(path)
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found") from exc
    except OSError as exc:  # e.g. a symbolic link loop
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    _check_file_kind(path)
    try:
        image = nib.load(str(path))
        image = nib.funcs.squeeze_image(image)  # (X, Y, Z, 1) -> (X, Y, Z)
        if len(image.shape) == 4:
            raise DataError(
                f"{path}: 4-D image of shape {image.shape}; only 3-D volumes are supported "
                "(extract one volume first, e.g. with fslroi)"
            )
        if len(image.shape) != 3 or min(image.shape) < 2:
            raise DataError(f"{path}: image of shape {image.shape} is not a 3-D volume")
        if image.get_data_dtype().kind == "c":
            raise DataError(f"{path}: complex-valued image ({image.get_data_dtype()}); convert it to a real "
                            "magnitude image first")
        _check_declared_size(path, image)
        image = nib.as_closest_canonical(image)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            data = np.asarray(image.get_fdata(dtype=np.float32))  # applies scl_slope / scl_inter
        zooms = tuple(float(z) for z in image.header.get_zooms()[:3])
    except DataError:
        raise
    except MemoryError as exc:
        raise DataError(f"{path}: not enough memory to read a volume of shape {image.shape}") from exc
    except Exception as exc:  # nibabel, gzip, zlib and EOF errors of truncated or foreign files
        raise DataError(f"{path}: cannot read as NIfTI ({type(exc).__name__}: {exc})") from exc
    return data, zooms


def check_volume(data: np.ndarray, *, origin: str) -> None:
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise DataError(f"{origin}: {bad} NaN/Inf voxel(s)")
    if data.min() == data.max():
        raise DataError(f"{origin}: constant volume (every voxel is {data.min()})")


def normalize_intensity(data: np.ndarray, config: PreprocessConfig, *, origin: str) -> np.ndarray:
    """Statistics in float64: a float32 std of values near 1e25 overflows (their squares exceed 3e38)."""
    data = data.astype(np.float64, copy=False)
    if config.normalize == "zscore":
        foreground = data[data > data.mean()]
        std = foreground.std()
        if foreground.size < 2 or std == 0:
            values = np.unique(data)
            kind = (f"a label-like image with {len(values)} distinct values {values.tolist()}" if len(values) <= 8
                    else "no intensity variation above the mean")
            raise DataError(f"{origin}: foreground z-score is undefined for {kind}; "
                            "use --normalize minmax (binary masks, label maps) or percentile")
        return (data - foreground.mean()) / std
    if config.normalize == "percentile":
        low, high = np.percentile(data, config.percentiles)
        if high <= low:
            raise DataError(f"{origin}: percentiles {config.percentiles} are equal ({low}); cannot scale")
        return (np.clip(data, low, high) - low) / (high - low)
    if config.normalize == "minmax":
        return (data - data.min()) / (data.max() - data.min())
    if config.normalize == "auto":
        raise ValueError("normalize 'auto' must be resolved (PreprocessConfig.resolved_for) before use")
    return data


@dataclass(frozen=True)
class ConformGeometry:
    """Where `conform` puts each voxel: per axis, the zoom factor, the resized size and the signed offset
    of the centre pad (+) or crop (-). Model-grid index m of source index i: m = (i + 0.5) * resized / source
    - 0.5 + offset (scipy's grid_mode zoom maps voxel edges onto voxel edges). The saliency maps use its inverse."""

    source_shape: tuple[int, int, int]
    factors: tuple[float, float, float]  # as passed to ndimage.zoom; all 1.0: no resampling
    resized_shape: tuple[int, int, int]
    offsets: tuple[int, int, int]

    def model_coordinates(self) -> tuple[np.ndarray, np.ndarray]:
        """(scale, shift) per axis with model index = scale * source index + shift."""
        scale = np.array(self.resized_shape, dtype=float) / np.array(self.source_shape, dtype=float)
        return scale, 0.5 * scale - 0.5 + np.array(self.offsets, dtype=float)


def conform_geometry(source_shape, zooms, config: PreprocessConfig) -> ConformGeometry:
    source = np.array(source_shape, dtype=float)
    target = np.array(config.shape, dtype=float)
    if config.resize == "stretch":
        factors = target / source
    else:
        extent = source * np.array(zooms, dtype=float)  # field of view in mm
        out_spacing = (extent / target).max()  # isotropic output voxels that fit the whole field
        factors = np.array(zooms, dtype=float) / out_spacing
    if np.allclose(factors, 1.0):
        factors = np.ones(3)
    resized = tuple(int(round(n * f)) for n, f in zip(source_shape, factors))  # ndimage.zoom's output shape
    offsets = tuple((want - have) // 2 if have < want else -((have - want) // 2)
                    for have, want in zip(resized, config.shape))
    return ConformGeometry(tuple(int(n) for n in source_shape), tuple(float(f) for f in factors), resized, offsets)


def conform(data: np.ndarray, zooms: tuple[float, float, float], config: PreprocessConfig) -> np.ndarray:
    """Resample (trilinear) to `config.shape`; "fit" keeps physical proportions and pads with the minimum."""
    geometry = conform_geometry(data.shape, zooms, config)
    if geometry.factors == (1.0, 1.0, 1.0):
        resized = data
    else:
        resized = ndimage.zoom(data, geometry.factors, order=1, mode="nearest", grid_mode=True)
    return _centre_pad_or_crop(resized, config.shape, fill=float(data.min()))


def _centre_pad_or_crop(data: np.ndarray, shape: tuple[int, int, int], *, fill: float) -> np.ndarray:
    out = np.full(shape, fill, dtype=np.float32)
    src, dst = [], []
    for have, want in zip(data.shape, shape):
        if have >= want:
            start = (have - want) // 2
            src.append(slice(start, start + want))
            dst.append(slice(0, want))
        else:
            start = (want - have) // 2
            src.append(slice(0, have))
            dst.append(slice(start, start + have))
    out[tuple(dst)] = data[tuple(src)]
    return out


def preprocess_array(data: np.ndarray, zooms, config: PreprocessConfig, *, origin: str) -> np.ndarray:
    if np.iscomplexobj(data):
        raise DataError(f"{origin}: complex-valued array; convert it to a real magnitude image first")
    data = np.asarray(data, dtype=np.float32)
    if data.ndim != 3 or min(data.shape) < 2:
        raise DataError(f"{origin}: array of shape {data.shape} is not a 3-D volume")
    check_volume(data, origin=origin)
    normalised = normalize_intensity(data, config, origin=origin).astype(np.float32)
    return to_storage(conform(normalised, zooms, config), config.dtype, origin=origin)


def to_storage(volume: np.ndarray, dtype: str, *, origin: str) -> np.ndarray:
    """Cast to the cache dtype, refusing values it cannot hold (float16 overflows to inf above 65504)."""
    limit = float(np.finfo(dtype).max)
    peak = float(np.abs(volume).max())
    if peak > limit:
        raise DataError(f"{origin}: values up to {peak:.3g} after normalisation exceed {dtype}'s range "
                        f"(+-{limit:.5g}); normalise the intensities (e.g. --normalize zscore) or use "
                        "--storage-dtype float32")
    return volume.astype(dtype)


class RegistrationFailed(DataError):
    """A t1-linear registration below the score threshold; carries its QC row for the QC page."""

    def __init__(self, qc_row: dict, message: str):
        super().__init__(message)
        self.qc_row = qc_row


def preprocess_file(path: Path, config: PreprocessConfig) -> np.ndarray:
    return preprocess_file_qc(path, config)[0]


def preprocess_file_qc(path: Path, config: PreprocessConfig, qc_dir: Path | None = None
                       ) -> tuple[np.ndarray, dict | None]:
    """(volume, quality-control row or None). t1-linear: the registration's score, and with `qc_dir` a QC
    figure; a registration below the score threshold is a DataError naming the file (after its figure)."""
    if config.pipeline != "t1-linear":
        data, zooms = load_nifti(path)
        return preprocess_array(data, zooms, config, origin=str(path)), None
    from common.data.t1_linear import NMI_THRESHOLD, SPACING, t1_linear

    load_nifti(path)  # every check of the basic path (size, dimensions, dtype) before registration
    registered = t1_linear(path, brain_mask=config.brain_mask)
    row = {"path": str(path), "nmi": round(registered.score, 4), "passed": registered.score >= NMI_THRESHOLD,
           "seconds": round(registered.seconds, 2)}
    if qc_dir is not None:
        from common.data.qc import registration_figure

        row["figure"] = registration_figure(registered, Path(path), Path(qc_dir))
    if not row["passed"]:
        raise RegistrationFailed(row, f"{path}: registration to MNI152 failed its check: normalised mutual information "
                        f"{registered.score:.3f} < {NMI_THRESHOLD} (see the QC page of the cache)")
    return preprocess_array(registered.volume, (SPACING,) * 3, config, origin=str(path)), row
