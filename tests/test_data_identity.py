""""Same data" is decided by content: a re-copied dataset keeps comparing and resuming; other data never does."""

import csv
import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import fake_record, write_nifti
from test_run_identity import one_error_line, resnet_args

from common.data.cache import SOURCE_DIGEST_KEY, find_cache_with_content
from common.data.dataset import prepare_dataset
from common.data.identity import CONTENT_HASH_KEY, compute_content_hash, content_hash
from common.data.preprocess import PreprocessConfig
from common.errors import DataError
from common.runs.record import data_identity, read_record
from torch_resnet.cli import main as resnet_main

TINY = PreprocessConfig(shape=(8, 8, 8))


def toy_npz(path, flip_label=False, flip_voxel=False):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 10), ("val", 4), ("test", 6)):
        arrays[f"{split}_images"] = (rng.random((n, 8, 8, 8)) > 0.5).astype(np.uint8) * 255
        arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(n, 1).astype(np.uint8)
    if flip_label:
        arrays["test_labels"][0] = 1 - arrays["test_labels"][0]
    if flip_voxel:
        arrays["train_images"][3, 4, 4, 4] = 255 - arrays["train_images"][3, 4, 4, 4]
    np.savez(path, **arrays)
    return path


def prepare(path, cache_root):
    return prepare_dataset(path, cache_root=cache_root, progress=False,
                           preprocess=PreprocessConfig(shape=(8, 8, 8), normalize="minmax"))


def test_a_copy_gets_a_new_cache_key_and_the_same_content_hash(tmp_path, cache_root):
    original = prepare(toy_npz(tmp_path / "toy.npz"), cache_root)
    (tmp_path / "copy").mkdir()
    copy = tmp_path / "copy" / "toy.npz"
    shutil.copyfile(tmp_path / "toy.npz", copy)
    os.utime(copy, ns=(10**18, 10**18))
    copied = prepare(copy, cache_root)
    assert copied.data_hash != original.data_hash  # another file: another cache folder
    assert copied.content_hash == original.content_hash
    assert json.loads((original.folder / "meta.json").read_text())[CONTENT_HASH_KEY] == original.content_hash


@pytest.mark.parametrize("change", ["flip_label", "flip_voxel"])
def test_other_content_gets_another_content_hash(tmp_path, cache_root, change):
    original = prepare(toy_npz(tmp_path / "toy.npz"), cache_root)
    other = prepare(toy_npz(tmp_path / "other.npz", **{change: True}), cache_root)
    assert other.content_hash != original.content_hash


def test_other_preprocessing_gets_another_content_hash(make_manifest, cache_root):
    manifest = make_manifest()
    a = prepare_dataset(manifest, label_column="label", preprocess=TINY, cache_root=cache_root, progress=False)
    b = prepare_dataset(manifest, label_column="label", preprocess=replace(TINY, dtype="float32"),
                        cache_root=cache_root, progress=False)
    assert a.content_hash != b.content_hash


def test_a_cache_built_before_content_hashes_gets_the_same_hash_on_first_use(tmp_path, cache_root):
    dataset = prepare(toy_npz(tmp_path / "toy.npz"), cache_root)
    meta_path = dataset.folder / "meta.json"
    meta = json.loads(meta_path.read_text())
    expected = meta.pop(CONTENT_HASH_KEY)
    for later_setting in ("pipeline", "brain_mask"):  # caches of that time did not list these settings yet
        del meta["preprocess"][later_setting]
    meta_path.write_text(json.dumps(meta))
    assert compute_content_hash(dataset.folder, meta) == expected
    assert content_hash(dataset.folder) == expected
    assert json.loads(meta_path.read_text())[CONTENT_HASH_KEY] == expected  # stored for the next reader


