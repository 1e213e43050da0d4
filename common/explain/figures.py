"""One PNG per input: three orthogonal slices through the map's peak, the map over the scan."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common.atomic import atomic_write
from common.explain.maps import peak_voxel

# Below this share of the map's maximum nothing is drawn, so the scan stays readable under the map.
OVERLAY_FLOOR = 0.25


def slice_figure(scan: np.ndarray, saliency: np.ndarray, zooms, title: str, path: Path, *,
                 lesion: np.ndarray | None = None) -> None:
    """scan, saliency (and the optional boolean lesion mask, outlined in cyan): (X, Y, Z) in RAS+ voxel order
    (as `load_nifti` returns a scan). A colour bar gives the map's scale (share of its maximum)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, y, z = peak_voxel(saliency)
    top = float(saliency.max())
    shown = np.ma.masked_less_equal(saliency, OVERLAY_FLOOR * top if top > 0 else 0.0)
    views = (  # (name, 2-D slice (horizontal axis first), aspect = vertical / horizontal voxel size)
        ("sagittal", lambda v: v[x, :, :], zooms[2] / zooms[1]),
        ("coronal", lambda v: v[:, y, :], zooms[2] / zooms[0]),
        ("axial", lambda v: v[:, :, z], zooms[1] / zooms[0]),
    )
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.4))
    low, high = np.percentile(scan, (1, 99.5))
    overlay = None
    for ax, (name, cut, aspect) in zip(axes, views):
        ax.imshow(cut(scan).T, cmap="gray", origin="lower", aspect=aspect, vmin=low, vmax=high)
        overlay = ax.imshow(cut(shown).T / (top or 1.0), cmap="hot", origin="lower", aspect=aspect, alpha=0.6,
                            vmin=0, vmax=1)
        if lesion is not None and cut(lesion).any():
            ax.contour(cut(lesion).T.astype(float), levels=[0.5], colors="cyan", linewidths=1.2, origin="lower")
        ax.set_title(name, fontsize=11)
        ax.axis("off")
    fig.suptitle(f"{title}\npeak at voxel (RAS) {x}, {y}, {z}" + ("; known lesion outlined in cyan"
                                                                   if lesion is not None else ""), fontsize=11)
    fig.tight_layout(rect=(0, 0, 0.93, 1))
    bar = fig.colorbar(overlay, ax=list(axes), fraction=0.025, pad=0.02)
    bar.set_label(f"saliency / its maximum (shown above {OVERLAY_FLOOR})", fontsize=9)
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)
