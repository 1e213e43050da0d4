"""SimpleITK (the project's t1-linear) against ANTsPy on the same IXI scans: seconds and alignment score.

    pip install antspyx   # not a project dependency: only this comparison uses it
    .venv/bin/python results/ixi_age_t1_linear/compare_registration.py [N]   (from the repository root)

Both do N4 (shrink 2) and an affine registration to the same 2 mm MNI152 template grid; both results are
scored by the project's registration score (NMI with the template over its grid). Scans alternate between
the two libraries, so both see the same machine load.
"""

from __future__ import annotations

import csv
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib

from common.data.t1_linear import NMI_THRESHOLD, registration_score, t1_linear, template_arrays

IXI = Path(__file__).resolve().parents[3] / "shared" / "data" / "ixi_t1_hh"


def ants_linear(path: Path, template_file: Path):
    import ants

    start = time.perf_counter()
    moving = ants.n4_bias_field_correction(ants.image_read(str(path)), shrink_factor=2)
    fixed = ants.image_read(str(template_file))
    warped = ants.registration(fixed, moving, type_of_transform="Affine", random_seed=0)["warpedmovout"]
    return warped.numpy(), time.perf_counter() - start


def main(n: int) -> None:
    template, _, affine = template_arrays()
    rows = list(csv.DictReader((IXI / "labels.csv").open()))[:n]
    with tempfile.TemporaryDirectory() as tmp:
        template_file = Path(tmp) / "template.nii.gz"
        nib.save(nib.Nifti1Image(template, affine), template_file)
        print("| scan | SimpleITK s | SimpleITK NMI | ANTsPy s | ANTsPy NMI |\n|---|---|---|---|---|")
        totals = {"sitk": [], "ants": []}
        for row in rows:
            path = IXI / row["path"]
            ours = t1_linear(path)
            warped, seconds = ants_linear(path, template_file)
            theirs = registration_score(warped, template)
            totals["sitk"].append((ours.seconds, ours.score))
            totals["ants"].append((seconds, theirs))
            print(f"| {row['subject_id']} | {ours.seconds:.1f} | {ours.score:.3f} | {seconds:.1f} | {theirs:.3f} |",
                  flush=True)
    for name, values in totals.items():
        seconds = [v[0] for v in values]
        scores = [v[1] for v in values]
        print(f"\n{name}: mean {sum(seconds) / len(seconds):.1f} s per scan, NMI {min(scores):.3f}-{max(scores):.3f} "
              f"(threshold {NMI_THRESHOLD})")
    print(f"\nSimpleITK / ANTsPy time: {sum(v[0] for v in totals['sitk']) / sum(v[0] for v in totals['ants']):.2f}x")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