def test_an_old_record_is_identified_by_its_cache_if_present(tmp_path, cache_root):
    dataset = prepare(toy_npz(tmp_path / "toy.npz"), cache_root)
    old = fake_record(data_hash=dataset.data_hash).data  # recorded before content hashes: content_hash None
    assert old.content_hash is None
    assert data_identity(old, cache_root) == dataset.content_hash
    assert data_identity(old, tmp_path / "elsewhere") == f"cache key {dataset.data_hash}"  # matches only itself
    assert data_identity(replace(old, content_hash="c" * 20), tmp_path / "elsewhere") == "c" * 20


def test_report_compares_runs_on_a_recopied_dataset_and_refuses_other_content(tmp_path, cache_root, monkeypatch):
    from test_faults import _run

    from common.evaluation.report import build_report
    from common.runs.record import write_record

    a = _run(tmp_path / "a", model="tf_transformer")
    b = _run(tmp_path / "b", data_hash="e" * 20)  # another cache key
    for run, content in ((a, "c" * 20), (b, "c" * 20)):
        record = read_record(run)
        write_record(run, replace(record, data=replace(record.data, content_hash=content)))
    assert f"content hash) `{'c' * 20}`" in build_report([a, b], tmp_path / "out", n_resamples=10).read_text()
    record = read_record(b)
    write_record(b, replace(record, data=replace(record.data, content_hash="f" * 20)))
    with pytest.raises(DataError, match="different data: data"):
        build_report([a, b], tmp_path / "out2", n_resamples=10)


def test_resume_after_the_dataset_was_copied_anew(make_manifest, cache_root, tmp_path, capsys):
    """Same bytes, new modification times: a new cache key, the same data — the run resumes; a changed
    volume is refused by name."""
    manifest = make_manifest(n_subjects=20)
    run_dir = tmp_path / "run"
    assert resnet_main(resnet_args(manifest, cache_root, run_dir)) == 0
    first = read_record(run_dir).data
    for nifti in manifest.parent.glob("*.nii.gz"):
        os.utime(nifti, ns=(10**18, 10**18))
    assert resnet_main(resnet_args(manifest, cache_root, run_dir, "--epochs", "2")) == 0
    resumed = read_record(run_dir).data
    assert resumed.data_hash != first.data_hash and resumed.content_hash == first.content_hash
    assert read_record(run_dir).outcome.epochs_run == 2
    write_nifti(manifest.parent / "s00_0.nii.gz", np.random.default_rng(1).normal(size=(12, 12, 12)))
    capsys.readouterr()
    assert resnet_main(resnet_args(manifest, cache_root, run_dir, "--epochs", "3")) == 2
    assert "cannot resume" in (line := one_error_line(capsys)) and "data: " in line


def test_explain_finds_the_volumes_of_a_recopied_dataset_by_content(tmp_path, cache_root):
    """A run's cache is gone (the data was copied anew and the old cache cleaned); a cache with the same
    content is found and its exact arrays are explained."""
    from common.explain.inputs import split_inputs
    from common.runs.rundir import write_predictions

    original = prepare(toy_npz(tmp_path / "toy.npz"), cache_root)
    (tmp_path / "copy").mkdir()
    shutil.copyfile(tmp_path / "toy.npz", tmp_path / "copy" / "toy.npz")
    os.utime(tmp_path / "copy" / "toy.npz", ns=(10**18, 10**18))
    copied = prepare(tmp_path / "copy" / "toy.npz", cache_root)
    wanted = original.content_hash
    shutil.rmtree(original.folder)
    assert find_cache_with_content(cache_root, wanted) == copied.folder
    assert find_cache_with_content(cache_root, "0" * 20) is None
    test = copied.split("test")
    run_dir = tmp_path / "run"
    write_predictions(run_dir, classes=["0", "1"], split=["test"] * len(test), sample_ids=test.sample_ids,
                      subject_ids=test.subject_ids, y_true=test.y, probabilities=np.full((len(test), 2), 0.5))
    record = fake_record(classes=("0", "1"), data_hash=original.data_hash)
    record = replace(record, data=replace(record.data, content_hash=wanted))
    inputs = split_inputs(run_dir, record, "test", cache_root)
    assert [i.sample_id for i in inputs] == test.sample_ids
    np.testing.assert_array_equal(np.stack([i.volume for i in inputs]), np.asarray(test.x, dtype=np.float32))
    with pytest.raises(DataError, match="the run's preprocessed cache is not there"):
        split_inputs(run_dir, replace(record, data=replace(record.data, content_hash="0" * 20)), "test", cache_root)


