
import nibabel as nib
import numpy as np
import pytest
from conftest import needs_shared_data, write_nifti

from common.data.preprocess import PreprocessConfig, conform, load_nifti, preprocess_file
from common.errors import DataError


def test_canonical_orientation_flips_las_to_ras(tmp_path):
    data = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    affine = np.diag([-1.0, 1.0, 1.0, 1.0])  # LAS
    loaded, zooms = load_nifti(write_nifti(tmp_path / "las.nii.gz", data, affine))
    np.testing.assert_array_equal(loaded, data[::-1])
    assert zooms == (1.0, 1.0, 1.0)


def test_scale_factors_are_applied(tmp_path):
    image = nib.Nifti1Image(np.full((4, 4, 4), 10, dtype=np.int16), np.eye(4))
    image.header.set_slope_inter(0.5, 3.0)
    nib.save(image, tmp_path / "scaled.nii")
    data, _ = load_nifti(tmp_path / "scaled.nii")
    assert np.allclose(data, 8.0)


@pytest.mark.parametrize("shape", [(16, 16, 16), (12, 20, 8)])
@pytest.mark.parametrize("resize", ["fit", "stretch"])
def test_conform_gives_target_shape(shape, resize):
    data = np.random.default_rng(0).normal(size=(30, 25, 20)).astype(np.float32)
    out = conform(data, (1.0, 1.0, 2.0), PreprocessConfig(shape=shape, resize=resize))
    assert out.shape == shape and np.isfinite(out).all()


def test_fit_keeps_physical_proportions():
    # a 40 mm x 20 mm x 20 mm field into 20^3: 2 mm voxels, the short axes padded to half
    data = np.ones((40, 20, 20), dtype=np.float32)
    out = conform(np.pad(data, 1), (1.0, 1.0, 1.0), PreprocessConfig(shape=(20, 20, 20), resize="fit"))
    filled = (out > 0.5).sum(axis=(0, 2))
    assert 9 <= (filled > 0).sum() <= 12


def test_zscore_foreground_statistics(tmp_path):
    rng = np.random.default_rng(0)
    data = np.zeros((16, 16, 16), np.float32)
    data[4:12, 4:12, 4:12] = rng.normal(100, 10, (8, 8, 8))
    out = preprocess_file(write_nifti(tmp_path / "v.nii.gz", data),
                          PreprocessConfig(shape=(16, 16, 16), normalize="zscore", dtype="float32"))
    inside = out[4:12, 4:12, 4:12]
    assert abs(inside.mean()) < 0.3 and 0.7 < inside.std() < 1.3
    assert out.dtype == np.float32


def test_percentile_clipping_scales_to_unit_range(tmp_path):
    data = np.random.default_rng(0).normal(size=(10, 10, 10)).astype(np.float32)
    data[0, 0, 0] = 1e6  # an outlier the clipping removes
    out = preprocess_file(write_nifti(tmp_path / "v.nii", data),
                          PreprocessConfig(shape=(10, 10, 10), normalize="percentile", dtype="float32"))
    assert out.min() == 0 and out.max() == 1 and np.median(out) > 0.3


@pytest.mark.parametrize(
    "name,make,reason",
    [
        ("missing.nii.gz", None, "file not found"),
        ("text.nii.gz", lambda p: p.write_text("not an image"), "cannot read as NIfTI"),
        ("flat.nii.gz", lambda p: write_nifti(p, np.ones((8, 8))), "not a 3-D volume"),
        ("four.nii.gz", lambda p: write_nifti(p, np.random.rand(6, 6, 6, 3)), "4-D image"),
        ("nan.nii.gz", lambda p: write_nifti(p, np.where(np.eye(6)[:, :, None] > 0, np.nan, 1.0) * np.ones((6, 6, 6))), "NaN/Inf"),
        ("const.nii.gz", lambda p: write_nifti(p, np.full((6, 6, 6), 3.0)), "constant volume"),
    ],
)
def test_bad_files_fail_with_the_file_name(tmp_path, name, make, reason):
    path = tmp_path / name
    if make:
        make(path)
    with pytest.raises(DataError, match=reason) as info:
        preprocess_file(path, PreprocessConfig(shape=(6, 6, 6)))
    assert name in str(info.value)


def test_truncated_gzip_is_rejected(tmp_path):
    path = write_nifti(tmp_path / "ok.nii.gz", np.random.rand(20, 20, 20))
    raw = path.read_bytes()
    truncated = tmp_path / "cut.nii.gz"
    truncated.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="cut.nii.gz: cannot read as NIfTI"):
        preprocess_file(truncated, PreprocessConfig(shape=(8, 8, 8)))
    assert truncated.read_bytes()[:2] == b"\x1f\x8b"  # still a gzip stream, cut short


def test_trailing_singleton_dimension_is_accepted(tmp_path):
    path = write_nifti(tmp_path / "v.nii.gz", np.random.rand(6, 6, 6, 1))
    assert load_nifti(path)[0].shape == (6, 6, 6)


@pytest.mark.parametrize("bad", [dict(shape=(8, 8)), dict(normalize="max"), dict(resize="crop"), dict(dtype="int8"),
                                 dict(percentiles=(99, 1))])
def test_invalid_config_names_the_field(bad):
    with pytest.raises(DataError, match=next(iter(bad))):
        PreprocessConfig(**bad)


@needs_shared_data("ixi_t1_hh", "t1", "IXI012-HH-1211_T1.nii.gz")
def test_real_ixi_volume_is_reoriented_to_ras():
    from conftest import SHARED_DATA

    path = SHARED_DATA / "ixi_t1_hh" / "t1" / "IXI012-HH-1211_T1.nii.gz"
    image = nib.load(path)
    assert nib.aff2axcodes(image.affine) == ("P", "S", "R")  # stored PSR, header slope NaN
    data, zooms = load_nifti(path)
    canonical = nib.as_closest_canonical(image)
    assert nib.aff2axcodes(canonical.affine) == ("R", "A", "S")
    assert data.shape == canonical.shape == (90, 120, 120) and zooms == (2.0, 2.0, 2.0)
    assert 3000 < data.max() < 4000  # scale factor applied (stored uint8)
