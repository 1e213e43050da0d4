"""t1-linear: N4 on a known bias field, affine registration recovering a known transform, the score that
flags a failed registration, the cache's QC page, and real IXI scans (skipped without ../shared/data)."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from common.data.preprocess import PreprocessConfig
from common.data.t1_linear import (
    NMI_THRESHOLD,
    from_sitk,
    n4_correct,
    register_affine,
    registration_score,
    template_arrays,
    to_sitk,
)
from common.errors import DataError
from tests.conftest import SHARED_DATA, needs_shared_data

sitk = pytest.importorskip("SimpleITK")


def test_n4_reduces_a_synthetic_bias_field():
    shape = (48, 48, 48)
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij"))
    ball = ((grid - 24) ** 2).sum(0) <= 18**2
    rng = np.random.default_rng(0)
    flat = np.where(ball, 100.0, 5.0) + rng.normal(0, 2, shape)
    bias = 0.7 + 0.6 * grid[0] / 47  # a smooth 0.7 -> 1.3 ramp along one axis
    image = to_sitk((flat * bias).astype(np.float32), np.diag([2.0, 2.0, 2.0, 1.0]))
    corrected = from_sitk(n4_correct(image))

    def cv(volume):
        return float(volume[ball].std() / volume[ball].mean())

    assert cv(flat * bias) > 0.08 > cv(flat)
    assert cv(corrected) < 0.5 * cv(flat * bias)


def test_sitk_conversion_keeps_world_coordinates():
    affine = np.array([[2.0, 0, 0, -98], [0, 2.0, 0, -134], [0, 0, 2.0, -72], [0, 0, 0, 1]])
    image = to_sitk(np.zeros((5, 6, 7), np.float32), affine)
    lps = image.TransformIndexToPhysicalPoint((1, 2, 3))
    ras = affine @ [1, 2, 3, 1]
    np.testing.assert_allclose(lps, [-ras[0], -ras[1], ras[2]])
    assert from_sitk(image).shape == (5, 6, 7)


@pytest.mark.slow
def test_registration_recovers_a_known_affine():
    template, mask, affine = template_arrays()
    fixed = to_sitk(template, affine)
    known = sitk.AffineTransform(3)
    rotation = sitk.VersorTransform((0, 0, 1), np.deg2rad(8)).GetMatrix()
    known.SetMatrix(tuple((np.array(rotation).reshape(3, 3) * 1.06).ravel()))
    known.SetTranslation((6.0, -4.0, 3.0))
    known.SetCenter(fixed.TransformContinuousIndexToPhysicalPoint([n / 2 for n in fixed.GetSize()]))
    # moving(x) = template(known^-1(x)); ITK's registration transform maps fixed points into the moving
    # image (Resample samples moving at T(x)), so the answer is T = known
    moving = sitk.Resample(fixed, fixed, known.GetInverse(), sitk.sitkLinear, 0.0)
    recovered = register_affine(fixed, moving)
    errors = []
    for index in np.argwhere(mask)[::97]:  # brain voxels: where recovered and known should agree
        point = fixed.TransformIndexToPhysicalPoint([int(i) for i in index])
        errors.append(np.linalg.norm(np.subtract(recovered.TransformPoint(point), known.TransformPoint(point))))
    assert np.mean(errors) < 1.5  # mm, on a 2 mm grid


def test_score_falls_with_misalignment():
    template, _, _ = template_arrays()
    scores = [registration_score(np.roll(template, shift, axis=2), template) for shift in (0, 2, 8)]
    assert scores[0] == pytest.approx(2.0) and scores[0] > scores[1] > scores[2]
    assert registration_score(template[:, :, ::-1], template) < scores[1]  # upside down


@pytest.mark.slow
def test_a_failed_registration_is_reported_by_file_with_its_qc_page(tmp_path, monkeypatch):
    from common.data import t1_linear
    from common.data.dataset import prepare_dataset
    from common.data.demo import ensure_demo

    manifest = ensure_demo(tmp_path / "cache")
    rows = list(csv.DictReader(manifest.open()))[:6]
    small = tmp_path / "six.csv"
    small.write_text("path,subject_id,label\n" + "".join(
        f"{manifest.parent / r['path']},{r['subject_id']},{r['label']}\n" for r in rows))
    monkeypatch.setattr(t1_linear, "NMI_THRESHOLD", 1.99)  # nothing passes: every scan must be named
    config = PreprocessConfig(shape=(16, 16, 16), pipeline="t1-linear")
    with pytest.raises(DataError) as failed:
        prepare_dataset(small, label_column="label", preprocess=config, cache_root=tmp_path / "c", progress=False)
    text = str(failed.value)
    assert "6 of 6 samples are invalid" in text and "registration to MNI152 failed its check" in text
    page = text.split("QC page of this attempt: ")[1].strip()
    assert "demo-sub000_scan0" in open(page).read()
    assert not list((tmp_path / "c" / "volumes").glob("*/meta.json"))  # no cache was kept


def test_brain_mask_needs_t1_linear():
    with pytest.raises(DataError, match="--brain-mask: only with --preprocess t1-linear"):
        PreprocessConfig(brain_mask=True)


@pytest.mark.slow
@needs_shared_data("ixi_t1_hh", "labels.csv")
def test_five_ixi_scans_align_to_the_template(tmp_path):
    from common.data.cache import build_or_load_cache
    from common.data.sources import read_manifest

    rows = list(csv.DictReader((SHARED_DATA / "ixi_t1_hh" / "labels.csv").open()))[:5]
    manifest = tmp_path / "five.csv"
    manifest.write_text("path,subject_id,label\n" + "".join(
        f"{SHARED_DATA / 'ixi_t1_hh' / r['path']},{r['subject_id']},{r['sex']}\n" for r in rows))
    config = PreprocessConfig(shape=(32, 32, 32), pipeline="t1-linear", brain_mask=True)
    folder = build_or_load_cache(read_manifest(manifest, label_column="label"), config.resolved_for("manifest"),
                                 tmp_path / "c", workers=2, progress=False)
    scores = list(csv.DictReader((folder / "qc" / "scores.csv").open()))
    assert len(scores) == 5 and all(float(r["nmi"]) >= NMI_THRESHOLD for r in scores), scores
    assert (folder / "qc" / "index.html").is_file()
    volumes = np.load(folder / "volumes.npy")
    assert volumes.shape == (5, 32, 32, 32) and np.isfinite(volumes.astype(np.float32)).all()
    # the threshold separates: the same scan placed by its centre of mass only (no registration) fails it
    template, _, affine = template_arrays()
    fixed = to_sitk(template, affine)
    moving = n4_correct(sitk.ReadImage(str(SHARED_DATA / "ixi_t1_hh" / rows[0]["path"]), sitk.sitkFloat32))
    placed = sitk.CenteredTransformInitializer(fixed, moving, sitk.AffineTransform(3),
                                               sitk.CenteredTransformInitializerFilter.MOMENTS)
    unregistered = from_sitk(sitk.Resample(moving, fixed, placed, sitk.sitkLinear, 0.0))
    assert registration_score(unregistered, template) < NMI_THRESHOLD <= float(scores[0]["nmi"])