def _copy_dataset(manifest, to):
    """The manifest and its NIfTI files in another folder, with other modification times (a fresh copy)."""
    to.mkdir()
    for path in [manifest, *manifest.parent.glob("*.nii.gz")]:
        shutil.copyfile(path, to / path.name)
        os.utime(to / path.name, ns=(10**18, 10**18))
    return to / manifest.name


def test_a_copied_dataset_borrows_the_cached_volumes_instead_of_preprocessing_again(make_manifest, cache_root,
                                                                                     tmp_path, monkeypatch):
    manifest = make_manifest()
    first = prepare_dataset(manifest, label_column="label", preprocess=TINY, cache_root=cache_root, progress=False)
    (first.folder / "qc").mkdir()  # as a t1-linear cache has: its QC page goes with the volumes
    (first.folder / "qc" / "index.html").write_text("qc")
    copied_manifest = _copy_dataset(manifest, tmp_path / "copy")

    def no_preprocessing(*args):
        raise AssertionError("a file of the copy was preprocessed again")

    monkeypatch.setattr("common.data.cache.preprocess_file_qc", no_preprocessing)
    copied = prepare_dataset(copied_manifest, label_column="label", preprocess=TINY, cache_root=cache_root,
                             progress=False)
    assert copied.folder != first.folder and copied.content_hash == first.content_hash
    assert os.path.samefile(copied.folder / "volumes.npy", first.folder / "volumes.npy")  # hard-linked, not copied
    assert (copied.folder / "qc" / "index.html").read_text() == "qc"
    with (copied.folder / "index.csv").open() as f:  # the index names the copy's files, with their stats
        paths = [row["path"] for row in csv.DictReader(f)]
    assert paths and all(Path(p).parent == copied_manifest.parent for p in paths)
    np.testing.assert_array_equal(copied.split("train").x, first.split("train").x)
    for meta in (first.folder, copied.folder):
        assert json.loads((meta / "meta.json").read_text())[SOURCE_DIGEST_KEY] == source_digest_of(copied)
    # one changed file of the copy: another digest, so it is preprocessed (and the patched step says so)
    write_nifti(copied_manifest.parent / "s03_0.nii.gz", np.random.default_rng(5).normal(size=(12, 12, 12)))
    with pytest.raises(AssertionError, match="preprocessed again"):
        prepare_dataset(copied_manifest, label_column="label", preprocess=TINY, cache_root=cache_root, progress=False)


def source_digest_of(dataset):
    return json.loads((dataset.folder / "meta.json").read_text())[SOURCE_DIGEST_KEY]


def test_a_copied_medmnist_file_borrows_its_cache_and_other_settings_do_not(tmp_path, cache_root, capsys):
    original = prepare(toy_npz(tmp_path / "toy.npz"), cache_root)
    (tmp_path / "copy").mkdir()
    shutil.copyfile(tmp_path / "toy.npz", tmp_path / "copy" / "toy.npz")
    copied = prepare_dataset(tmp_path / "copy" / "toy.npz", cache_root=cache_root, progress=True,
                             preprocess=PreprocessConfig(shape=(8, 8, 8), normalize="minmax"))
    assert f"the same files as {original.folder}" in capsys.readouterr().err
    assert copied.folder != original.folder and copied.content_hash == original.content_hash
    other = prepare_dataset(tmp_path / "copy" / "toy.npz", cache_root=cache_root, progress=False,
                            preprocess=PreprocessConfig(shape=(6, 6, 6), normalize="minmax"))
    assert not os.path.samefile(other.folder / "volumes.npy", original.folder / "volumes.npy")
    assert source_digest_of(other) != source_digest_of(original)
