"""Simple, seeded, framework-free augmentation of a batch of volumes (B, D, H, W).

Random flips along chosen axes, random integer shifts (edge-padded), random intensity scale and
offset. The random stream is explicit, so a resumed run draws the same augmentations.
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

    def __post_init__(self):
        if any(a not in (0, 1, 2) for a in self.flip_axes):
            raise DataError(f"flip_axes {self.flip_axes}: axes must be 0, 1 or 2")
        if self.max_shift < 0 or self.intensity_scale < 0 or self.intensity_shift < 0:
            raise DataError(f"augmentation amounts must be >= 0, got {self}")

    def to_dict(self) -> dict:
        return asdict(self)


def augment_volume(volume: np.ndarray, config: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """volume: (D, H, W) float32 -> an augmented copy of the same shape."""
    for axis in config.flip_axes:
        if rng.random() < 0.5:
            volume = np.flip(volume, axis=axis)
    if config.max_shift:
        volume = _shift(volume, rng.integers(-config.max_shift, config.max_shift + 1, size=3))
    scale = rng.uniform(1 - config.intensity_scale, 1 + config.intensity_scale)
    offset = rng.uniform(-config.intensity_shift, config.intensity_shift)
    return (volume * scale + offset).astype(np.float32)


def _shift(volume: np.ndarray, shifts) -> np.ndarray:
    pad = [(max(s, 0), max(-s, 0)) for s in shifts]
    padded = np.pad(volume, pad, mode="edge")
    crop = tuple(slice(p[1], p[1] + n) for p, n in zip(pad, volume.shape))
    return padded[crop]
