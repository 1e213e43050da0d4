"""Quality control of t1-linear a person can look at: one figure per scan, one page for the dataset."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from common.atomic import atomic_write, atomic_write_text
from common.data.sources import strip_nifti_suffix


def registration_figure(registered, path: Path, qc_dir: Path) -> str:
    """The registered scan in three planes through the template's centre, the template brain mask's
    outline on top (a good registration puts the outline on the brain's edge). Returns the file name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from common.data.t1_linear import NMI_THRESHOLD, template_arrays

    _, mask, _ = template_arrays()
    volume = registered.volume
    x, y, z = (np.array(volume.shape) // 2).tolist()
    cuts = (("sagittal", lambda v: v[x, :, :]), ("coronal", lambda v: v[:, y, :]), ("axial", lambda v: v[:, :, z]))
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.4))
    low, high = np.percentile(volume[mask], (1, 99.5)) if mask.any() else (volume.min(), volume.max())
    for ax, (name, cut) in zip(axes, cuts):
        ax.imshow(cut(volume).T, cmap="gray", origin="lower", vmin=low, vmax=high)
        ax.contour(cut(mask.astype(float)).T, levels=[0.5], colors="red", linewidths=0.8)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    verdict = "ok" if registered.score >= NMI_THRESHOLD else f"FAILED (< {NMI_THRESHOLD})"
    fig.suptitle(f"{path.name}: NMI {registered.score:.3f} {verdict}", fontsize=9)
    fig.tight_layout()
    name = f"{strip_nifti_suffix(path.name)}.png"
    Path(qc_dir).mkdir(parents=True, exist_ok=True)
    atomic_write(Path(qc_dir) / name, lambda tmp: fig.savefig(tmp, dpi=80, format="png"))
    plt.close(fig)
    return name


def write_qc_page(qc_dir: Path, rows: list[dict]) -> Path:
    """qc/index.html (worst score first: the ones to look at) and qc/scores.csv."""
    from common.data.t1_linear import NMI_THRESHOLD, TEMPLATE_NAME

    rows = sorted(rows, key=lambda r: r["nmi"])
    lines = ["sample_id,path,nmi,passed,seconds"] + [
        f"{r['sample_id']},{r['path']},{r['nmi']},{r['passed']},{r['seconds']}" for r in rows]
    atomic_write_text(Path(qc_dir) / "scores.csv", "\n".join(lines) + "\n")
    failed = sum(not r["passed"] for r in rows)
    items = "".join(
        f"<div class='{'bad' if not r['passed'] else 'ok'}'><p>{html.escape(r['sample_id'])}: NMI {r['nmi']:.3f}"
        f"{' — FAILED' if not r['passed'] else ''}</p><img src='{html.escape(r['figure'])}' loading='lazy'></div>"
        for r in rows if r.get("figure"))
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>t1-linear QC</title><style>"
            "body{font-family:system-ui,sans-serif;margin:1em}.bad{background:#fdd}div{margin:.5em 0}"
            "img{max-width:100%}</style></head><body>"
            f"<h1>t1-linear registration QC</h1><p>{len(rows)} scans registered to the {TEMPLATE_NAME}; "
            f"{failed} below the threshold NMI {NMI_THRESHOLD} (reported as invalid). Sorted by score, worst "
            f"first. Red outline: the template's brain mask.</p>{items}</body></html>")
    atomic_write_text(Path(qc_dir) / "index.html", page)
    return Path(qc_dir) / "index.html"
