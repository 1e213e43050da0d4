"""Small operations on saliency maps shared by every method."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def upsample(grid_map: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """(d, h, w) feature-grid map -> (D, H, W) model grid, trilinear, voxel edges on voxel edges (each feature
    cell covers the same share of the volume, as a strided convolution's receptive field centres do)."""
    grid_map = np.asarray(grid_map, dtype=np.float32)
    factors = np.array(shape, dtype=float) / np.array(grid_map.shape, dtype=float)
    out = ndimage.zoom(grid_map, factors, order=1, mode="nearest", grid_mode=True)
    if out.shape != tuple(shape):  # rounding of non-integer factors
        out = out[tuple(slice(0, n) for n in shape)]
        out = np.pad(out, [(0, n - m) for n, m in zip(shape, out.shape)], mode="edge")
    return out


def peak_voxel(saliency: np.ndarray) -> tuple[int, int, int]:
    """Voxel of the largest value; among ties (occlusion's flat blocks, a saturated map) the tied voxel nearest
    their centroid, not the first in memory order (which biases peaks to a corner)."""
    saliency = np.asarray(saliency)
    tied = np.argwhere(saliency >= saliency.max())
    if len(tied) == 1:
        return tuple(int(v) for v in tied[0])
    centroid = tied.mean(axis=0)
    return tuple(int(v) for v in tied[np.argmin(((tied - centroid) ** 2).sum(axis=1))])


def positive_part(saliency: np.ndarray) -> np.ndarray:
    return np.maximum(np.asarray(saliency, dtype=np.float32), 0.0)
