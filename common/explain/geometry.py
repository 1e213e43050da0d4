"""Model grid -> the input scan's own voxel grid and affine: the inverse of `preprocess_file`'s geometry.

`preprocess_file` reorients a scan to RAS+ (nibabel's closest canonical), resamples it and centre-pads or
crops it to the model grid (`conform_geometry`). A map on the model grid is taken back through the same
steps in reverse, so it overlays the original file in FSLeyes, ITK-SNAP or 3D Slicer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel import orientations
from scipy import ndimage

from common.data.preprocess import ConformGeometry, PreprocessConfig, conform_geometry

RAS = orientations.axcodes2ornt(("R", "A", "S"))


@dataclass(frozen=True)
class ScanGeometry:
    """The input scan's grid (after squeezing a trailing singleton axis) and how it reached the model grid."""

    shape: tuple[int, int, int]  # the file's voxel grid
    affine: np.ndarray  # the file's voxel -> world (mm) affine
    to_canonical: np.ndarray  # nibabel orientation transform: file axes -> RAS+
    conform: ConformGeometry  # canonical grid -> model grid

    @property
    def from_canonical(self) -> np.ndarray:
        return orientations.ornt_transform(RAS, orientations.io_orientation(self.affine))

    def canonical_to_file(self, canonical: np.ndarray) -> np.ndarray:
        return orientations.apply_orientation(canonical, self.from_canonical)

    def world(self, voxel) -> np.ndarray:
        return nib.affines.apply_affine(self.affine, np.asarray(voxel, dtype=float))


def scan_geometry(path: Path, canonical_shape, zooms, preprocess: PreprocessConfig) -> ScanGeometry:
    """`canonical_shape`, `zooms`: what `load_nifti` returned for the file (the grid preprocessing resampled
    from); the file's own shape and affine come from its header (no voxels read)."""
    image = nib.funcs.squeeze_image(nib.load(str(path)))
    return ScanGeometry(tuple(int(n) for n in image.shape), np.asarray(image.affine, dtype=float),
                        orientations.io_orientation(image.affine),
                        conform_geometry(tuple(canonical_shape), zooms, preprocess))


def template_geometry(preprocess: PreprocessConfig) -> ScanGeometry:
    """For --preprocess t1-linear: the model grid came from the MNI152 template's 2 mm grid, so maps go back
    to template space (they overlay the template or any scan registered to it), not to the native scan."""
    from common.data.t1_linear import SPACING, template_arrays

    template, _, affine = template_arrays()
    return ScanGeometry(tuple(int(n) for n in template.shape), affine, orientations.io_orientation(affine),
                        conform_geometry(template.shape, (SPACING,) * 3, preprocess))


def model_grid_geometry(shape: tuple[int, int, int]) -> ScanGeometry:
    """For volumes that never were files (MedMNIST arrays): the model grid itself, identity affine."""
    shape = tuple(int(n) for n in shape)
    identity = ConformGeometry(shape, (1.0, 1.0, 1.0), shape, (0, 0, 0))
    return ScanGeometry(shape, np.eye(4), orientations.axcodes2ornt(("R", "A", "S")), identity)


def to_canonical_grid(model_map: np.ndarray, geometry: ScanGeometry) -> np.ndarray:
    """(D, H, W) model-grid map -> the scan's RAS+ voxel grid (trilinear; 0 outside the model's field)."""
    scale, shift = geometry.conform.model_coordinates()
    return ndimage.affine_transform(np.asarray(model_map, dtype=np.float32), np.diag(scale), offset=shift,
                                    output_shape=geometry.conform.source_shape, order=1, mode="constant", cval=0.0)


def to_scan_grid(model_map: np.ndarray, geometry: ScanGeometry) -> np.ndarray:
    """(D, H, W) model-grid map -> the file's own voxel grid (its shape and axis order)."""
    return geometry.canonical_to_file(to_canonical_grid(model_map, geometry))


def save_map(scan_map: np.ndarray, geometry: ScanGeometry, path: Path) -> None:
    """float32 NIfTI with the scan's affine (qform and sform), so viewers place it on the scan."""
    image = nib.Nifti1Image(np.asarray(scan_map, dtype=np.float32), geometry.affine)
    image.set_qform(geometry.affine, code=1)
    image.set_sform(geometry.affine, code=1)
    nib.save(image, str(path))
