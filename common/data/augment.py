"""Simple, seeded, framework-free augmentation of a batch of volumes (B, D, H, W).

Random flips along chosen axes, optional small random rotations and isotropic scaling (one affine
resampling about the volume's centre, scipy.ndimage, trilinear), random integer shifts (edge-padded),
random intensity scale and offset. The random stream is explicit, so a resumed run draws the same
augmentations. Rotation and scaling are off by default (the seed's augmentation has none).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from common.errors import DataError


@dataclass(frozen=True)
class AugmentConfig:
    flip_axes: tuple[int, ...] = (0,)  # volume axes (0=D, 1=H, 2=W) flipped with probability 1/2
    max_shift: int = 4  # voxels, per axis, uniform in [-max_shift, max_shift]
    intensity_scale: float = 0.1  # multiply by U(1 - s, 1 + s)
    intensity_shift: float = 0.1  # add U(-s, s)
    max_rotation_degrees: float = 0.0  # about each axis, U(-r, r); 0: off
    max_scale: float = 0.0  # isotropic zoom by U(1 - s, 1 + s); 0: off

    def __post_init__(self):
        amounts = (self.max_shift, self.intensity_scale, self.intensity_shift, self.max_rotation_degrees, self.max_scale)
        if not all(np.isfinite(amounts)):
            raise DataError(f"augmentation amounts must be finite numbers, got {self}")
        if any(a not in (0, 1, 2) for a in self.flip_axes):
            raise DataError(f"flip_axes {self.flip_axes}: axes must be 0, 1 or 2")
        if min(self.max_shift, self.intensity_scale, self.intensity_shift, self.max_rotation_degrees,
               self.max_scale) < 0:
            raise DataError(f"augmentation amounts must be >= 0, got {self}")
        if self.max_rotation_degrees > 45 or self.max_scale >= 0.5:
            raise DataError(f"rotation {self.max_rotation_degrees} degrees / scale {self.max_scale}: augmentation "
                            "is meant to be small (at most 45 degrees, scale below 0.5)")

    def to_dict(self) -> dict:
        return asdict(self)


def augment_volume(volume: np.ndarray, config: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """volume: (D, H, W) float32 -> an augmented copy of the same shape."""
    for axis in config.flip_axes:
        if rng.random() < 0.5:
            volume = np.flip(volume, axis=axis)
    if config.max_rotation_degrees or config.max_scale:
        angles = np.deg2rad(rng.uniform(-config.max_rotation_degrees, config.max_rotation_degrees, size=3))
        zoom = rng.uniform(1 - config.max_scale, 1 + config.max_scale)
        volume = rotate_and_scale(volume, angles, zoom)
    if config.max_shift:
        volume = _shift(volume, rng.integers(-config.max_shift, config.max_shift + 1, size=3))
    scale = rng.uniform(1 - config.intensity_scale, 1 + config.intensity_scale)
    offset = rng.uniform(-config.intensity_shift, config.intensity_shift)
    return (volume * scale + offset).astype(np.float32)


def rotation_matrix(angles) -> np.ndarray:
    """Rotation by angles[i] radians about axis i, applied in the order 0, 1, 2: a (3, 3) matrix."""
    matrix = np.eye(3)
    for axis, angle in enumerate(angles):
        c, s = np.cos(angle), np.sin(angle)
        i, j = [a for a in range(3) if a != axis]
        r = np.eye(3)
        r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
        matrix = r @ matrix
    return matrix


def rotate_and_scale(volume: np.ndarray, angles, zoom: float) -> np.ndarray:
    """Rotate by `angles` (radians, per axis) and zoom by `zoom` about the centre, trilinear; voxels that
    come from outside the volume take its edge value, as the shift does."""
    from scipy.ndimage import affine_transform

    # affine_transform maps output coordinates o to input coordinates M @ o + offset: the inverse map.
    inverse = rotation_matrix(angles).T / zoom
    centre = (np.asarray(volume.shape) - 1) / 2
    offset = centre - inverse @ centre
    return affine_transform(np.ascontiguousarray(volume, dtype=np.float32), inverse, offset=offset, order=1,
                            mode="nearest")


def _shift(volume: np.ndarray, shifts) -> np.ndarray:
    pad = [(max(s, 0), max(-s, 0)) for s in shifts]
    padded = np.pad(volume, pad, mode="edge")
    crop = tuple(slice(p[1], p[1] + n) for p, n in zip(pad, volume.shape))
    return padded[crop]
