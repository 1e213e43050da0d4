"""`--preprocess t1-linear`: ClinicaDL's t1-linear idea with SimpleITK and nilearn's MNI152 template.

N4 bias-field correction, then an affine registration (Mattes mutual information, three resolutions,
initialised by the images' centres of mass) to the MNI152 ICBM 2009a nonlinear symmetric template at
2 mm, which nilearn ships inside its wheel (no download). The scan is resampled onto the template's grid
(99 x 117 x 95 voxels of 2 mm, RAS+), optionally masked by the template's brain mask, and then goes
through the usual normalisation and conform steps, so the same voxel is the same place in every head.

Every registration is scored by the normalised mutual information (NMI, (H(A) + H(B)) / H(A, B), 1 to 2)
of the registered scan with the template over the template's grid; a score below NMI_THRESHOLD is a
failed registration and the file is reported as invalid (one error lists every such file, or
--drop-invalid leaves them out, recorded in the run), never silently kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from common.errors import DataError

SPACING = 2.0  # mm: the template grid the scans are registered and resampled onto
# Calibrated on IXI: 8 scans placed by their centres of mass only (no registration) scored 1.052-1.091 and
# 1.055-1.092 upside down; all 181 registered scans 1.124-1.192 (every QC figure looked aligned, the worst too).
NMI_THRESHOLD = 1.11
TEMPLATE_NAME = "MNI152 ICBM 2009a nonlinear symmetric (nilearn)"


@dataclass(frozen=True)
class Registered:
    volume: np.ndarray  # (99, 117, 95) float32, RAS+ voxel order on the template's 2 mm grid
    score: float  # NMI with the template
    seconds: float


def _sitk():
    try:
        import SimpleITK as sitk
    except ImportError as exc:  # a dependency of the project; missing only in a broken environment
        raise DataError("--preprocess t1-linear needs SimpleITK (pip install SimpleITK)") from exc
    return sitk


@lru_cache(maxsize=1)
def template_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(template (X, Y, Z) float32 RAS+, brain mask bool, affine) at 2 mm, from nilearn's package data."""
    from nilearn.datasets import load_mni152_brain_mask, load_mni152_template

    template = load_mni152_template(resolution=2)
    mask = load_mni152_brain_mask(resolution=2)
    return (np.asarray(template.get_fdata(), dtype=np.float32), np.asarray(mask.get_fdata()) > 0,
            np.asarray(template.affine, dtype=float))


def to_sitk(volume: np.ndarray, affine: np.ndarray):
    """A RAS+ axis-aligned numpy volume -> SimpleITK image (ITK's physical space is LPS)."""
    sitk = _sitk()
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(volume, dtype=np.float32).transpose(2, 1, 0)))
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    lps = np.diag([-1.0, -1.0, 1.0])
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetOrigin(tuple(float(v) for v in lps @ affine[:3, 3]))
    image.SetDirection(tuple(float(v) for v in (lps @ affine[:3, :3] / spacing).ravel()))
    return image


def from_sitk(image) -> np.ndarray:
    """SimpleITK image on a RAS+ template grid -> (X, Y, Z) numpy."""
    return _sitk().GetArrayFromImage(image).transpose(2, 1, 0)


def n4_correct(image, *, shrink: int = 2, iterations=(50, 50, 30)):
    """N4 bias-field correction (Tustison et al. 2010) fitted on a shrunk copy inside an Otsu head mask; the
    field is then evaluated at full resolution and divided out."""
    sitk = _sitk()
    image = sitk.Cast(image, sitk.sitkFloat32)
    mask = sitk.OtsuThreshold(image, 0, 1, 200)
    corrector = sitk.N4BiasFieldCorrectionImageFilter()
    corrector.SetMaximumNumberOfIterations(list(iterations))
    corrector.Execute(sitk.Shrink(image, [shrink] * 3), sitk.Shrink(mask, [shrink] * 3))
    field = sitk.Cast(sitk.Exp(corrector.GetLogBiasFieldAsImage(image)), sitk.sitkFloat32)
    return sitk.Cast(image / field, sitk.sitkFloat32)


def register_affine(fixed, moving, *, seed: int = 0, iterations: int = 200):
    """Affine moving -> fixed: Mattes MI (32 bins, 20 % of voxels, seeded), regular-step gradient descent
    with scales from physical shifts, shrink 4/2/1 with smoothing 2/1/0 mm, initialised at the centres of
    mass. (Plain gradient descent with the same budget stopped 4-24 mm from a known affine that this
    recovers to 0.15 mm: tests/test_t1_linear.py.) Returns T with moving sampled at T(x) for fixed points x."""
    sitk = _sitk()
    initial = sitk.CenteredTransformInitializer(fixed, moving, sitk.AffineTransform(3),
                                                sitk.CenteredTransformInitializerFilter.MOMENTS)
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(32)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(0.2, seed)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(learningRate=2.0, minStep=1e-4, numberOfIterations=iterations,
                                                    relaxationFactor=0.5)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel([4, 2, 1])
    method.SetSmoothingSigmasPerLevel([2, 1, 0])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetInitialTransform(initial, inPlace=False)
    return method.Execute(fixed, moving)


def normalized_mutual_information(a: np.ndarray, b: np.ndarray, *, bins: int = 32) -> float:
    """(H(A) + H(B)) / H(A, B): 1 for independent images, 2 for identical ones."""
    joint, _, _ = np.histogram2d(np.ravel(a), np.ravel(b), bins=bins)
    p = joint / joint.sum()

    def entropy(q):
        q = q[q > 0]
        return float(-(q * np.log(q)).sum())

    return (entropy(p.sum(axis=1)) + entropy(p.sum(axis=0))) / entropy(p.ravel())


def registration_score(registered: np.ndarray, template: np.ndarray) -> float:
    """NMI over the whole template grid: the head's outline against the background carries most of the
    alignment signal (inside the brain alone, IXI scored 1.03-1.04 aligned vs 1.01-1.02 misaligned; over the
    grid 1.13-1.16 vs 1.05-1.08)."""
    return normalized_mutual_information(registered, template)


def t1_linear(path: Path, *, brain_mask: bool = False) -> Registered:
    """One scan -> the template grid. Raises DataError naming the file if it cannot be read or registered."""
    import time

    sitk = _sitk()
    start = time.perf_counter()
    template, mask, affine = template_arrays()
    try:
        moving = sitk.ReadImage(str(path), sitk.sitkFloat32)
        if moving.GetDimension() != 3:
            raise DataError(f"{path}: {moving.GetDimension()}-D image; t1-linear needs a 3-D volume")
        corrected = n4_correct(moving)
        fixed = to_sitk(template, affine)
        transform = register_affine(fixed, corrected)
        registered = from_sitk(sitk.Resample(corrected, fixed, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32))
    except DataError:
        raise
    except RuntimeError as exc:  # ITK's exceptions: unreadable file, optimiser failure
        raise DataError(f"{path}: t1-linear failed ({str(exc).strip().splitlines()[-1][:200]})") from exc
    score = registration_score(registered, template)
    if brain_mask:
        registered = np.where(mask, registered, 0.0).astype(np.float32)
    return Registered(np.asarray(registered, dtype=np.float32), score, time.perf_counter() - start)
